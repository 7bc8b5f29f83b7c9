"""What every CRM's adapter tests share (issue 13.6): the settings that point an adapter at
a running fake, and the waits for a fake that answers late. The fixtures built on them
(`server`, `fake`, `adapter`) are in tests/integration/conftest.py; the behaviour every
CRM must show through the CrmAdapter protocol is in test_crm_contract.py."""

from __future__ import annotations

import importlib
from typing import Any

from app.adapters.crm.registry import crm_spec
from app.settings import Settings
from tests.helpers import eventually

# The adapters' HTTP timeout in these tests: short, so a slow answer is quick to provoke.
TIMEOUT = 0.5


def backend_class(crm: str) -> Any:
    """The test double the CRM registry names for `crm` (a crm_backends.Backend class)."""
    module, _, name = crm_spec(crm).test_backend.partition(":")
    return getattr(importlib.import_module(module), name)


def settings_for(fake: Any, **overrides: Any) -> Settings:
    """Settings pointing the CRM `fake.name` at `fake`, with the tests' short timeout."""
    values = {**backend_class(fake.name).settings_of(fake), "crm_timeout_seconds": TIMEOUT, **overrides}
    return Settings(_env_file=None, **values)


async def answered(fake: Any, method: str, path: str, count: int = 1) -> None:
    """Wait until the fake has answered `count` such requests (late answers included), so a
    slow request cannot spill into the next test."""

    def done() -> bool:
        return sum(1 for r in fake.requests if r.method == method and r.path == path) >= count

    await eventually(done, timeout=5.0, interval=0.02)
