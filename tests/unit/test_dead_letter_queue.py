"""The dead-letter queue's delivery policy, against a producer double that fails the way
aiokafka's does: a copy that keeps failing the same way is replaced by a stand-in; a
copy refused for good is replaced at once; when even a stand-in fails, the caller is told
the broker is unreachable (and retries its batch). Letters are counted when delivered."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from app import metrics
from app.adapters.kafka.dead_letters import DeadLetter, DeadLetterQueue, DeadLetterUndeliverable


class Producer:
    """Accepts messages up to `limit` bytes; larger ones fail with `large_error`; with
    `down`, every send times out."""

    def __init__(self, limit: int = 1_000_000, large_error: type[Exception] = KafkaTimeoutError, down: bool = False):
        self.limit, self.large_error, self.down = limit, large_error, down
        self.sent: list[tuple[bytes | None, bytes, dict]] = []
        self.attempts = 0

    async def send(self, topic, key=None, value=None, headers=None):
        self.attempts += 1
        future = asyncio.get_running_loop().create_future()
        if self.down:
            future.set_exception(KafkaTimeoutError())
        elif len(value or b"") > self.limit:
            future.set_exception(self.large_error())
        else:
            self.sent.append((key, value, dict(headers or [])))
            future.set_result(None)
        return future


def letter(value: bytes, reason: str = "schema: session.id: Field required") -> DeadLetter:
    return DeadLetter("events", 1, 42, b"k-1", value, (("traceparent", b"00-1"),), reason)


def counted() -> float:
    return sum(sample.value for family in metrics.events_dead_lettered.collect() for sample in family.samples
               if sample.name.endswith("_total"))


async def test_a_copy_that_fits_keeps_key_value_and_headers_plus_the_error():
    producer, before = Producer(), counted()
    await DeadLetterQueue(producer, "dlq").deliver([letter(b"{bad")])
    assert producer.sent == [(b"k-1", b"{bad", {"traceparent": b"00-1", "error": b"schema: session.id: Field required"})]
    assert counted() - before == 1


async def test_a_copy_failing_the_same_way_every_time_becomes_a_stand_in():
    producer, before = Producer(limit=1000), counted()
    queue = DeadLetterQueue(producer, "dlq", copy_attempts=3, retry_delay_seconds=0.01)
    await queue.deliver([letter(b"x" * 5000)])
    assert producer.attempts == 4  # three copies, one stand-in
    [(key, value, headers)] = producer.sent
    body = orjson.loads(value)
    assert key == b"k-1" and headers["stand_in"] == b"true" and body["size"] == 5000 and body["offset"] == 42
    assert "KafkaTimeoutError" in body["why"]
    assert counted() - before == 1


async def test_a_copy_refused_for_good_becomes_a_stand_in_at_once():
    producer = Producer(limit=1000, large_error=MessageSizeTooLargeError)
    await DeadLetterQueue(producer, "dlq", retry_delay_seconds=0.01).deliver([letter(b"x" * 5000)])
    assert producer.attempts == 2
    assert orjson.loads(producer.sent[0][1])["stand_in"] is True


async def test_when_not_even_a_stand_in_gets_through_the_caller_retries():
    producer, before = Producer(down=True), counted()
    with pytest.raises(DeadLetterUndeliverable):
        await DeadLetterQueue(producer, "dlq", retry_delay_seconds=0.01).deliver([letter(b"{bad")])
    assert counted() == before
