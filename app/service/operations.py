"""Use cases behind the console's session explorer and operations view."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from app import metrics
from app.adapters.db import events_repo, explorer_repo, outbox_repo
from app.adapters.db.explorer_repo import ParkedRow, SessionSummary
from app.domain.session import SessionState

PAGE_SIZE = 25
MOMENTS = ("queued", "assigned", "connected", "abandoned", "ended")


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: datetime
    kind: str  # an event type
    detail: str  # a message's sender, or an agent


@dataclass(frozen=True, slots=True)
class Page:
    number: int
    has_next: bool

    @property
    def offset(self) -> int:
        return (self.number - 1) * PAGE_SIZE


@dataclass(slots=True)
class OperationsOverview:
    consumer_lag: dict[str, float] = field(default_factory=dict)  # partition -> messages behind
    backlog: dict[str, int] = field(default_factory=dict)  # pending / in_progress / parked
    oldest_due_age_seconds: float = 0.0
    dead_letters: dict[str, float] = field(default_factory=dict)  # reason class -> count since start
    parked: list[ParkedRow] = field(default_factory=list)
    page: Page = field(default_factory=lambda: Page(1, False))


def _samples(metric_name: str, label: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name == metric_name and label in sample.labels:
                values[sample.labels[label]] = sample.value
    return values


@dataclass(frozen=True, slots=True)
class SessionsFound:
    rows: list[SessionSummary]  # one page of them
    page: Page


async def search_sessions(conn: AsyncConnection, query: str | None, page: int) -> SessionsFound:
    rows = await explorer_repo.search_sessions(conn, query or None, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)
    return SessionsFound(rows[:PAGE_SIZE], Page(page, len(rows) > PAGE_SIZE))


async def timeline(conn: AsyncConnection, session_id: str, state: SessionState) -> list[TimelineEntry]:
    """The session's events in the order they occurred: its lifecycle moments (the first
    occurrence of each) and every message, with who sent it (never its text)."""
    entries = []
    for moment in MOMENTS:
        at: datetime | None = getattr(state, f"{moment}_at")
        if at:
            detail = state.agent_name or state.agent_id or "" if moment in ("assigned", "connected") else ""
            entries.append(TimelineEntry(at, moment, detail))
    for line in await events_repo.transcript(conn, session_id):
        entries.append(TimelineEntry(line.occurred_at, "message", line.sender))
    return sorted(entries, key=lambda e: (e.at, MOMENTS.index(e.kind) if e.kind in MOMENTS else 9))


async def operations_overview(conn: AsyncConnection, page: int) -> OperationsOverview:
    parked = await explorer_repo.parked_rows(conn, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)
    return OperationsOverview(
        consumer_lag=dict(sorted(_samples("crm_records_consumer_lag_messages", "partition").items(),
                                 key=lambda item: int(item[0]) if item[0].isdigit() else 0)),
        backlog=await outbox_repo.backlog_counts(conn),
        oldest_due_age_seconds=await outbox_repo.oldest_due_age_seconds(conn),
        dead_letters=_samples("crm_records_events_dead_lettered_total", "reason"),
        parked=parked[:PAGE_SIZE],
        page=Page(page, len(parked) > PAGE_SIZE),
    )


async def retry_parked_row(conn: AsyncConnection, outbox_id: int) -> bool:
    requeued = await explorer_repo.requeue_parked_row(conn, outbox_id)
    if requeued:
        await outbox_repo.notify_workers(conn)
    return requeued
