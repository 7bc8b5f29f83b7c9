"""Use cases behind the console's session explorer and operations view."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.db import events_repo, explorer_repo, outbox_repo, replicas_repo
from app.adapters.db.explorer_repo import ParkedRow, SessionSummary
from app.domain.session import SessionState
from app.service import replicas
from app.service.replicas import ReplicasOverview

PAGE_SIZE = 25
MOMENTS = ("queued", "assigned", "connected", "abandoned", "ended")
TIMELINE_LIMIT = 1000  # events shown on a session's page


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
    replicas: ReplicasOverview = field(default_factory=ReplicasOverview)  # lag, dead letters, CRM health
    backlog: dict[str, int] = field(default_factory=dict)  # pending / in_progress / parked
    oldest_due_age_seconds: float = 0.0
    parked: list[ParkedRow] = field(default_factory=list)
    page: Page = field(default_factory=lambda: Page(1, False))


@dataclass(frozen=True, slots=True)
class SessionsFound:
    rows: list[SessionSummary]  # one page of them
    page: Page


async def search_sessions(conn: AsyncConnection, query: str | None, page: int) -> SessionsFound:
    rows = await explorer_repo.search_sessions(conn, query or None, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)
    return SessionsFound(rows[:PAGE_SIZE], Page(page, len(rows) > PAGE_SIZE))


async def timeline(conn: AsyncConnection, session_id: str, state: SessionState) -> list[TimelineEntry]:
    """Every event of the session in the order it occurred, with its time; a message with who
    sent it (never its text). Sessions whose events were applied before each event's type and
    time were kept show the first occurrence of each lifecycle moment and every message."""
    events = await events_repo.timeline(conn, session_id, TIMELINE_LIMIT)
    if events:
        # The agent is known only as the session's latest: named where there was one assignment.
        kinds = Counter(e.event_type for e in events)
        agent = state.agent_name or state.agent_id or ""
        return [TimelineEntry(e.occurred_at, e.event_type, e.sender or "" if e.event_type == "message"
                              else agent if kinds[e.event_type] == 1 and e.event_type in ("assigned", "connected")
                              else "") for e in events]
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
    """The outbox, the parked rows, and every replica's heartbeat (app/service/replicas.py)."""
    parked = await explorer_repo.parked_rows(conn, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)
    return OperationsOverview(
        replicas=replicas.overview(await replicas_repo.all_replicas(conn)),
        backlog=await outbox_repo.backlog_counts(conn),
        oldest_due_age_seconds=await outbox_repo.oldest_due_age_seconds(conn),
        parked=parked[:PAGE_SIZE],
        page=Page(page, len(parked) > PAGE_SIZE),
    )


async def retry_parked_row(conn: AsyncConnection, outbox_id: int) -> bool:
    requeued = await explorer_repo.requeue_parked_row(conn, outbox_id)
    if requeued:
        await outbox_repo.notify_workers(conn)
    return requeued
