"""What the what-if replay reads: one compact row per session (`whatif_inputs`) holding the
moments and end-user message times the policy looks at, and what actually happened to it.

The rows are derived from `sessions` and `session_messages` and brought up to date before
each read (`refresh`): only the sessions updated since the newest row was made are worked
out again, in PostgreSQL, in one statement. The JSON of the state documents is thus read
once per change of a session, not once per what-if, and the what-if reads plain columns
(and only the changed rows on a request after the first)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain.whatif import HistoricSession, Outcome, RecordOwner, actual_outcome

# A session row committed late by a transaction that began before the newest row was made
# can carry an `updated_at` a little older than it: working back this far again catches it.
REFRESH_MARGIN_SECONDS = 60
# Sessions first seen longer ago than this are not kept (the what-if looks back 90 days at most).
KEEP_DAYS = 91


@dataclass(slots=True)
class WindowSession:
    created_at: datetime  # when the service first saw the session: what "the last N days" counts
    session: HistoricSession


_READ = (
    "session_id, created_at, first_event_at, end_user_id, queue_id, is_chat, agent_id, agent_name, moments, "
    "end_user_message_times, record, record_action, record_reason, last_wait_reason"
)
_COLUMNS = "source_updated_at, " + _READ
# The policy's facts come out of each changed state document in one pass (jsonb_to_record),
# each chat's end-user message times are aggregated beside them. JIT compilation costs more
# than it saves on these statements.
_REFRESH = f"""
    WITH changed AS (
        SELECT session_id, state, record, record_action, created_at, updated_at FROM sessions
        WHERE updated_at >= COALESCE(
                (SELECT max(source_updated_at) FROM whatif_inputs), '-infinity'::timestamptz
              ) - make_interval(secs => {REFRESH_MARGIN_SECONDS})
          AND created_at >= now() - make_interval(days => {KEEP_DAYS})
    ), end_user_messages AS (
        SELECT m.session_id, array_agg(m.occurred_at ORDER BY m.occurred_at) AS times
        FROM session_messages m JOIN changed c ON c.session_id = m.session_id
        WHERE m.sender = 'end_user'
        GROUP BY m.session_id
    )
    INSERT INTO whatif_inputs ({_COLUMNS})
    SELECT c.updated_at, c.session_id, c.created_at, COALESCE(f.first_event_at, f.header_at, c.created_at),
           COALESCE(f.end_user_id, ''), COALESCE(f.queue_id, ''), COALESCE(f.medium = 'chat', false),
           f.agent_id, f.agent_name,
           ARRAY[f.queued_at, f.assigned_at, f.connected_at, f.abandoned_at, f.ended_at],
           COALESCE(m.times, '{{}}'), c.record, c.record_action, f.record_reason, f.last_wait_reason
    FROM changed c
    CROSS JOIN LATERAL jsonb_to_record(c.state) AS f(
        medium text, end_user_id text, queue_id text, agent_id text, agent_name text,
        queued_at timestamptz, assigned_at timestamptz, connected_at timestamptz, abandoned_at timestamptz,
        ended_at timestamptz, first_event_at timestamptz, header_at timestamptz, record_reason text,
        last_wait_reason text)
    LEFT JOIN end_user_messages m ON m.session_id = c.session_id
    ON CONFLICT (session_id) DO UPDATE SET
        created_at = EXCLUDED.created_at, source_updated_at = EXCLUDED.source_updated_at,
        first_event_at = EXCLUDED.first_event_at, end_user_id = EXCLUDED.end_user_id,
        queue_id = EXCLUDED.queue_id, is_chat = EXCLUDED.is_chat, agent_id = EXCLUDED.agent_id,
        agent_name = EXCLUDED.agent_name, moments = EXCLUDED.moments,
        end_user_message_times = EXCLUDED.end_user_message_times, record = EXCLUDED.record,
        record_action = EXCLUDED.record_action, record_reason = EXCLUDED.record_reason,
        last_wait_reason = EXCLUDED.last_wait_reason
    WHERE whatif_inputs.source_updated_at IS DISTINCT FROM EXCLUDED.source_updated_at
       OR whatif_inputs.end_user_message_times IS DISTINCT FROM EXCLUDED.end_user_message_times
"""
_REFRESH_RETURNING = _REFRESH + f" RETURNING {_READ}"
_FORGET_OLD = f"DELETE FROM whatif_inputs WHERE created_at < now() - make_interval(days => {KEEP_DAYS})"
# In the order the replay takes them: sorting 100,000 already ordered sessions costs Python
# one pass instead of 1.7 million comparisons of datetimes.
_IN_WINDOW = (
    f"SELECT {_READ} FROM whatif_inputs WHERE created_at >= now() - make_interval(days => $1) "
    "ORDER BY first_event_at, session_id"
)
# The rows whose session changed since a held history's newest one (the margin as above):
# whichever refresh brought them up to date, this process's or another's.
_CHANGED_IN_WINDOW = (
    f"SELECT {_READ} FROM whatif_inputs "
    f"WHERE source_updated_at >= $2::timestamptz - make_interval(secs => {REFRESH_MARGIN_SECONDS}) "
    "AND created_at >= now() - make_interval(days => $1)"
)
_COUNT_IN_WINDOW = "SELECT count(*) FROM whatif_inputs WHERE created_at >= now() - make_interval(days => $1)"
_NEWEST_SOURCE = "SELECT max(source_updated_at) FROM whatif_inputs"
_NO_JIT = text("SET LOCAL jit = off")
_ONE_AT_A_TIME = "SELECT pg_advisory_xact_lock(hashtext('crm-records whatif_inputs refresh'))"
_NOW = text("SELECT now()")
_OWNERS_BEFORE = text(
    """
    SELECT DISTINCT end_user_id, queue_id FROM crm_records
    WHERE crm = :crm AND created_at < now() - make_interval(days => :days)
    """
)


@lru_cache(maxsize=65536)
def _actual(record: str, action: str | None, reason: str | None, wait_reason: str | None) -> Outcome:
    return actual_outcome(record, action, reason, wait_reason)


def _window_session(row) -> WindowSession:
    (session_id, created_at, first_event_at, end_user_id, queue_id, is_chat, agent_id, agent_name,
     moments, message_times, record, action, reason, wait_reason) = row
    queued, assigned, connected, abandoned, ended = moments
    return WindowSession(created_at, HistoricSession(
        session_id, "chat" if is_chat else "call", end_user_id, queue_id, agent_id, agent_name, queued, assigned,
        connected, abandoned, ended, tuple(message_times), first_event_at,
        _actual(record, action, reason, wait_reason),
    ))


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a history is built: it makes some 700,000 objects
    for 100,000 sessions, none in a cycle, and the collector would walk them again and
    again as they pile up (measured: 3.7 s of CPU for a read instead of 1.3 s)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def database_now(conn: AsyncConnection) -> datetime:
    return (await conn.execute(_NOW)).scalar_one()


async def _driver(conn: AsyncConnection):
    await conn.execute(_NO_JIT)  # also begins the transaction the driver's statements run in
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None, "a connection in use holds its asyncpg connection"
    return driver


async def refresh(conn: AsyncConnection, *, changed: bool = True) -> list[WindowSession]:
    """Bring the replay inputs up to date with the sessions; returns the rows that changed
    (none when `changed` is false). Commit the transaction for other readers to see them."""
    driver = await _driver(conn)
    # One refresh at a time across the replicas: two upserting the same rows in different
    # orders could deadlock; the second finds little left to do once the first commits.
    await driver.execute(_ONE_AT_A_TIME)
    if not changed:
        await driver.execute(_REFRESH)
        return []
    with gc_paused():
        return [_window_session(row) for row in await driver.fetch(_REFRESH_RETURNING)]


async def sessions_since(conn: AsyncConnection, days: int) -> list[WindowSession]:
    """The replay inputs of the sessions first seen in the last `days` days (refresh first)."""
    driver = await _driver(conn)
    await driver.execute(_FORGET_OLD)
    # Read through the driver itself: 100,000 rows cost a second less without SQLAlchemy's row layer.
    with gc_paused():
        return [_window_session(row) for row in await driver.fetch(_IN_WINDOW, days)]


async def sessions_since_in_chunks(conn: AsyncConnection, days: int,
                                   rows_per_chunk: int) -> AsyncIterator[list[WindowSession]]:
    """As `sessions_since`, `rows_per_chunk` rows at a time through a cursor: between two
    chunks the event loop runs the process's other tasks (the consumer, the worker), so a
    background load holds it up for one chunk's decoding and building at most."""
    driver = await _driver(conn)
    await driver.execute(_FORGET_OLD)
    cursor = await driver.cursor(_IN_WINDOW, days)
    while rows := await cursor.fetch(rows_per_chunk):
        with gc_paused():
            yield [_window_session(row) for row in rows]


async def count_in_window(conn: AsyncConnection, days: int) -> int:
    """How many sessions the last `days` days' replay would hold (before loading them)."""
    driver = await _driver(conn)
    return await driver.fetchval(_COUNT_IN_WINDOW, days)


async def newest_source(conn: AsyncConnection) -> datetime | None:
    """When the newest session held in the replay inputs last changed."""
    driver = await _driver(conn)
    return await driver.fetchval(_NEWEST_SOURCE)


async def sessions_changed_since(conn: AsyncConnection, days: int, since: datetime) -> list[WindowSession]:
    """The replay inputs in the window whose session changed at `since` or later (with the
    refresh's margin), whoever refreshed them."""
    driver = await _driver(conn)
    with gc_paused():
        return [_window_session(row) for row in await driver.fetch(_CHANGED_IN_WINDOW, days, since)]


async def sessions_changed_since_in_chunks(conn: AsyncConnection, days: int, since: datetime,
                                          rows_per_chunk: int) -> AsyncIterator[list[WindowSession]]:
    """As `sessions_changed_since`, `rows_per_chunk` rows at a time through a cursor (see
    `sessions_since_in_chunks`): after a busy minute every session may have changed."""
    driver = await _driver(conn)
    cursor = await driver.cursor(_CHANGED_IN_WINDOW, days, since)
    while rows := await cursor.fetch(rows_per_chunk):
        with gc_paused():
            yield [_window_session(row) for row in rows]


async def owners_with_records_before(conn: AsyncConnection, crm: str, days: int) -> list[RecordOwner]:
    """Who (end user, leaf queue) had a record in `crm` before the window began."""
    result = await conn.execute(_OWNERS_BEFORE, {"crm": crm, "days": days})
    return [RecordOwner(end_user_id=row.end_user_id, queue_id=row.queue_id) for row in result]
