"""What the what-if replay reads: the sessions first seen in the last N days, each with the
moments and end-user message times the policy looks at, and what actually happened to it."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain.whatif import HistoricSession, actual_outcome

# One statement: the window's sessions with the policy's facts taken out of the state
# document in PostgreSQL, and each chat's end-user message times aggregated beside them.
_HISTORY = text(
    """
    WITH window_sessions AS (
        SELECT session_id, state, record, record_action FROM sessions
        WHERE created_at >= now() - make_interval(days => :days)
    ), end_user_messages AS (
        SELECT m.session_id, array_agg(m.occurred_at ORDER BY m.occurred_at) AS times
        FROM session_messages m JOIN window_sessions w USING (session_id)
        WHERE m.sender = 'end_user'
        GROUP BY m.session_id
    )
    SELECT w.session_id, w.state->>'medium', w.state->>'end_user_id', w.state->>'queue_id',
           w.state->>'agent_id', w.state->>'agent_name',
           CAST(w.state->>'queued_at' AS timestamptz), CAST(w.state->>'assigned_at' AS timestamptz),
           CAST(w.state->>'connected_at' AS timestamptz), CAST(w.state->>'abandoned_at' AS timestamptz),
           CAST(w.state->>'ended_at' AS timestamptz),
           CAST(COALESCE(w.state->>'first_event_at', w.state->>'header_at') AS timestamptz),
           w.record, w.record_action, w.state->>'record_reason', w.state->>'last_wait_reason', m.times
    FROM window_sessions w LEFT JOIN end_user_messages m USING (session_id)
    """
)

_OWNERS_BEFORE = text(
    """
    SELECT DISTINCT end_user_id, queue_id FROM crm_records
    WHERE crm = :crm AND created_at < now() - make_interval(days => :days)
    """
)


async def sessions_since(conn: AsyncConnection, days: int) -> list[HistoricSession]:
    result = await conn.execute(_HISTORY, {"days": days})
    history = []
    for (session_id, medium, end_user_id, queue_id, agent_id, agent_name, queued_at, assigned_at, connected_at,
         abandoned_at, ended_at, first_event_at, record, action, reason, wait_reason, times) in result:
        history.append(HistoricSession(
            session_id, medium, end_user_id or "", queue_id or "", agent_id, agent_name, queued_at, assigned_at,
            connected_at, abandoned_at, ended_at, tuple(times) if times else (), first_event_at,
            actual_outcome(record, action, reason, wait_reason),
        ))
    return history


async def owners_with_records_before(conn: AsyncConnection, crm: str, days: int) -> list[tuple[str, str]]:
    """(end user, leaf queue) pairs that had a record in `crm` before the window began."""
    result = await conn.execute(_OWNERS_BEFORE, {"crm": crm, "days": days})
    return [(row[0], row[1]) for row in result]
