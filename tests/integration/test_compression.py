"""Compressed batches (issue 9, item 7): producers commonly compress. Each codec Kafka
offers is read end to end; a batch that still cannot be decoded is stepped over with a
stand-in letter naming its partition and offsets, and the service lives on."""

from __future__ import annotations

import aiokafka.codec
import httpx
import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy import select

from app.adapters.db.schema import sandbox_records
from tests.factories import call_events
from tests.helpers import eventually, run_in_process
from tests.integration.kafka_helpers import read_all

CODECS = ("gzip", "snappy", "lz4", "zstd")


async def _publish(bootstrap: str, topic: str, documents: list[dict], *, key: bytes | None = None,
                   compression: str | None = None) -> list[int]:
    """Publish in one batch (all sent before any is awaited); returns the offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=compression, linger_ms=20)
    await producer.start()
    try:
        deliveries = [
            await producer.send(topic, key=key or d["session"]["id"].encode(), value=orjson.dumps(d))
            for d in documents
        ]
        return [(await delivery).offset for delivery in deliveries]
    finally:
        await producer.stop()


async def _records(engine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(select(sandbox_records.c.external_id))).scalars())


async def test_every_codec_kafka_offers_is_read_end_to_end(clean_db, make_settings, kafka_bootstrap, topics):
    async with run_in_process(make_settings()):
        for codec in CODECS:
            await _publish(kafka_bootstrap, topics.events, call_events(f"compressed-{codec}"), compression=codec)

        async def all_made():
            made = await _records(clean_db)
            return made if made == {f"compressed-{codec}" for codec in CODECS} else None

        await eventually(all_made, timeout=30)


async def test_a_batch_that_cannot_be_decoded_is_stepped_over_with_a_stand_in_letter(
    clean_db, make_settings, kafka_bootstrap, topics, monkeypatch
):
    key = b"one-partition"
    before = await _publish(kafka_bootstrap, topics.events, call_events("plain-before"), key=key)
    undecodable = await _publish(kafka_bootstrap, topics.events, call_events("lz4-batch"), key=key,
                                 compression="lz4")
    after = await _publish(kafka_bootstrap, topics.events, call_events("plain-after"), key=key)
    assert undecodable == list(range(before[-1] + 1, after[0]))
    # As if lz4's library were missing in the service (the original failure).
    monkeypatch.setattr(aiokafka.codec, "has_lz4", lambda: False)
    async with run_in_process(make_settings()) as service:
        async def both_plain_sessions():
            made = await _records(clean_db)
            return made if {"plain-before", "plain-after"} <= made else None

        made = await eventually(both_plain_sessions, timeout=60)
        letters = await read_all(kafka_bootstrap, topics.dlq, expect=1)
        async with httpx.AsyncClient(base_url=service.base_url, timeout=5) as client:
            assert (await client.get("/readyz")).status_code == 200
        assert not service.task.done()
    assert made == {"plain-before", "plain-after"}
    assert len(letters) == 1
    body = orjson.loads(letters[0].value)
    assert body["stand_in"] is True
    assert body["topic"] == topics.events
    assert (body["first_offset"], body["last_offset"]) == (undecodable[0], undecodable[-1])
    assert "lz4" in body["error"] and dict(letters[0].headers)["error"].decode().startswith("undecodable batch")


async def test_the_service_has_every_codec():
    assert all(getattr(aiokafka.codec, f"has_{codec}")() for codec in CODECS)


async def test_an_undecodable_batch_at_the_end_of_its_partition_gets_one_stand_in_for_its_whole_range(
    clean_db, make_settings, kafka_bootstrap, topics, monkeypatch
):
    key = b"last-batch"
    undecodable = await _publish(kafka_bootstrap, topics.events, call_events("lz4-last"), key=key, compression="lz4")
    monkeypatch.setattr(aiokafka.codec, "has_lz4", lambda: False)
    async with run_in_process(make_settings()):
        letters = await read_all(kafka_bootstrap, topics.dlq, expect=1, timeout=60)
        after = await _publish(kafka_bootstrap, topics.events, call_events("plain-later"), key=key)
        await eventually(lambda: _records(clean_db), timeout=60)
        more = await read_all(kafka_bootstrap, topics.dlq, expect=2, timeout=3)
    assert after[0] == undecodable[-1] + 1
    assert len(more) == 1, [orjson.loads(m.value) for m in more]
    body = orjson.loads(letters[0].value)
    assert (body["first_offset"], body["last_offset"]) == (undecodable[0], undecodable[-1])
