"""A consumer batch outside a transaction: one read and one checked write, nothing locked.

Another consumer (the partition's previous owner, during a rebalance) may apply some of
the same events, or other events of the same sessions, between the read and the write.
The write then fails whole and the batch is applied the locked way: no update is lost,
no event is applied twice. The other consumer here is a locked batch left uncommitted
until the unlocked write waits for it."""

from __future__ import annotations

import asyncio

import orjson
from sqlalchemy import text

from app.adapters.db import raw
from app.domain.session import SessionState
from app.service.consume import apply_batch
from tests.factories import call_events, chat_events, to_event
from tests.helpers import eventually


async def _session(engine, session_id: str) -> tuple[SessionState, int]:
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT state, state_version FROM sessions WHERE session_id = :s"),
                                  {"s": session_id})).one()
    return SessionState.from_document(row.state), row.state_version


async def _count(engine, sql: str) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar_one()


async def test_a_batch_is_one_read_and_one_write_and_writes_every_part(clean_db):
    statements: list[str] = []
    events = [to_event(e) for e in chat_events("chat-u", end_user_messages=3, end_user_id="eu-u")]
    async with raw.connection(clean_db) as pg:
        pg.add_query_logger(lambda logged: statements.append(logged.query))
        first = await apply_batch(pg, events[:3], "sandbox")
        second = await apply_batch(pg, events[3:], "sandbox")
        again = await apply_batch(pg, events, "sandbox")
        assert not pg.is_in_transaction()
        await asyncio.sleep(0.05)  # asyncpg calls its query loggers soon after, not at once
    # a read and a write each, no BEGIN, no COMMIT, no lock; a replay fails its write
    # and goes the locked way (BEGIN, the dedup rows, COMMIT: nothing left to lock)
    assert [s.split()[0] for s in statements] == ["SELECT", "WITH"] * 3 + ["BEGIN;", "WITH", "COMMIT;"], statements
    assert not any("FOR UPDATE" in s for s in statements)
    assert (first.applied, second.applied, again.applied, again.duplicates) == (3, len(events) - 3, 0, len(events))
    assert (first.locked_after_conflict, second.locked_after_conflict, again.locked_after_conflict) == (
        False, False, True)
    state, version = await _session(clean_db, "chat-u")
    assert (state.events_applied, version) == (len(events), 2)
    assert await _count(clean_db, "SELECT count(*) FROM processed_events") == len(events)
    assert await _count(clean_db, "SELECT count(*) FROM session_messages") == 4
    assert await _count(clean_db, "SELECT count(*) FROM outbox") == len(first.outbox_rows + second.outbox_rows) == 2
    assert await _count(clean_db, "SELECT count(*) FROM decisions") == len(first.decisions + second.decisions)


async def _blocked(engine, pid: int) -> bool:
    async with engine.connect() as conn:
        waiting = (await conn.execute(text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :p"),
                                      {"p": pid})).scalar()
    return waiting == "Lock"


async def _race(engine, other_batch, this_batch):
    """`other_batch` applied the locked way and held uncommitted until `this_batch`'s
    unlocked write waits for it; then both finish. Returns their outcomes."""
    async with raw.connection(engine) as other, raw.connection(engine) as this:
        transaction = other.transaction()
        await transaction.start()
        other_outcome = await apply_batch(other, other_batch, "sandbox")
        running = asyncio.create_task(apply_batch(this, this_batch, "sandbox"))
        await eventually(lambda: _blocked(engine, this.get_server_pid()), timeout=10)
        await transaction.commit()
        return other_outcome, await running


async def test_a_state_saved_by_another_consumer_meanwhile_is_not_overwritten(clean_db):
    queued, assigned, connected, ended = (to_event(e) for e in call_events("call-r", end_user_id="eu-r"))
    async with raw.connection(clean_db) as pg:
        await apply_batch(pg, [queued], "sandbox")
    other, this = await _race(clean_db, [assigned], [connected, ended])
    assert (other.applied, this.applied, this.duplicates) == (1, 2, 0)
    assert this.locked_after_conflict and not other.locked_after_conflict
    state, version = await _session(clean_db, "call-r")
    # Without the version check the unlocked write saved its state, folded from `queued`
    # alone, over the one that `assigned` made: 3 events applied, no agent.
    assert state.events_applied == 4
    assert state.agent_id is not None and state.ended_at is not None
    assert version == 3
    assert await _count(clean_db, "SELECT count(*) FROM processed_events") == 4


async def test_an_event_applied_by_another_consumer_meanwhile_is_a_duplicate(clean_db):
    events = [to_event(e) for e in call_events("call-d", end_user_id="eu-d")]
    async with raw.connection(clean_db) as pg:
        first = await apply_batch(pg, events[:1], "sandbox")
    other, this = await _race(clean_db, events[1:], events[1:])
    assert (other.applied, this.applied, this.duplicates) == (3, 0, 3)
    assert this.locked_after_conflict
    assert this.outbox_rows == [] and this.decisions == []
    state, version = await _session(clean_db, "call-d")
    assert (state.events_applied, version) == (4, 2)
    assert await _count(clean_db, "SELECT count(*) FROM outbox") == len(first.outbox_rows + other.outbox_rows)
    assert await _count(clean_db, "SELECT count(*) FROM decisions") == len(first.decisions + other.decisions)


async def test_a_replayed_poll_is_counted_as_applied_the_locked_way(clean_db):
    from aiokafka import TopicPartition
    from aiokafka.structs import ConsumerRecord

    from app import metrics
    from app.service.ingest import PartitionIngest
    from tests.factories import call_events

    documents = call_events("call-m", end_user_id="eu-m")
    poll = {TopicPartition("events", 0): [
        ConsumerRecord("events", 0, n, 0, 0, None, orjson.dumps(d), None, 0, 0, []) for n, d in enumerate(documents)]}
    ingest = PartitionIngest(clean_db, "sandbox")

    def counted() -> tuple[float, float, float]:
        return (metrics.consumer_batches_locked._value.get(), metrics.events_consumed._value.get(),
                metrics.events_duplicate._value.get())

    before = counted()
    await ingest.apply_poll(poll)
    after_first = counted()
    await ingest.apply_poll(poll)  # the same poll again, as after a crash before the offsets' commit
    after_replay = counted()
    assert [b - a for a, b in zip(before, after_first, strict=True)] == [0, len(documents), 0]
    assert [b - a for a, b in zip(after_first, after_replay, strict=True)] == [1, 0, len(documents)]


async def test_a_replayed_event_is_skipped_not_refused_when_the_state_machine_would_refuse_it_again(
    clean_db, monkeypatch
):
    """The unlocked way folds every event of the batch before it knows which were seen;
    a state machine that refused an event applied twice must not have a replay
    dead-lettered (the locked way skips duplicates before folding)."""
    from app.service import consume

    events = [to_event(e) for e in call_events("call-x", end_user_id="eu-x")]
    async with raw.connection(clean_db) as pg:
        await apply_batch(pg, events, "sandbox")
        folded = consume.apply_event

        def refusing_twice(state, event):
            if state is not None and state.events_applied >= len(events):
                raise ValueError("applied twice")
            return folded(state, event)

        monkeypatch.setattr(consume, "apply_event", refusing_twice)
        replay = await apply_batch(pg, events[-1:], "sandbox")
    assert (replay.applied, replay.duplicates, replay.locked_after_conflict) == (0, 1, True)
