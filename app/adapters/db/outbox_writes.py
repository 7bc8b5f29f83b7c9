"""The outbox worker's bookkeeping for a batch of finished rows in one statement: the rows
marked done (fenced by their claims), the end users' CRM ids, the records made, the
sessions' records, the decisions, the CRM calls and the outcome events to publish, as
data-modifying CTEs (the pattern of batch_writes: each part is its repository's own
statement and parameters, renamed apart; every part runs once and to completion, and an
error in any part fails the whole statement).

The sessions' rows are locked first, in session id order, by a statement of their own:
in one statement the parts' lock order is PostgreSQL's choice, and a consumer batch
locks the same rows in session id order."""

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
        "s": sessions_repo.SET_RECORDS.text,
        "d": decisions_repo.INSERT_DECISIONS.text,
        "a": crm_attempts_repo.INSERT_ATTEMPTS.text,
        "e": outbox_repo.ENQUEUE_CLAIMED.text,
    },
    # The done rows, the new outcome-event rows, and a row of NULLs when a row of the same
    # end user and queue as a finished one is waiting: the worker claims again for it.
    """SELECT id, NULL AS idempotency_key FROM part_h UNION ALL SELECT id, idempotency_key FROM part_e
    UNION ALL SELECT NULL, NULL WHERE EXISTS (
        SELECT 1 FROM outbox w WHERE w.serial_key = ANY(CAST(:waiting_keys AS text[])) AND w.status = 'pending')""",
)
_LOCK = raw.positional(sessions_repo.LOCK.text)


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
    held: set[int]  # the finished rows still held by their claims, now done
    event_ids: dict[str, int]  # the new outcome-event rows by idempotency key
    # A pending row has the serial key of a finished one: it could not be claimed while
    # that row was in progress (as of this statement's snapshot).
    successor_waiting: bool = False


async def write_bookkeeping(
    pg: asyncpg.Connection, crm: str, account: str, lease_seconds: float, work: Bookkeeping
) -> Written:
    """All of it in one statement (two when sessions are noted: their locks first), on
    asyncpg's connection (raw.py). The caller rolls the transaction back when a row is no
    longer held."""
    if work.session_records:
        await raw.execute(pg, _LOCK, {"ids": sorted(r.session_id for r in work.session_records)})
    parameters = {
        **raw.prefixed("h", outbox_repo.mark_done_claimed_parameters(work.claims)),
        **raw.prefixed("u", end_users_repo.remember_parameters(account, work.users)),
        **raw.prefixed("r", records_repo.remember_records_parameters(crm, work.new_records)),
        **raw.prefixed("s", sessions_repo.set_records_parameters(crm, work.session_records)),
        **raw.prefixed("d", decisions_repo.insert_decisions_parameters(work.decisions)),
        **raw.prefixed("a", crm_attempts_repo.record_attempts_parameters(crm, work.attempts)),
        **raw.prefixed("e", outbox_repo.enqueue_publishing_parameters(work.events, lease_seconds)),
        "waiting_keys": sorted(set(work.serial_keys)),
    }
    held: set[int] = set()
    event_ids: dict[str, int] = {}
    successor_waiting = False
    for row_id, key in await raw.fetch(pg, _WRITE, parameters):
        if row_id is None:
            successor_waiting = True
        elif key is None:
            held.add(row_id)
        else:
            event_ids[key] = row_id
    return Written(held, event_ids, successor_waiting)
