"""The outbox: side effects written in the same transaction as the state they follow
from, claimed by workers with FOR UPDATE SKIP LOCKED, and every CRM attempt made."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.db import raw
from app.adapters.db.records_repo import NoteContext, RecordContext
from app.adapters.db.schema import outbox
from app.domain.kinds import OutboxKind, OutboxStatus

NOTIFY_CHANNEL = "crm_records_outbox"


@dataclass(frozen=True, slots=True)
class NewOutboxRow:
    idempotency_key: str
    kind: OutboxKind
    session_id: str
    serial_key: str | None
    payload: dict[str, Any]
    # The W3C traceparent of the work that made this row (None when tracing is off).
    trace_context: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """One claimed row's fence: bookkeeping for the row is accepted only while it still
    carries this claim id (None for a row claimed before claims were fenced)."""

    outbox_id: int
    claim_id: str | None


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    id: int
    idempotency_key: str
    kind: OutboxKind
    session_id: str
    serial_key: str | None
    payload: dict[str, Any]
    attempts: int  # including this one
    # This claim's fence: bookkeeping is accepted only while the row still carries it.
    claim_id: str | None = None
    # An earlier attempt may have done the work without hearing back (it timed out, lost
    # its connection, got a 5xx to a write, or its claimer died mid-flight).
    outcome_unknown: bool = False
    trace_context: str | None = None
    created_at: datetime | None = None
    # What the worker reads before the CRM call, read with the claim (outbox_claims);
    # None when claimed without it (the worker then reads it itself).
    context: RecordContext | NoteContext | None = None


_ENQUEUE = text(
    """
    INSERT INTO outbox (idempotency_key, kind, session_id, serial_key, payload, trace_context)
    SELECT r.key, r.kind, r.session_id, r.serial_key, CAST(r.payload AS jsonb), r.trace_context
    FROM unnest(CAST(:keys AS text[]), CAST(:kinds AS text[]), CAST(:session_ids AS text[]),
                CAST(:serial_keys AS text[]), CAST(:payloads AS text[]), CAST(:trace_contexts AS text[]))
         WITH ORDINALITY AS r(key, kind, session_id, serial_key, payload, trace_context, n)
    ORDER BY r.n
    ON CONFLICT (idempotency_key) DO NOTHING
    """
)

# A row is claimable when it is due (or its previous claimer's lease ran out), no older
# unfinished row shares its serial key (per CRM, end user and leaf queue: FIFO), and no
# other row of that key is being carried out: ids are taken at insert, so two replicas'
# consumers can commit an older row after a newer one was claimed, and that older row
# must then wait for it (it may append to the record the newer one makes).
# Lower priority first (records before end-of-session notes), then oldest due.
# The two waits are two checks, each answered by its own index in a bounded number of
# rows: the older row by ix_outbox_serial (its first entry for the key), the
# running row by ix_outbox_serial_running (in-progress rows only). "o is the oldest open
# row of its key" is a min(), not a NOT EXISTS: the planner answers min() from the index's
# first entry, while a NOT EXISTS may become a table scan that stops at the first match,
# which in a long run of one key is thousands of rows away. One check with an OR
# read every open row of the key for each row it looked at: a backlog of long runs per
# key made the claim cost (rows walked) x (run length), over 100 s at 140,000 rows.
#
# The statement lives in the database as the function `outbox_claim` (migration 0011),
# with the claim lock before it: one round trip, the lock held only while it runs.
_CLAIM = raw.positional(
    """
    SELECT id, idempotency_key, kind, session_id, serial_key, payload, attempts, claim_id::text AS claim_id,
           outcome_unknown, trace_context, created_at
    FROM outbox_claim(:limit, :lease)
    """
)

def enqueue_parameters(rows: Sequence[NewOutboxRow]) -> dict[str, list]:
    return {
        "keys": [r.idempotency_key for r in rows],
        "kinds": [r.kind for r in rows],
        "session_ids": [r.session_id for r in rows],
        "serial_keys": [r.serial_key for r in rows],
        "payloads": [orjson.dumps(r.payload).decode() for r in rows],
        "trace_contexts": [r.trace_context for r in rows],
    }


ENQUEUE = _ENQUEUE  # for batch_writes


async def enqueue(conn: AsyncConnection, rows: Sequence[NewOutboxRow]) -> None:
    if not rows:
        return
    await conn.execute(_ENQUEUE, enqueue_parameters(rows))


async def notify_workers(conn: AsyncConnection) -> None:
    """Wake the workers when this transaction commits (NOTIFY is transactional)."""
    await conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))


# Claims run one at a time across replicas, each looking only after the previous one has
# committed. Two claims whose snapshots overlap could otherwise each take one row of a
# serial key: the second cannot see the first's row in progress, and a row committed
# out of id order in between looks like the key's oldest. The lock (this key) is taken
# inside `outbox_claim`, whose claim statement then takes a fresh snapshot; it is held
# for the claim's own transaction only (milliseconds), never across a CRM call.
#
# The function also has the claim walk the due rows in claim order (ix_outbox_due) and
# stop at its limit (its SET clauses). Without it, a plan made while the outbox was
# small, cached by the driver's prepared statement or planned on statistics from before
# the backlog grew, read and sorted every open row: a claim's cost growing with the
# backlog (test_cached_plans).
CLAIM_LOCK_KEY = 0x6F7574626F78  # "outbox"


async def claim(pg: asyncpg.Connection, limit: int, lease_seconds: float) -> list[ClaimedRow]:
    """Claim due rows, on asyncpg's connection (raw.py: the worker claims many times a
    second): one statement, in the caller's transaction when `pg` is in one (then the
    claim lock is held to its end), else a transaction of its own."""
    return _claimed(await raw.fetch(pg, _CLAIM, {"limit": limit, "lease": lease_seconds}))


def _claimed(rows: Sequence[Any]) -> list[ClaimedRow]:
    claimed = [ClaimedRow(**{**row, "kind": OutboxKind(row["kind"])}) for row in rows]
    claimed.sort(key=lambda r: r.id)
    return claimed


_MARK_DONE_SET = (
    "UPDATE outbox SET status = 'done', done_at = now(), updated_at = now(), lease_until = NULL, last_error = NULL"
)
_MARK_DONE = text(f"{_MARK_DONE_SET} WHERE id = ANY(CAST(:ids AS bigint[]))")
# The same, its commit not waiting for its WAL flush: `synchronous_commit` off for the
# statement's own (implicit) transaction, which is over when the statement is.
_MARK_DONE_NO_FLUSH_WAIT = text(
    f"{_MARK_DONE_SET} FROM (SELECT set_config('synchronous_commit', 'off', true)) AS no_flush_wait "
    "WHERE id = ANY(CAST(:ids AS bigint[]))"
)


# A row still running, written so that no partial index's predicate matches it: the
# statements that find claimed rows by id must go by the primary key. Rows leave the
# partial indexes on status as they finish, and their entries stay until a vacuum; a
# plan that took one of those indexes for `status = 'in_progress'` read every entry left
# (33,000 in `make bench --sessions 10000`, 6.5 ms a batch; test_cached_plans).
_RUNNING = "CASE outbox.status WHEN 'in_progress' THEN true ELSE false END"

_RELEASE = text(
    f"""
    UPDATE outbox SET status = 'pending', attempts = GREATEST(attempts - 1, 0), lease_until = NULL,
                      due_at = now() + make_interval(secs => :not_before_seconds), updated_at = now(),
                      -- cancelled mid-flight: the CRM may have done the work
                      outcome_unknown = true
    WHERE id = ANY(CAST(:ids AS bigint[])) AND {_RUNNING}
    """
)


async def release(conn: AsyncConnection, outbox_ids: Sequence[int], *, not_before_seconds: float) -> int:
    """Hand claimed rows back unfinished (a replica shutting down), claimable again after
    `not_before_seconds`: a write cancelled here may still land at the CRM until then
    (the CRM timeout), and the next claimer looks for it before writing again."""
    if not outbox_ids:
        return 0
    parameters = {"ids": sorted(outbox_ids), "not_before_seconds": not_before_seconds}
    return (await conn.execute(_RELEASE, parameters)).rowcount


async def mark_done(conn: AsyncConnection, outbox_ids: Sequence[int], *, wait_for_flush: bool = True) -> None:
    """`wait_for_flush=False`: the commit returns before its WAL is on disk, for rows whose
    mark-done a crash may lose (published outcome rows: CompletionWriter.published)."""
    if outbox_ids:
        await conn.execute(_MARK_DONE if wait_for_flush else _MARK_DONE_NO_FLUSH_WAIT, {"ids": sorted(outbox_ids)})


_MARK_DONE_CLAIMED = text(
    f"""
    UPDATE outbox SET status = 'done', done_at = now(), updated_at = now(), lease_until = NULL, last_error = NULL
    FROM unnest(CAST(:ids AS bigint[]), CAST(:claims AS uuid[])) AS c(id, claim_id)
    WHERE outbox.id = c.id AND outbox.claim_id = c.claim_id AND {_RUNNING}
    RETURNING outbox.id
    """
)


async def mark_done_claimed(conn: AsyncConnection, claims: Sequence[Claim]) -> set[int]:
    """Mark done the rows still held by these claims; returns the ids it marked. A row
    another worker claimed since (this claim's lease ran out) is left alone."""
    if not claims:
        return set()
    result = await conn.execute(_MARK_DONE_CLAIMED, mark_done_claimed_parameters(claims))
    return {row[0] for row in result}


def _held(outbox_id: int, claim_id: str | None):
    condition = outbox.c.id == outbox_id
    return condition & (outbox.c.claim_id == claim_id) if claim_id is not None else condition


async def reschedule(
    conn: AsyncConnection,
    outbox_id: int,
    *,
    delay_seconds: float,
    error: str,
    count_attempt: bool,
    claim_id: str | None = None,
    outcome_unknown: bool = False,
) -> bool:
    """Put the row back for later; False when this claim no longer holds it."""
    values: dict[str, Any] = {
        "status": OutboxStatus.PENDING,
        "due_at": func.now() + func.make_interval(0, 0, 0, 0, 0, 0, delay_seconds),
        "lease_until": None,
        "last_error": error,
        "updated_at": func.now(),
    }
    if outcome_unknown:
        values["outcome_unknown"] = True
    if not count_attempt:
        # Being told to slow down is not a failure: it does not use up an attempt.
        values["attempts"] = outbox.c.attempts - 1
    result = await conn.execute(update(outbox).where(_held(outbox_id, claim_id)).values(**values))
    return bool(result.rowcount)


async def park(conn: AsyncConnection, outbox_id: int, error: str, *, claim_id: str | None = None) -> bool:
    result = await conn.execute(
        update(outbox)
        .where(_held(outbox_id, claim_id))
        .values(status=OutboxStatus.PARKED, last_error=error, lease_until=None, updated_at=func.now())
    )
    return bool(result.rowcount)


_EXTEND_LEASES = text(
    f"""
    UPDATE outbox SET lease_until = now() + make_interval(secs => :lease)
    FROM unnest(CAST(:ids AS bigint[]), CAST(:claims AS uuid[])) AS c(id, claim_id)
    WHERE outbox.id = c.id AND outbox.claim_id = c.claim_id AND {_RUNNING}
    RETURNING outbox.id
    """
)


async def extend_leases(
    conn: AsyncConnection, claims: Sequence[Claim], lease_seconds: float
) -> set[int]:
    """Keep in-flight rows' leases from running out (the worker's heartbeat); returns the
    ids still held."""
    if not claims:
        return set()
    result = await conn.execute(_EXTEND_LEASES, {**_claim_parameters(claims), "lease": lease_seconds})
    return {row[0] for row in result}


_ENQUEUE_CLAIMED = text(
    """
    INSERT INTO outbox (idempotency_key, kind, session_id, payload, status, attempts, lease_until, claim_id)
    SELECT r.key, 'publish', r.session_id, CAST(r.payload AS jsonb), 'in_progress', 1,
           now() + make_interval(secs => :lease), r.claim_id
    FROM unnest(CAST(:keys AS text[]), CAST(:session_ids AS text[]), CAST(:payloads AS text[]),
                CAST(:claim_ids AS uuid[]))
         WITH ORDINALITY AS r(key, session_id, payload, claim_id, n)
    ORDER BY r.n
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, idempotency_key
    """
)


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """An outcome event to publish, already claimed by the claim of the row it reports:
    written with the work it reports (outbox_writes), published by this worker right after
    the commit; if it dies first, another worker publishes it when the lease runs out. A
    key already there makes no new row."""

    row: NewOutboxRow
    claim_id: str


def enqueue_publishing_parameters(events: Sequence[ClaimedEvent], lease_seconds: float) -> dict[str, Any]:
    return {
        "keys": [e.row.idempotency_key for e in events],
        "session_ids": [e.row.session_id for e in events],
        "payloads": [orjson.dumps(e.row.payload).decode() for e in events],
        "claim_ids": [e.claim_id for e in events],
        "lease": lease_seconds,
    }


def mark_done_claimed_parameters(claims: Sequence[Claim]) -> dict[str, Any]:
    return _claim_parameters(claims)


def _claim_parameters(claims: Sequence[Claim]) -> dict[str, Any]:
    ordered = sorted(claims, key=lambda c: c.outbox_id)
    return {"ids": [c.outbox_id for c in ordered], "claims": [c.claim_id for c in ordered]}


# For outbox_writes: the worker's bookkeeping statements.
MARK_DONE_CLAIMED, ENQUEUE_CLAIMED = _MARK_DONE_CLAIMED, _ENQUEUE_CLAIMED


# Two counts, each answered by its partial index (ix_outbox_due, ix_outbox_parked): done
# rows are kept, and one count over `status IN (...)` read every one of them.
_BACKLOG_COUNTS = text(
    """
    SELECT status, count(*) FROM outbox WHERE status IN ('pending', 'in_progress') GROUP BY status
    UNION ALL
    SELECT 'parked', count(*) FROM outbox WHERE status = 'parked'
    """
)


async def backlog_counts(conn: AsyncConnection) -> dict[str, int]:
    waiting = (OutboxStatus.PENDING, OutboxStatus.IN_PROGRESS, OutboxStatus.PARKED)
    counts = {str(status): 0 for status in waiting}
    counts.update({status: count for status, count in await conn.execute(_BACKLOG_COUNTS)})
    return counts


async def oldest_due_age_seconds(conn: AsyncConnection) -> float:
    """How long the oldest due pending row has waited (0 when none is due): the
    outbox's own lag, whatever the reason (CRM slow, down, rate-limited, workers gone)."""
    result = await conn.execute(
        text(
            "SELECT coalesce(extract(epoch FROM now() - min(due_at)), 0) FROM outbox "
            "WHERE status IN ('pending', 'in_progress') AND due_at <= now()"
        )
    )
    return max(0.0, float(result.scalar_one()))


async def requeue_parked(conn: AsyncConnection, session_id: str | None = None) -> int:
    """Give parked rows a fresh start (after an operator fixed the cause)."""
    statement = (
        update(outbox)
        .where(outbox.c.status == OutboxStatus.PARKED)
        .values(status=OutboxStatus.PENDING, attempts=0, due_at=func.now(), updated_at=func.now())
    )
    if session_id is not None:
        statement = statement.where(outbox.c.session_id == session_id)
    result = await conn.execute(statement)
    return result.rowcount or 0
