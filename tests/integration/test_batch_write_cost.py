"""The consumer's batch write on a large sessions table: what a batch of a few sessions
costs must not grow with the sessions stored. Measured in rows the executed plans read
(auto_explain), not in time, so load does not move it."""

from __future__ import annotations

from sqlalchemy import text

from app.adapters.db import raw
from app.service.consume import apply_batch
from tests.factories import chat_events, to_event
from tests.helpers import executed_plans, rows_read

STORED_SESSIONS = 20_000


async def test_a_small_batch_reads_only_its_own_sessions_rows_however_many_are_stored(clean_db):
    async with clean_db.begin() as conn:
        await conn.execute(text(
            "INSERT INTO sessions (session_id, state, record) "
            "SELECT 'stored-' || i, '{}'::jsonb, 'pending' FROM generate_series(1, :n) AS i"), {"n": STORED_SESSIONS})
        await conn.execute(text("ANALYZE sessions"))
    events = [to_event(e) for e in chat_events("chat-cost", end_user_messages=3, end_user_id="eu-cost")]
    async with raw.connection(clean_db) as pg:
        await apply_batch(pg, events[:3], "sandbox")  # the session's row, at version 1
        async with executed_plans(pg) as plans:
            result = await apply_batch(pg, events[3:], "sandbox")  # saved over version 1
    assert result.applied == len(events) - 3 and not result.locked_after_conflict
    # The guard "a state over a version above 0 is saved only where its row still
    # exists" was planned as a hashed subplan over the whole table: 20,000 rows a poll.
    assert plans and max(rows_read(plan, "sessions") for plan in plans) <= 10, [
        rows_read(plan, "sessions") for plan in plans]


async def test_a_state_saved_again_is_updated_in_place_without_a_new_index_entry(clean_db):
    # Every session's row is saved again at each poll that has one of its events (about
    # eight times in its life). A row updated where its page has room is a HOT update:
    # no new entry in the primary key's index, its old version pruned with the page. In
    # pages packed full at insert (the default fillfactor, 100) none has room.
    sessions = [chat_events(f"chat-hot-{n:03d}", end_user_messages=1, end_user_id=f"eu-hot-{n}") for n in range(300)]
    async with raw.connection(clean_db) as pg:
        await apply_batch(pg, [to_event(events[0]) for events in sessions], "sandbox")
    async with raw.transaction(clean_db) as pg:
        result = await apply_batch(pg, [to_event(events[1]) for events in sessions], "sandbox")
        updated = await pg.fetchval("SELECT pg_stat_get_xact_tuples_updated('sessions'::regclass)")
        hot = await pg.fetchval("SELECT pg_stat_get_xact_tuples_hot_updated('sessions'::regclass)")
    assert result.applied == 300 and updated >= 300
    assert hot >= 0.4 * updated, (hot, updated)
