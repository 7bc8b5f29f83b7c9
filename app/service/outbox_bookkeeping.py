"""The outbox worker's bookkeeping: what a finished row leaves behind, written in one
transaction shared by the rows that finish at about the same time.

The transaction is fenced by the row's claim: a worker whose lease ran out (another
worker claimed the row since) has its bookkeeping refused (LeaseLost) and publishes
nothing. The outcome events are written in the same transaction as outbox rows already
claimed by this worker, which publishes them right after the commit; a worker that dies
in between leaves them to whoever claims them after the lease."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.crm.base import CallLog, RecordRef
from app.adapters.db import outbox_repo, outbox_writes, raw
from app.adapters.db.crm_attempts_repo import Attempt
from app.adapters.db.decisions_repo import DecisionRow
from app.adapters.db.outbox_repo import Claim, ClaimedEvent, ClaimedRow, NewOutboxRow
from app.adapters.db.outbox_writes import Bookkeeping
from app.adapters.db.records_repo import NewRecord
from app.adapters.db.sessions_repo import SessionRecord
from app.domain.kinds import OutboxKind, RecordAction
from app.domain.outcome import OutcomeEvent
from app.domain.session import SessionState

Item = TypeVar("Item")
Result = TypeVar("Result")


class LeaseLost(Exception):
    """Another worker claimed the row after this claim's lease ran out: this claim's
    outcome is not recorded and its events are not published (the other claimer's are)."""


@dataclass(frozen=True, slots=True)
class MadeRecord:
    """The record a session's record row ended with, and how."""

    record_id: str
    url: str
    action: RecordAction


@dataclass(slots=True)
class Completion:
    """What a successful run leaves behind, written in one transaction."""

    decisions: list[DecisionRow] = field(default_factory=list)
    output: list[OutcomeEvent] = field(default_factory=list)
    session_record: MadeRecord | None = None
    new_record: RecordRef | None = None
    contact: str | None = None  # the CRM's id for the session's end user, to remember
    state: SessionState | None = None  # as read before the CRM calls, for the bookkeeping


@dataclass(frozen=True, slots=True)
class Finished:
    row: ClaimedRow
    completion: Completion
    calls: CallLog


class Batcher(Generic[Item, Result]):
    """Runs `write(items)` for items submitted at about the same time, together: an item
    that arrives while a write is under way joins the next one. If the write fails for a
    batch, each item is written alone, so one bad item does not hold back the others."""

    def __init__(self, write: Callable[[list[Item]], Awaitable[list[Result]]]):
        self._write_many = write
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            outcomes = await self._write_batch([item for item, _ in batch])
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its waiter was cancelled (shutdown)
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _write_batch(self, batch: list[Item]) -> list[Any]:
        try:
            return list(await self._write_many(batch))
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
        outcomes: list[Any] = []
        for item in batch:
            try:
                outcomes.extend(await self._write_many([item]))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes


class CompletionWriter:
    """Writes finished rows' bookkeeping; `write` returns the ids of the outcome-event
    rows to mark done once the events are published."""

    def __init__(self, engine: AsyncEngine, crm: str, *, account: str | None = None, lease_seconds: float = 60.0):
        self.engine = engine
        self.crm = crm
        self.account = account or crm
        self.lease_seconds = lease_seconds
        # One statement needs no BEGIN and COMMIT around it (two round trips).
        self._one_statement = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._batcher: Batcher[Finished, list[int]] = Batcher(self._write)
        self._published: Batcher[list[int], None] = Batcher(self._mark_published)
        self._claims_started: Callable[[], int] = lambda: 0
        self._successor_due: Callable[[], None] = lambda: None

    def watch_successors(self, *, claims_started: Callable[[], int], wake: Callable[[], None]) -> None:
        """Call `wake` when a row may wait behind a row just finished: a row of the same
        serial key is pending as of the bookkeeping's snapshot, or the worker started a
        claim (`claims_started` counts them) between that snapshot and the commit, which
        may have skipped one committed meanwhile. Any other row committed meanwhile wakes
        the worker itself (its consumer, or PostgreSQL's notification), and the claim that
        follows sees this row done."""
        self._claims_started, self._successor_due = claims_started, wake

    async def write(self, finished: Finished) -> list[int]:
        return await self._batcher.submit(finished)

    async def published(self, event_row_ids: list[int]) -> None:
        if event_row_ids:
            await self._published.submit(event_row_ids)

    async def _mark_published(self, batches: list[list[int]]) -> list[None]:
        # Its commit does not wait for the WAL flush: a row whose mark-done a crash of
        # PostgreSQL loses is still running under its claim, its reclaim after the lease
        # sets outcome_unknown, and the topic is looked up before publishing it again
        # (OutboxRunner._published_before). One flush fewer per batch (docs/bench.md).
        async with self._one_statement.begin() as conn:
            await outbox_repo.mark_done(conn, [i for ids in batches for i in ids], wait_for_flush=False)
        return [None] * len(batches)

    async def _write(self, batch: list[Finished]) -> list[list[int]]:
        events = {f.row.id: self._events(f) for f in batch}
        work = self._bookkeeping(batch, [e for row_events in events.values() for e in row_events])
        claims_before = self._claims_started()
        async with raw.connection(self.engine) as pg:
            try:
                written = await outbox_writes.write_bookkeeping(pg, self.crm, self.account, self.lease_seconds, work)
            except outbox_writes.ClaimsLost as exc:
                # Nothing written: the Batcher writes each row of the batch again alone.
                rows = [f.row.id for f in batch]
                raise LeaseLost(f"outbox rows {rows}: one or more were claimed by another worker after this "
                                f"claim's lease ran out ({exc})") from exc
        if written.successor_waiting or self._claims_started() != claims_before:
            self._successor_due()
        ids = written.event_ids
        return [[ids[e.row.idempotency_key] for e in events[f.row.id] if e.row.idempotency_key in ids] for f in batch]

    def _bookkeeping(self, batch: Sequence[Finished], events: list[ClaimedEvent]) -> Bookkeeping:
        users: dict[str, str] = {}
        new_records: list[NewRecord] = []
        session_records: list[SessionRecord] = []
        decisions: list[DecisionRow] = []
        for finished in batch:
            completion, session_id = finished.completion, finished.row.session_id
            state = completion.state
            if completion.contact is not None and state is not None:
                users[state.end_user_id] = completion.contact
            if completion.new_record is not None and state is not None:
                ref = completion.new_record
                new_records.append(NewRecord(ref.record_id, ref.url, state.end_user_id, state.queue_id, session_id))
            made = completion.session_record
            if made is not None:
                session_records.append(SessionRecord(session_id, made.record_id, made.url, made.action))
            decisions.extend(completion.decisions)
        attempts = [Attempt(f.row.id, f.row.session_id, f.row.attempts, f.calls.calls) for f in batch]
        claims = [Claim(f.row.id, f.row.claim_id) for f in batch]
        keys = [f.row.serial_key for f in batch if f.row.serial_key is not None]
        return Bookkeeping(claims, users, new_records, session_records, decisions, attempts, events, keys)

    @staticmethod
    def _events(finished: Finished) -> list[ClaimedEvent]:
        """The outcome events of a finished row, as rows claimed by that row's claim."""
        row = finished.row
        if row.kind == OutboxKind.PUBLISH or not finished.completion.output or row.claim_id is None:
            return []
        return [
            ClaimedEvent(NewOutboxRow(f"{row.idempotency_key}:event:{n}", OutboxKind.PUBLISH, row.session_id, None,
                                      event.payload()), row.claim_id)
            for n, event in enumerate(finished.completion.output)
        ]
