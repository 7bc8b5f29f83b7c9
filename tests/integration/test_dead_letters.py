"""Dead letters always complete (issue 9, item 1): a large invalid message is copied
whole; one the dead-letter topic refuses is replaced by a stand-in letter; either way
the partition moves on and the letter is counted once, when delivered."""

from __future__ import annotations

import hashlib

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from app.adapters.db.schema import sandbox_records
from tests.factories import call_events
from tests.helpers import eventually, run_in_process
from tests.integration.kafka_helpers import read_all
from tests.integration.test_consumer import count


async def _publish_on_one_key(bootstrap: str, topic: str, key: bytes, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


async def _dead_lettered_total(base_url: str) -> float:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        text = (await client.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("crm_records_events_dead_lettered_total{"))


async def test_an_invalid_message_over_one_mebibyte_is_copied_whole_and_the_partition_moves_on(
    clean_db, make_settings, kafka_bootstrap, topics
):
    poison = b'{"schema_version": 1, "padding": "' + b"x" * (1024 * 1024 + 100) + b'"}'
    good = [orjson.dumps(d) for d in call_events("after-poison")]
    async with run_in_process(make_settings()) as service:
        before = await _dead_lettered_total(service.base_url)  # one registry per process
        await _publish_on_one_key(kafka_bootstrap, topics.events, b"one-key", [poison, *good])
        await eventually(lambda: count(clean_db, sandbox_records), timeout=30)
        letters = await read_all(kafka_bootstrap, topics.dlq, expect=1)
        assert await _dead_lettered_total(service.base_url) - before == 1
    assert len(letters) == 1
    assert letters[0].key == b"one-key" and letters[0].value == poison
    assert dict(letters[0].headers)["error"].decode().startswith("schema")
    assert "stand_in" not in dict(letters[0].headers)


async def test_a_copy_the_dead_letter_topic_refuses_becomes_a_stand_in_letter(
    clean_db, make_settings, kafka_bootstrap, topics
):
    # The dead-letter topic takes at most 64 KiB here; the invalid message is larger.
    poison = b"not json at all " + b"y" * (100 * 1024)
    good = [orjson.dumps(d) for d in call_events("after-refused")]
    async with run_in_process(make_settings(kafka_max_message_bytes=64 * 1024)) as service:
        before = await _dead_lettered_total(service.base_url)
        await _publish_on_one_key(kafka_bootstrap, topics.events, b"key-2", [poison, *good])
        await eventually(lambda: count(clean_db, sandbox_records), timeout=30)
        letters = await read_all(kafka_bootstrap, topics.dlq, expect=1)
        assert await _dead_lettered_total(service.base_url) - before == 1
    assert len(letters) == 1
    letter = letters[0]
    headers = dict(letter.headers)
    assert headers["error"].decode().startswith("invalid JSON")
    assert headers["stand_in"] == b"true"
    assert letter.key == b"key-2"
    body = orjson.loads(letter.value)
    assert body["stand_in"] is True
    assert body["topic"] == topics.events and isinstance(body["partition"], int) and body["offset"] == 0
    assert body["size"] == len(poison)
    assert body["sha256"] == hashlib.sha256(poison).hexdigest()
    assert body["key"] == "key-2"
    assert body["error"] == headers["error"].decode()
    assert "MessageSizeTooLarge" in body["why"]


async def test_an_event_the_domain_code_raises_on_is_dead_lettered_and_the_rest_applied(
    clean_db, make_settings, kafka_bootstrap, topics, monkeypatch
):
    from app.service import consume

    real_decide = consume.decide

    def decide_with_a_bug(state, settings):
        if state.session_id == "domain-poison":
            raise ZeroDivisionError("division by zero")  # a bug only this session's data reaches
        return real_decide(state, settings)

    monkeypatch.setattr(consume, "decide", decide_with_a_bug)
    poison = call_events("domain-poison")[:1]
    good = call_events("after-domain-poison")
    async with run_in_process(make_settings()):
        await _publish_on_one_key(kafka_bootstrap, topics.events, b"k", [orjson.dumps(d) for d in poison + good])
        await eventually(lambda: count(clean_db, sandbox_records), timeout=30)
        letters = await read_all(kafka_bootstrap, topics.dlq, expect=1)
    assert [m.value for m in letters] == [orjson.dumps(poison[0])]
    assert dict(letters[0].headers)["error"] == b"could not be applied: ZeroDivisionError: division by zero"
