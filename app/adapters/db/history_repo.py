"""What the what-if replay reads: sessions with the moments and end-user message times the
policy looks at, and what actually happened to each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain.whatif import HistoricSession, actual_outcome


@dataclass(slots=True)
class WindowSession:
    created_at: datetime  # when the service first saw the session: what "the last N days" counts
    session: HistoricSession


# The policy's facts come out of the state document in one pass (jsonb_to_record), and each
# chat's end-user message times are aggregated beside them. JIT compilation costs more than
# it saves on a statement read once.
_SELECT = """
    WITH chosen AS (
        SELECT session_id, state, record, record_action, created_at FROM sessions WHERE {where}
    ), end_user_messages AS (
        SELECT m.session_id, array_agg(m.occurred_at ORDER BY m.occurred_at) AS times
        FROM session_messages m JOIN chosen c ON c.session_id = m.session_id
        WHERE m.sender = 'end_user'
        GROUP BY m.session_id
    )
    SELECT c.session_id, f.medium, f.end_user_id, f.queue_id, f.agent_id, f.agent_name,
           f.queued_at, f.assigned_at, f.connected_at, f.abandoned_at, f.ended_at,
           COALESCE(f.first_event_at, f.header_at), c.record, c.record_action, f.record_reason,
           f.last_wait_reason, m.times, c.created_at
    FROM chosen c
    CROSS JOIN LATERAL jsonb_to_record(c.state) AS f(
        medium text, end_user_id text, queue_id text, agent_id text, agent_name text,
        queued_at timestamptz, assigned_at timestamptz, connected_at timestamptz, abandoned_at timestamptz,
        ended_at timestamptz, first_event_at timestamptz, header_at timestamptz, record_reason text,
        last_wait_reason text)
    LEFT JOIN end_user_messages m ON m.session_id = c.session_id
"""
# Read through the driver itself: 100,000 rows cost a second less without SQLAlchemy's row layer.
_IN_WINDOW = _SELECT.format(where="created_at >= now() - make_interval(days => $1)")
_UPDATED_SINCE = _SELECT.format(where="updated_at >= $1")
_NO_JIT = text("SET LOCAL jit = off")
_NOW = text("SELECT now()")
_OWNERS_BEFORE = text(
    """
    SELECT DISTINCT end_user_id, queue_id FROM crm_records
    WHERE crm = :crm AND created_at < now() - make_interval(days => :days)
    """
)


def _window_session(row) -> WindowSession:
    (session_id, medium, end_user_id, queue_id, agent_id, agent_name, queued_at, assigned_at, connected_at,
     abandoned_at, ended_at, first_event_at, record, action, reason, wait_reason, times, created_at) = row
    return WindowSession(created_at, HistoricSession(
        session_id, medium, end_user_id or "", queue_id or "", agent_id, agent_name, queued_at, assigned_at,
        connected_at, abandoned_at, ended_at, tuple(times) if times else (), first_event_at or created_at,
        actual_outcome(record, action, reason, wait_reason),
    ))


async def database_now(conn: AsyncConnection) -> datetime:
    return (await conn.execute(_NOW)).scalar_one()


async def _fetch(conn: AsyncConnection, statement: str, argument: object) -> list[WindowSession]:
    await conn.execute(_NO_JIT)  # also begins the transaction the driver's statement runs in
    driver = (await conn.get_raw_connection()).driver_connection
    return [_window_session(row) for row in await driver.fetch(statement, argument)]


async def sessions_since(conn: AsyncConnection, days: int) -> list[WindowSession]:
    """The sessions first seen in the last `days` days."""
    return await _fetch(conn, _IN_WINDOW, days)


async def sessions_updated_since(conn: AsyncConnection, since: datetime) -> list[WindowSession]:
    """The sessions changed (new events, a record made) since `since`."""
    return await _fetch(conn, _UPDATED_SINCE, since)


async def owners_with_records_before(conn: AsyncConnection, crm: str, days: int) -> list[tuple[str, str]]:
    """(end user, leaf queue) pairs that had a record in `crm` before the window began."""
    result = await conn.execute(_OWNERS_BEFORE, {"crm": crm, "days": days})
    return [(row[0], row[1]) for row in result]
