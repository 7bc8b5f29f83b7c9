"""A session's trace: why it did or did not get a record. Its state, the record it ended up
with, every decision, its outbox rows and every CRM call, read in one connection. The
HTTP API (GET /api/sessions/{id}), the CLI (`python -m app session`) and the console's
session page all show this."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.adapters.db import decisions_repo, sessions_repo, trace_repo
from app.adapters.db.decisions_repo import StoredDecision
from app.adapters.db.trace_repo import OutboxRowSummary, RecordedCrmCall
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
class SessionTrace:
    session_id: str
    state: SessionState
    record: TraceRecord
    decisions: tuple[StoredDecision, ...]
    outbox: tuple[OutboxRowSummary, ...]
    crm_calls: tuple[RecordedCrmCall, ...]


async def trace_of_session(engine: AsyncEngine, session_id: str) -> SessionTrace | None:
    async with engine.connect() as conn:
        return await session_trace(conn, session_id)


async def session_trace(conn: AsyncConnection, session_id: str) -> SessionTrace | None:
    """None when no event of the session has been seen."""
    session = await sessions_repo.get_session(conn, session_id)
    if session is None:
        return None
    return SessionTrace(
        session_id=session_id,
        state=session.state,
        record=TraceRecord(
            progress=session.record, reason=session.state.record_reason, crm=session.crm,
            record_id=session.record_id, record_url=session.record_url, action=session.record_action,
        ),
        decisions=tuple(await decisions_repo.list_for_session(conn, session_id)),
        outbox=tuple(await trace_repo.outbox_rows(conn, session_id)),
        crm_calls=tuple(await trace_repo.crm_calls_of(conn, session_id)),
    )
