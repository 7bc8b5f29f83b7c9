"""The consumer through a real broker: dead letters, duplicate delivery, offsets."""

from __future__ import annotations

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select

from app.adapters.db.schema import processed_events, sandbox_records
from tests.factories import call_events, event_doc, header
from tests.helpers import eventually, run_in_process
from tests.integration.kafka_helpers import publish, read_all


async def count(engine, table) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar()


async def test_invalid_messages_go_to_the_dead_letter_topic_and_the_partition_moves_on(
    clean_db, make_settings, kafka_bootstrap, topics
):
    schema_failure = event_doc(header("bad-1"), "queued", 0)
    del schema_failure["session"]["queue"]["id"]
    unknown_version = {**event_doc(header("bad-2"), "queued", 0), "schema_version": 2}
    message_without_body = event_doc(header("bad-3", medium="chat"), "queued", 0)
    message_without_body["event_type"] = "message"
    nul_text = event_doc(header("bad-4", medium="chat"), "message", 2, text="broken \u0000 text")
    invalid = [
        (b"bad-0", b"{not json"),
        (b"bad-1", orjson.dumps(schema_failure)),
        (b"bad-2", orjson.dumps(unknown_version)),
        (b"bad-3", orjson.dumps(message_without_body)),
        (b"bad-4", orjson.dumps(nul_text)),
    ]
    good = call_events("good-1")
    async with run_in_process(make_settings()):
        # All on the same key, so the good events sit behind the bad ones in one partition.
        await publish(kafka_bootstrap, topics.events, [],
                      raw=[(b"same", value) for _, value in invalid]
                      + [(b"same", orjson.dumps(d)) for d in good])
        await eventually(lambda: count(clean_db, sandbox_records))

    letters = await read_all(kafka_bootstrap, topics.dlq, expect=len(invalid))
    assert sorted(m.value for m in letters) == sorted(v for _, v in invalid)
    assert all(m.key == b"same" for m in letters)
    reasons = {m.value: dict(m.headers)["error"].decode() for m in letters}
    assert reasons[b"{not json"].startswith("invalid JSON")
    assert "session.queue.id" in reasons[invalid[1][1]]
    assert reasons[invalid[2][1]] == "unknown schema_version: 2"
    assert "message" in reasons[invalid[3][1]]
    assert reasons[invalid[4][1]].startswith("could not be stored")
    assert await count(clean_db, processed_events) == len(good)


async def test_duplicate_delivery_changes_nothing(clean_db, make_settings, kafka_bootstrap, topics):
    events = call_events("dup-1") + call_events("dup-2")
    async with run_in_process(make_settings()) as service:
        await publish(kafka_bootstrap, topics.events, events)
        await eventually(lambda: _records_with_notes(clean_db, 2))
        async with service.client() as client:
            before = (await client.get("/api/sessions/dup-1")).json()
        # Everything again, later, and once more in a shuffled order.
        await publish(kafka_bootstrap, topics.events, events + events[::-1])
        group_offsets = await eventually(lambda: _committed(service.settings, len(events) * 3))

        async def settled_trace():
            async with service.client() as client:
                trace = (await client.get("/api/sessions/dup-1")).json()
            return trace if {o["status"] for o in trace["outbox"]} == {"done"} else None

        after = await eventually(settled_trace)
    assert group_offsets == len(events) * 3
    assert await count(clean_db, sandbox_records) == 2
    assert await count(clean_db, processed_events) == len(events)
    assert after["state"] == before["state"]
    assert after["decisions"] == before["decisions"]
    # One record row and one note row (plus the outcome events they published), all done.
    assert all(o["status"] == "done" for o in after["outbox"]), after["outbox"]
    assert sorted(o["kind"] for o in after["outbox"] if o["kind"] != "publish") == ["ended_note", "record"]
    assert len([o for o in after["outbox"] if o["kind"] == "publish"]) == 2  # record.created, record.updated


async def _records_with_notes(engine, expected: int) -> bool:
    from app.adapters.db.schema import sandbox_notes

    return await count(engine, sandbox_records) == expected and await count(engine, sandbox_notes) == expected


async def _committed(settings, expected: int) -> int | None:
    """The consumer group's committed offsets, summed over partitions, once they reach `expected`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=settings.kafka_group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches metadata
        partitions = consumer.partitions_for_topic(settings.kafka_topic) or set()
        total = 0
        for partition in partitions:
            total += await consumer.committed(TopicPartition(settings.kafka_topic, partition)) or 0
    finally:
        await consumer.stop()
    return total if total >= expected else None
