"""Reads the dead-letter topic as it is now (from the start, or from a time, to the end
offsets found when reading began), and re-publishes letters to the input topic."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.settings import Settings

REPLAY_HEADER = "dlq_replayed_from"


@dataclass(frozen=True, slots=True)
class StoredLetter:
    partition: int
    offset: int
    dead_lettered_at: datetime
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def reason(self) -> str:
        for key, value in self.headers:
            if key == "error":
                return (value or b"").decode("utf-8", "replace")
        return "(no error header)"

    @property
    def stand_in(self) -> bool:
        """A stand-in names a message too large (or undecodable) to copy: its bytes are not here."""
        return any(key == "stand_in" and value == b"true" for key, value in self.headers)

    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if k not in ("error", "stand_in", REPLAY_HEADER)]


async def read_letters(settings: Settings, since: datetime | None = None, timeout: float = 30.0) -> list[StoredLetter]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.resolved_bootstrap_servers(), group_id=None, enable_auto_commit=False,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        # Letters keep the original message whole, however large the broker allowed it.
        max_partition_fetch_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    letters: list[StoredLetter] = []
    try:
        await consumer.topics()  # fetches the cluster's metadata
        partitions = consumer.partitions_for_topic(settings.kafka_dlq_topic) or set()
        tps = [TopicPartition(settings.kafka_dlq_topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        if since is not None:
            found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
            starts = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
        for tp in tps:
            consumer.seek(tp, starts[tp])
        # The end offsets found now bound what must be read; reading goes on until a poll
        # finds nothing more, because some brokers (Tansu) report a batch's base offset + 1
        # as the end, short of the batch's last letters.
        position = dict(starts)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"could not read the dead-letter topic to its end within {timeout:.0f} s")
            batches = await consumer.getmany(timeout_ms=300 if letters else 1000)
            for tp, messages in batches.items():
                for message in messages:
                    position[tp] = message.offset + 1
                    letters.append(StoredLetter(
                        tp.partition, message.offset,
                        datetime.fromtimestamp(message.timestamp / 1000, tz=UTC),
                        message.key, message.value, tuple(message.headers or ()),
                    ))
            if not any(batches.values()) and all(position[tp] >= ends[tp] for tp in tps):
                break
    finally:
        await consumer.stop()
    letters.sort(key=lambda letter: (letter.dead_lettered_at, letter.partition, letter.offset))
    return letters


async def republish(settings: Settings, letters: Sequence[StoredLetter]) -> int:
    """Publish each letter's original key, value and headers to the input topic."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.resolved_bootstrap_servers(), acks="all", enable_idempotence=False,
        max_request_size=64 * 1024 * 1024,
    )
    await producer.start()
    try:
        deliveries = []
        for letter in letters:
            origin = f"{settings.kafka_dlq_topic}/{letter.partition}/{letter.offset}".encode()
            deliveries.append(await producer.send(
                settings.kafka_topic, key=letter.key, value=letter.value,
                headers=letter.original_headers() + [(REPLAY_HEADER, origin)],
            ))
        for delivery in deliveries:
            await delivery
    finally:
        await producer.stop()
    return len(letters)
