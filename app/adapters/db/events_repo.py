"""Processed event ids and chat messages: insert-only tables written by the consumer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.db import raw
from app.domain.events import SessionEvent
from app.domain.rendering import TranscriptLine


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat message of a session, as the consumer stores it for the transcript."""

    session_id: str
    event_id: str
    occurred_at: datetime
    sender: str
    text: str | None

# Built once; a JSON array of rows keeps the SQL text constant whatever the batch size, so
# PostgreSQL prepares it once per connection (and see raw.json_rows).
# Run by batch_reads together with the settings read; returns the ids not seen before.
INSERT_NEW_EVENTS = """
    INSERT INTO processed_events (event_id, session_id, event_type, occurred_at)
    SELECT * FROM jsonb_to_recordset(CAST(:events AS jsonb))
         AS e(event_id text, session_id text, event_type text, occurred_at timestamptz)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
"""

# ChatMessage's fields are the columns.
_INSERT_MESSAGES = text(
    """
    INSERT INTO session_messages (session_id, event_id, occurred_at, sender, text)
    SELECT * FROM jsonb_to_recordset(CAST(:messages AS jsonb))
         AS m(session_id text, event_id text, occurred_at timestamptz, sender text, text text)
    ON CONFLICT DO NOTHING
    """
)

_TRANSCRIPT = text(
    "SELECT occurred_at, sender, text FROM session_messages WHERE session_id = :session_id "
    "ORDER BY occurred_at, event_id"
)


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One event applied to a session: its type, when it occurred, and a message's sender."""

    occurred_at: datetime
    event_type: str
    sender: str | None


_TIMELINE = text(
    """
    SELECT p.occurred_at, p.event_type, m.sender FROM processed_events p
    LEFT JOIN session_messages m ON m.session_id = p.session_id AND m.event_id = p.event_id
    WHERE p.session_id = :session_id AND p.event_type IS NOT NULL
    ORDER BY p.occurred_at, p.first_seen_at, p.event_id
    LIMIT :limit
    """
)


def insert_new_events_parameters(events: Sequence[SessionEvent]) -> dict[str, str]:
    """Each event's id, session, type and time (the session timeline lists them)."""
    return {"events": raw.json_rows([
        {"event_id": e.event_id, "session_id": e.session.id, "event_type": e.event_type, "occurred_at": e.occurred_at}
        for e in events
    ])}


async def timeline(conn: AsyncConnection, session_id: str, limit: int) -> list[TimelineEvent]:
    """The session's events in the order they occurred (the first `limit`); empty for events
    applied before their type and time were kept."""
    result = await conn.execute(_TIMELINE, {"session_id": session_id, "limit": limit})
    return [TimelineEvent(*row) for row in result]


def insert_messages_parameters(rows: Sequence[ChatMessage]) -> dict[str, str]:
    return {"messages": raw.json_rows(rows)}


INSERT_MESSAGES = _INSERT_MESSAGES  # for batch_writes


async def transcript(conn: AsyncConnection, session_id: str) -> list[TranscriptLine]:
    result = await conn.execute(_TRANSCRIPT, {"session_id": session_id})
    return [TranscriptLine(row.occurred_at, row.sender, row.text) for row in result]
