"""Reads behind the console's session explorer and operations view."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain.session import SessionState


@dataclass(frozen=True, slots=True)
class SessionSummary:
    session_id: str
    medium: str
    session_type: str
    end_user_id: str
    record: str
    record_id: str | None
    record_url: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ParkedRow:
    outbox_id: int
    session_id: str
    kind: str
    crm: str | None
    attempts: int
    reason: str | None
    parked_at: datetime


_SEARCH = text(
    """
    SELECT session_id, state->>'medium', state->>'session_type', state->>'end_user_id', record, record_id,
           record_url, created_at
    FROM sessions
    WHERE CAST(:query AS text) IS NULL OR session_id = :query OR state->>'end_user_id' = :query
    ORDER BY created_at DESC, session_id
    LIMIT :limit OFFSET :offset
    """
)
_NEWEST = text("SELECT state FROM sessions ORDER BY created_at DESC, session_id DESC LIMIT 1")
_PARKED = text(
    """
    SELECT id, session_id, kind, payload->>'crm', attempts, last_error, updated_at FROM outbox
    WHERE status = 'parked' ORDER BY updated_at DESC, id DESC LIMIT :limit OFFSET :offset
    """
)
_REQUEUE_ONE = text(
    """
    UPDATE outbox SET status = 'pending', attempts = 0, due_at = now(), updated_at = now()
    WHERE id = :id AND status = 'parked'
    """
)


async def search_sessions(conn: AsyncConnection, query: str | None, limit: int, offset: int) -> list[SessionSummary]:
    """Sessions whose id or end user's id is `query` (all when None), newest first."""
    result = await conn.execute(_SEARCH, {"query": query, "limit": limit, "offset": offset})
    return [SessionSummary(*row) for row in result]


async def newest_session(conn: AsyncConnection) -> SessionState | None:
    row = (await conn.execute(_NEWEST)).first()
    return SessionState.from_document(row[0]) if row else None


async def parked_rows(conn: AsyncConnection, limit: int, offset: int) -> list[ParkedRow]:
    result = await conn.execute(_PARKED, {"limit": limit, "offset": offset})
    return [ParkedRow(*row) for row in result]


async def requeue_parked_row(conn: AsyncConnection, outbox_id: int) -> bool:
    """Run one parked row again (an operator fixed its cause); False when it is not parked."""
    return ((await conn.execute(_REQUEUE_ONE, {"id": outbox_id})).rowcount or 0) > 0
