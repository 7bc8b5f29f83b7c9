"""A session's trace: why it did or did not get a record. Its state, the record it ended up
with, every decision, its outbox rows and every CRM call, read in one connection. The
HTTP API (GET /api/sessions/{id}), the CLI (`python -m app session`) and the console's
session page all show this."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.adapters.db import decisions_repo, sessions_repo, trace_repo
from app.adapters.db.trace_repo import OutboxRowSummary, StoredCrmAttempt
from app.domain.session import RecordProgress, SessionState


@dataclass(frozen=True, slots=True)
class TraceRecord:
    progress: RecordProgress
    reason: str | None  # the policy's reason for `progress`
    crm: str | None
    record_id: str | None
    record_url: str | None
    action: str | None  # a RecordAction: created, attached or reopened


@dataclass(frozen=True, slots=True)
class TraceDecision:
    kind: str  # a DecisionKind
    reason: str
    event_at: datetime | None  # the event that led to it
    settings_version: int | None  # None: the defaults
    record_id: str | None
    decided_at: datetime


@dataclass(frozen=True, slots=True)
class TraceCrmCall:
    outbox_id: int
    attempt: int
    crm: str
    operation: str
    method: str | None
    path: str | None
    status_code: int | None
    latency_ms: float | None
    outcome: Literal["ok", "failed"]
    error: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class SessionTrace:
    session_id: str
    state: SessionState
    record: TraceRecord
    decisions: tuple[TraceDecision, ...]
    outbox: tuple[OutboxRowSummary, ...]
    crm_calls: tuple[TraceCrmCall, ...]


async def trace_of_session(engine: AsyncEngine, session_id: str) -> SessionTrace | None:
    async with engine.connect() as conn:
        return await session_trace(conn, session_id)


async def session_trace(conn: AsyncConnection, session_id: str) -> SessionTrace | None:
    """None when no event of the session has been seen."""
    session = await sessions_repo.get_session(conn, session_id)
    if session is None:
        return None
    state = SessionState.from_document(session["state"])
    return SessionTrace(
        session_id=session_id,
        state=state,
        record=TraceRecord(
            progress=session["record"], reason=state.record_reason, crm=session["crm"],
            record_id=session["record_id"], record_url=session["record_url"], action=session["record_action"],
        ),
        decisions=tuple(
            TraceDecision(d.kind, d.reason, d.event_at, d.settings_version, d.record_id, decided_at=d.created_at)
            for d in await decisions_repo.list_for_session(conn, session_id)
        ),
        outbox=tuple(await trace_repo.outbox_rows(conn, session_id)),
        crm_calls=tuple(_crm_call(a) for a in await trace_repo.crm_attempts_of(conn, session_id)),
    )


def _crm_call(attempt: StoredCrmAttempt) -> TraceCrmCall:
    return TraceCrmCall(
        outbox_id=attempt.outbox_id, attempt=attempt.attempt, crm=attempt.crm, operation=attempt.operation,
        method=attempt.method, path=attempt.path, status_code=attempt.status_code, latency_ms=attempt.latency_ms,
        outcome="ok" if attempt.error is None else "failed", error=attempt.error, at=attempt.created_at,
    )
