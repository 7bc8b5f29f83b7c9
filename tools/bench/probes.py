"""What the bench reads from the service's database while it runs: the service's own
tables (app.adapters.db.schema) and repositories, never copies of their SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Text, any_, func, literal, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.adapters.db import outbox_repo
from app.adapters.db.schema import outbox, processed_events, sandbox_records


@dataclass(frozen=True, slots=True)
class Progress:
    events_applied: int
    records: int
    outbox_not_done: int

    def __str__(self) -> str:
        return (
            f"{self.events_applied} events applied, {self.records} records, {self.outbox_not_done} outbox rows not done"
        )


@dataclass(frozen=True, slots=True)
class AppliedSpan:
    """When the first and the last of a set of events were applied (transaction start)."""

    events: int
    first: datetime | None
    last: datetime | None

    @property
    def seconds(self) -> float | None:
        if self.first is None or self.last is None:
            return None
        return (self.last - self.first).total_seconds()


@dataclass(frozen=True, slots=True)
class SessionTimes:
    """One session's way from its `assigned` event to its record, in the database's clock."""

    session_id: str
    consumed_at: datetime | None  # the consumer transaction that applied `assigned`
    claimed_at: datetime | None  # the worker's claim of the record row
    recorded_at: datetime | None  # the record in the sandbox CRM


def _among(column, values: Sequence[str]):
    """`column = ANY(array)`: one parameter, however many values."""
    return column == any_(literal(list(values), ARRAY(Text)))


class Probe:
    """One connection to the bench database, kept apart so its CPU is not counted."""

    def __init__(self, url: str):
        self.engine: AsyncEngine = create_async_engine(url, pool_size=1, max_overflow=0)
        self.backend_pid: int | None = None

    async def start(self) -> None:
        async with self.engine.connect() as conn:
            self.backend_pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()

    async def close(self) -> None:
        await self.engine.dispose()

    async def progress(self) -> Progress:
        async with self.engine.connect() as conn:
            events = (await conn.execute(select(func.count()).select_from(processed_events))).scalar_one()
            records = (await conn.execute(select(func.count()).select_from(sandbox_records))).scalar_one()
            backlog = await outbox_repo.backlog_counts(conn)
        return Progress(events, records, backlog["pending"] + backlog["in_progress"] + backlog["parked"])

    async def applied_span(self) -> AppliedSpan:
        """Over every event applied so far (the throughput phase runs first)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(func.count(), func.min(processed_events.c.first_seen_at),
                       func.max(processed_events.c.first_seen_at))
            )).one()
        return AppliedSpan(row[0], row[1], row[2])

    async def records_made(self, session_ids: Sequence[str]) -> int:
        async with self.engine.connect() as conn:
            return (await conn.execute(
                select(func.count()).select_from(sandbox_records)
                .where(_among(sandbox_records.c.external_id, session_ids))
            )).scalar_one()

    async def session_times(self, assigned_event_ids: dict[str, str]) -> list[SessionTimes]:
        """`assigned_event_ids`: session id -> the event id of its `assigned` event."""
        ids = list(assigned_event_ids)
        async with self.engine.connect() as conn:
            consumed = dict((await conn.execute(
                select(processed_events.c.session_id, processed_events.c.first_seen_at)
                .where(_among(processed_events.c.event_id, list(assigned_event_ids.values())))
            )).all())
            claimed = dict((await conn.execute(
                select(outbox.c.session_id, outbox.c.claimed_at)
                .where(_among(outbox.c.session_id, ids), outbox.c.kind == "record")
            )).all()) if "claimed_at" in outbox.c else {}
            recorded = dict((await conn.execute(
                select(sandbox_records.c.external_id, sandbox_records.c.created_at)
                .where(_among(sandbox_records.c.external_id, ids))
            )).all())
        return [SessionTimes(s, consumed.get(s), claimed.get(s), recorded.get(s)) for s in ids]
