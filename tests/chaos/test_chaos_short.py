"""The short chaos run in `make test` (`make chaos` is the full one): two replicas on a
private PostgreSQL cluster restarted once with `pg_ctl stop -m immediate`, a few SIGKILLs,
CRM storms on the Zendesk fake, re-sent and invalid messages; every column must be zero.

Deselect with `-m "not chaos"`; replay a failure with CHAOS_SEED=<the printed seed>."""

from __future__ import annotations

import os
import secrets

import pytest

from tools.chaos.run import PROFILES, run_chaos

pytestmark = pytest.mark.chaos


async def test_short_chaos_run_on_the_zendesk_fake(tmp_path):
    seed = int(os.environ.get("CHAOS_SEED") or secrets.randbelow(10**6))
    print(f"chaos seed: {seed}")
    outcome = await run_chaos("zendesk", seed, PROFILES["short"], tmp_path)
    print(outcome.text())
    assert outcome.faults.kills == PROFILES["short"].kills and outcome.faults.pg_restarts == 1
    assert outcome.passed, outcome.text()
