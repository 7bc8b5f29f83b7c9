"""Publishing to and reading from the test broker."""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def publish(bootstrap: str, topic: str, documents: list[Any], *, raw: list[tuple[bytes | None, bytes]] = ()):
    """Publish event documents keyed by session id, then any raw (key, value) pairs."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        for document in documents:
            await producer.send(topic, key=document["session"]["id"].encode(), value=orjson.dumps(document))
        for key, value in raw:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, *, expect: int, timeout: float = 20.0):
    """Read a topic from the start until `expect` messages arrived (or the timeout)."""
    import asyncio

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    messages = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(messages) < expect and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                messages.extend(records)
    finally:
        await consumer.stop()
    return messages
