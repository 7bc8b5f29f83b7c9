"""The outbox worker's bookkeeping for a batch of finished rows in one statement, which
commits alone: the rows marked done (fenced by their claims), the end users' CRM ids, the
records made, the sessions' records, the decisions, the CRM calls and the outcome events
to publish, as data-modifying CTEs (the pattern of batch_writes: each part is its
repository's own statement and parameters, renamed apart; every part runs once and to
completion, and an error in any part fails the whole statement).

The sessions' rows are locked in session id order by the sessions' part itself, the
order a consumer batch saves them in, so the two never deadlock. A row no longer held by
its claim (another worker claimed it after the lease ran out) fails the whole statement
(migration 0014's `outbox_claims_lost`): nothing is written, ClaimsLost is raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from app.adapters.db import (
    crm_attempts_repo,
    decisions_repo,
    end_users_repo,
    outbox_repo,
    raw,
    records_repo,
    sessions_repo,
)
from app.adapters.db.crm_attempts_repo import Attempt
from app.adapters.db.decisions_repo import DecisionRow
from app.adapters.db.outbox_repo import ClaimedEvent
from app.adapters.db.records_repo import NewRecord
from app.adapters.db.sessions_repo import SessionRecord

_WRITE = raw.with_parts(
    {
        "h": outbox_repo.MARK_DONE_CLAIMED.text,
        "u": end_users_repo.REMEMBER.text,
        "r": records_repo.REMEMBER_RECORDS.text,
        "s": sessions_repo.SET_RECORDS_LOCKING.text,
        "d": decisions_repo.INSERT_DECISIONS.text,
        "a": crm_attempts_repo.INSERT_ATTEMPTS.text,
        "e": outbox_repo.ENQUEUE_CLAIMED.text,
    },
    # The done rows, the new outcome-event rows, and a row of NULLs when a row of the same
    # end user and queue as a finished one is waiting: the worker claims again for it.
    # The last SELECT returns nothing, or fails the statement when a claim is lost.
    """SELECT id, NULL AS idempotency_key FROM part_h UNION ALL SELECT id, idempotency_key FROM part_e
    UNION ALL SELECT NULL, NULL WHERE EXISTS (
        SELECT 1 FROM outbox w WHERE w.serial_key = ANY(CAST(:waiting_keys AS text[])) AND w.status = 'pending')
    UNION ALL SELECT NULL, NULL FROM (SELECT count(*)::int AS held FROM part_h) AS h
    WHERE CASE WHEN h.held = CAST(:claims AS int) THEN false ELSE outbox_claims_lost(h.held, :claims) END""",
)


class ClaimsLost(Exception):
    """A finished row is no longer held by its claim: nothing of the batch was written."""


@dataclass(frozen=True, slots=True)
class Bookkeeping:
    """What a batch of finished rows leaves behind."""

    claims: Sequence[outbox_repo.Claim]  # each finished row's claim
    users: dict[str, str]  # end-user id -> the CRM's id for it
    new_records: Sequence[NewRecord]
    session_records: Sequence[SessionRecord]
    decisions: Sequence[DecisionRow]
    attempts: Sequence[Attempt]
    events: Sequence[ClaimedEvent]
    serial_keys: Sequence[str] = ()  # the finished rows' serial keys: is a row waiting behind one?


@dataclass(frozen=True, slots=True)
class Written:
    event_ids: dict[str, int]  # the new outcome-event rows by idempotency key
    # A pending row has the serial key of a finished one: it could not be claimed while
    # that row was in progress (as of this statement's snapshot).
    successor_waiting: bool = False


async def write_bookkeeping(
    pg: asyncpg.Connection, crm: str, account: str, lease_seconds: float, work: Bookkeeping
) -> Written:
    """All of it in one statement on asyncpg's connection (raw.py), outside a
    transaction: it commits alone. Raises ClaimsLost, having written nothing, when a
    finished row is no longer held by its claim."""
    parameters = {
        **raw.prefixed("h", outbox_repo.mark_done_claimed_parameters(work.claims)),
        **raw.prefixed("u", end_users_repo.remember_parameters(account, work.users)),
        **raw.prefixed("r", records_repo.remember_records_parameters(crm, work.new_records)),
        **raw.prefixed("s", sessions_repo.set_records_locking_parameters(crm, work.session_records)),
        **raw.prefixed("d", decisions_repo.insert_decisions_parameters(work.decisions)),
        **raw.prefixed("a", crm_attempts_repo.record_attempts_parameters(crm, work.attempts)),
        **raw.prefixed("e", outbox_repo.enqueue_publishing_parameters(work.events, lease_seconds)),
        "waiting_keys": sorted(set(work.serial_keys)),
        "claims": len(work.claims),
    }
    try:
        rows = await raw.fetch(pg, _WRITE, parameters)
    except asyncpg.ObjectNotInPrerequisiteStateError as exc:
        raise ClaimsLost(str(exc)) from exc
    event_ids: dict[str, int] = {}
    successor_waiting = False
    for row_id, key in rows:
        if row_id is None:
            successor_waiting = True
        elif key is not None:
            event_ids[key] = row_id
    return Written(event_ids, successor_waiting)
