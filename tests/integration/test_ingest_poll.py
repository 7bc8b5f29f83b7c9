"""A poll's batches of several partitions are applied in one transaction (a handful of
statements per poll, however many partitions the poll brought), and a partition whose
data PostgreSQL refuses still costs the others nothing: the refused event alone is
dead-lettered, every other event of every partition is applied."""

from __future__ import annotations

import orjson
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy import text

from app.service.ingest import PartitionIngest
from tests.factories import call_events, event_doc, header


def _message(partition: int, offset: int, document: dict) -> ConsumerRecord:
    return ConsumerRecord("events", partition, offset, 0, 0, None, orjson.dumps(document), None, 0, 0, [])


def _poll(sessions_by_partition: dict[int, list[list[dict]]]) -> dict[TopicPartition, list[ConsumerRecord]]:
    batches = {}
    for partition, sessions in sessions_by_partition.items():
        documents = [d for session in sessions for d in session]
        batches[TopicPartition("events", partition)] = [_message(partition, n, d) for n, d in enumerate(documents)]
    return batches


async def _transactions(engine) -> dict[str, object]:
    """Each applied event's transaction start (processed_events.first_seen_at is now())."""
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT event_id, first_seen_at FROM processed_events"))).all()
    return dict(rows)


async def test_the_partitions_of_one_poll_are_applied_in_one_transaction(clean_db):
    ingest = PartitionIngest(clean_db, "sandbox")
    poll = _poll({p: [call_events(f"poll-{p}-{n}", end_user_id=f"eu-{p}-{n}") for n in range(2)] for p in range(4)})
    letters = await ingest.apply_poll(poll)
    assert letters == {tp: [] for tp in poll}
    started = await _transactions(clean_db)
    assert len(started) == sum(len(messages) for messages in poll.values())
    assert len(set(started.values())) == 1, "one transaction per partition, not per poll"


async def test_a_refused_event_in_one_partition_is_dead_lettered_alone(clean_db):
    ingest = PartitionIngest(clean_db, "sandbox")
    # PostgreSQL refuses a NUL character in text (SQLSTATE class 22): the data, not the database.
    broken = event_doc(header("poll-bad", medium="chat"), "message", 2, text="broken \u0000 text")
    poll = _poll({0: [call_events("poll-ok-0")], 1: [call_events("poll-ok-1a"), [broken], call_events("poll-ok-1b")],
                  2: [call_events("poll-ok-2")]})
    letters = await ingest.apply_poll(poll)
    bad_tp = TopicPartition("events", 1)
    assert {tp: [letter.offset for letter in found] for tp, found in letters.items()} == {
        tp: ([len(call_events("poll-ok-1a"))] if tp == bad_tp else []) for tp in poll
    }
    assert "could not be stored" in letters[bad_tp][0].reason
    started = await _transactions(clean_db)
    assert len(started) == sum(len(messages) for messages in poll.values()) - 1
    assert broken["event_id"] not in started
