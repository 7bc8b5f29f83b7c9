"""A consumer that remembers what it saved (service/saved_states.py) folds a steady
stream's batches without reading the states and the settings again: one statement a
batch. Its write checks what it would have read, so whatever moved meanwhile (another
consumer's save, a settings version, a session presumed new that exists, tables emptied)
fails the write and the batch is applied the locked way: no update is lost, no event is
applied twice, the settings in force decide."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from app.adapters.db import raw, settings_repo
from app.domain.record_settings import RecordSettings
from app.domain.session import SessionState
from app.service.consume import apply_batch
from app.service.saved_states import SavedStates
from tests.factories import call_events, chat_events, to_event


async def _session(engine, session_id: str) -> tuple[SessionState, int]:
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT state, state_version FROM sessions WHERE session_id = :s"),
                                  {"s": session_id})).one()
    return SessionState.from_document(row.state), row.state_version


async def _first_words(engine, batches, saved: SavedStates) -> tuple[list[list[str]], list]:
    """Each batch applied with `saved`: the first word of every statement it ran, and its outcome."""
    words: list[list[str]] = []
    outcomes = []
    async with raw.connection(engine) as pg:
        pg.add_query_logger(lambda logged: words[-1].append(logged.query.split()[0]))
        for batch in batches:
            words.append([])
            outcomes.append(await apply_batch(pg, batch, "sandbox", saved=saved))
            await asyncio.sleep(0.05)  # asyncpg calls its query loggers soon after, not at once
    return words, outcomes


async def test_a_steady_stream_is_one_write_a_batch_once_its_sessions_are_remembered(clean_db):
    chat = [to_event(e) for e in chat_events("chat-s", end_user_messages=3, end_user_id="eu-s")]
    call = [to_event(e) for e in call_events("call-s", end_user_id="eu-s2")]
    saved = SavedStates()
    # 1: nothing known yet (not even the settings): read. 2: the chat goes on, the call
    # begins (`queued`): nothing to read. 3: both go on. 4: both end.
    batches = [chat[:2], chat[2:4] + call[:1], chat[4:6] + call[1:3], chat[6:] + call[3:]]
    words, outcomes = await _first_words(clean_db, batches, saved)
    assert words == [["SELECT", "WITH"], ["WITH"], ["WITH"], ["WITH"]], words
    assert not any(o.locked_after_conflict for o in outcomes)
    chat_state, chat_version = await _session(clean_db, "chat-s")
    call_state, call_version = await _session(clean_db, "call-s")
    assert (chat_state.events_applied, chat_version) == (len(chat), 4)
    assert (call_state.events_applied, call_version) == (len(call), 3)
    assert call_state.agent_id is not None and call_state.ended_at is not None
    assert chat_state.end_user_messages == 3
    assert len(saved) == 0  # ended sessions are not kept


async def test_a_session_neither_remembered_nor_begun_by_the_batch_is_read(clean_db):
    queued, assigned, *rest = (to_event(e) for e in call_events("call-n", end_user_id="eu-n"))
    async with raw.connection(clean_db) as pg:
        await apply_batch(pg, [queued], "sandbox")  # another consumer, before this one
    saved = SavedStates()
    words, outcomes = await _first_words(clean_db, [[assigned], rest], saved)
    assert words == [["SELECT", "WITH"], ["WITH"]]
    state, version = await _session(clean_db, "call-n")
    assert (state.events_applied, version) == (4, 3)


async def test_a_state_saved_by_another_consumer_after_it_was_remembered_is_not_overwritten(clean_db):
    queued, assigned, connected, ended = (to_event(e) for e in call_events("call-o", end_user_id="eu-o"))
    saved = SavedStates()
    async with raw.connection(clean_db) as this, raw.connection(clean_db) as other:
        await apply_batch(this, [queued], "sandbox", saved=saved)
        await apply_batch(other, [assigned], "sandbox")  # the partition's other owner, in a rebalance
        outcome = await apply_batch(this, [connected], "sandbox", saved=saved)
        assert outcome.locked_after_conflict
        after = await apply_batch(this, [ended], "sandbox", saved=saved)  # remembered again: no conflict
        assert not after.locked_after_conflict
    state, version = await _session(clean_db, "call-o")
    # The remembered state (queued alone) was not saved over the one `assigned` made.
    assert (state.events_applied, version) == (4, 4)
    assert state.agent_id is not None and state.connected_at is not None and state.ended_at is not None


async def test_a_session_presumed_new_that_exists_is_read_the_locked_way(clean_db):
    """A re-queued session this consumer never saw (another replica began it): its
    `queued` event presumes it new, and the write finds its row."""
    documents = call_events("call-q", end_user_id="eu-q")
    events = [to_event(e) for e in documents]
    requeued = to_event({**documents[0], "event_id": "call-q-requeued"})
    saved = SavedStates()
    async with raw.connection(clean_db) as this, raw.connection(clean_db) as other:
        await apply_batch(this, [to_event(e) for e in chat_events("chat-q", end_user_id="eu-q2")][:1],
                          "sandbox", saved=saved)  # the settings are known now
        await apply_batch(other, events[:2], "sandbox")
        outcome = await apply_batch(this, [requeued], "sandbox", saved=saved)
    assert outcome.locked_after_conflict and outcome.applied == 1
    state, version = await _session(clean_db, "call-q")
    assert (state.events_applied, version) == (3, 2)
    assert state.agent_id is not None


async def _save_settings(engine, **document) -> int:
    async with engine.begin() as conn:
        return (await settings_repo.insert_version(conn, RecordSettings(**document), {}, "test")).version


async def test_a_settings_version_saved_after_the_settings_were_remembered_decides_the_next_batch(clean_db):
    first = [to_event(e) for e in call_events("call-v1", end_user_id="eu-v1")]
    second = [to_event(e) for e in call_events("call-v2", end_user_id="eu-v2")]
    saved = SavedStates()
    async with raw.connection(clean_db) as pg:
        before = await apply_batch(pg, first, "sandbox", saved=saved)
        version = await _save_settings(clean_db)
        after = await apply_batch(pg, second, "sandbox", saved=saved)
        again = await apply_batch(pg, [to_event(e) for e in call_events("call-v3", end_user_id="eu-v3")],
                                  "sandbox", saved=saved)
    assert {d.settings_version for d in before.decisions} == {None}
    assert after.locked_after_conflict
    assert after.decisions and {d.settings_version for d in after.decisions} == {version}
    assert not again.locked_after_conflict and {d.settings_version for d in again.decisions} == {version}
    async with clean_db.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT DISTINCT settings_version FROM decisions WHERE session_id = 'call-v2'"))).scalars().all()
        payloads = (await conn.execute(text(
            "SELECT payload->>'settings_version' FROM outbox WHERE session_id = 'call-v2' AND kind = 'record'"
        ))).scalars().all()
    assert rows == [version] and payloads == [str(version)]


async def test_tables_emptied_under_a_remembering_consumer_fold_each_event_once(clean_db):
    events = [to_event(e) for e in chat_events("chat-t", end_user_messages=2, end_user_id="eu-t")]
    saved = SavedStates()
    async with raw.connection(clean_db) as pg:
        await apply_batch(pg, events[:3], "sandbox", saved=saved)
        await pg.execute("TRUNCATE sessions, processed_events, session_messages, decisions, outbox CASCADE")
        # The same events again (the stream replayed into an emptied database), then the rest.
        replay = await apply_batch(pg, events[1:3], "sandbox", saved=saved)
        rest = await apply_batch(pg, events[3:], "sandbox", saved=saved)
    assert replay.locked_after_conflict and not rest.locked_after_conflict
    state, _ = await _session(clean_db, "chat-t")
    # The remembered state (3 events) is not the base: only what the database holds is.
    assert state.events_applied == len(events) - 1
    assert state.end_user_messages == 2


async def test_a_batch_in_the_callers_transaction_is_remembered_only_once_read_again(clean_db):
    """Rolled back by its caller, a batch's states were never saved: the next batch must
    not fold from them."""
    queued, assigned, connected, ended = (to_event(e) for e in call_events("call-x", end_user_id="eu-x"))
    saved = SavedStates()
    async with raw.connection(clean_db) as pg:
        await apply_batch(pg, [queued], "sandbox", saved=saved)
        transaction = pg.transaction()
        await transaction.start()
        await apply_batch(pg, [assigned], "sandbox", saved=saved)
        await transaction.rollback()
        outcome = await apply_batch(pg, [connected, ended], "sandbox", saved=saved)
    assert not outcome.locked_after_conflict
    state, version = await _session(clean_db, "call-x")
    assert (state.events_applied, version) == (3, 2)
    assert state.assigned_at is None  # `assigned` was rolled back
