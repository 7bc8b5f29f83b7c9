"""`python -m app dlq list|replay` against a real broker: letters by reason with samples
(and no end user's contact), a dry run that publishes nothing, and a replay that makes
the record once, however often it is run."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select

from app import metrics
from app.adapters.db.schema import sandbox_records
from tests.factories import call_events
from tests.helpers import eventually, run_in_process
from tests.integration.kafka_helpers import read_all
from tests.integration.service_process import PROJECT, settings_env


def _cli(settings, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "app", "dlq", *args], cwd=PROJECT, env=settings_env(settings),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


async def _put_letters(bootstrap: str, topic: str) -> list[dict]:
    events = call_events("dlq-call-1", end_user_email="hidden.person@example.org")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for document in events:
            await producer.send_and_wait(topic, key=b"dlq-call-1", value=orjson.dumps(document),
                                         headers=[("error", b"unknown schema_version: 1"), ("source", b"ivr")])
        for n in range(3):
            await producer.send_and_wait(topic, key=None, value=f"{{not json {n} hidden.person@example.org".encode(),
                                         headers=[("error", b"invalid JSON: unexpected character")])
        stand_in = {"stand_in": True, "topic": "ccai.session-events", "partition": 0, "offset": 7, "size": 2000000}
        await producer.send_and_wait(topic, key=None, value=orjson.dumps(stand_in),
                                     headers=[("error", b"too large: MessageSizeTooLargeError"), ("stand_in", b"true")])
    finally:
        await producer.stop()
    return events


async def _messages_in(bootstrap: str, topic: str) -> int:
    # Counted by reading: the embedded broker's end offsets undercount batched sends.
    return len(await read_all(bootstrap, topic, expect=1000, timeout=3.0))


def _duplicates() -> float:
    """Events the in-process service has seen again and ignored, since the process started."""
    return metrics.REGISTRY.get_sample_value("crm_records_events_duplicate_total") or 0.0


async def _records(engine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(sandbox_records))).scalar_one()


async def test_list_dry_run_and_idempotent_replay(clean_db, make_settings, kafka_bootstrap, topics):
    settings = make_settings()
    await _put_letters(kafka_bootstrap, topics.dlq)

    listing = await asyncio.to_thread(_cli, settings, "list")
    assert "8 dead letter(s)" in listing
    assert "unknown schema_version: 4" in listing and "invalid JSON: 3" in listing
    assert "too large: 1, 1 stand-in(s)" in listing
    assert "session=dlq-call-1" in listing and "event_type=assigned" in listing
    assert "hidden.person" not in listing

    dry = await asyncio.to_thread(_cli, settings, "replay", "--reason", "unknown schema_version", "--dry-run")
    assert "would re-publish 4 of 8" in dry
    assert await _messages_in(kafka_bootstrap, topics.events) == 0

    async with run_in_process(settings):
        done = await asyncio.to_thread(_cli, settings, "replay", "--reason", "unknown schema_version", "--since", "1h")
        assert "re-published 4 letter(s)" in done
        await eventually(lambda: _one_record(clean_db), timeout=30)
        # Again: the same event ids, each seen by the consumer and ignored, nothing new.
        seen_twice = _duplicates()
        await asyncio.to_thread(_cli, settings, "replay", "--reason", "unknown schema_version")
        await eventually(lambda: _duplicates() >= seen_twice + 4, timeout=30)
        assert await _records(clean_db) == 1
    assert await _messages_in(kafka_bootstrap, topics.events) == 8  # invalid JSON and the stand-in stayed put

    nothing = await asyncio.to_thread(_cli, settings, "replay", "--since", "2099-01-01T00:00:00Z", "--dry-run")
    assert "would re-publish 0 of" in nothing


async def _one_record(engine) -> bool:
    return await _records(engine) == 1
