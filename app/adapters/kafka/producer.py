"""One producer per process, for the dead-letter topic and the record-outcome topic.

No idempotent or transactional producer: exactly-once effects come from PostgreSQL
(dedup rows and the outbox), and a rare duplicate on these topics is harmless
(dead letters keep their original key and value; outcome events carry the session id)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from app.domain.outcome import OutcomeEvent
from app.observability import tracing
from app.settings import Settings

log = logging.getLogger(__name__)

# When neither the setting nor the broker names a limit: Kafka's own default is 1 MiB,
# and a broker configured for more usually says so.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class KafkaPublisher:
    def __init__(self, settings: Settings, *, max_message_bytes: int | None = None):
        self.settings = settings
        # Sized for the largest message the broker accepts, so a dead letter copying a
        # large message (plus its error header) is not refused by the client itself.
        self.max_message_bytes = settings.kafka_max_message_bytes or max_message_bytes or DEFAULT_MAX_MESSAGE_BYTES
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.resolved_bootstrap_servers(),
            acks="all",
            enable_idempotence=False,
            linger_ms=2,
            request_timeout_ms=15000,
            max_request_size=self.max_message_bytes,
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def broker_problem(self, timeout: float = 5.0) -> str | None:
        """None when a broker answers a metadata request, else why not."""
        try:
            async with asyncio.timeout(timeout):
                await self.producer.client.fetch_all_metadata()
        except Exception as exc:
            return (
                f"{type(exc).__name__}: {exc}".rstrip(": ")
                if str(exc)
                else f"{type(exc).__name__} (no answer in {timeout:.0f} s)"
            )
        return None

    async def publish_outcome(self, session_id: str, event: OutcomeEvent) -> None:
        await self.producer.send_and_wait(
            self.settings.kafka_output_topic, key=session_id.encode(), value=outcome_message(event),
            headers=tracing.outgoing_headers() or None,
        )

    async def already_published(self, session_id: str, event: OutcomeEvent, since: datetime,
                                timeout: float = 15.0) -> bool:
        """Whether the outcome topic holds `event` (same type, session and record), written
        at or after `since`.

        Asked only for an event an earlier attempt may have published: its worker died, or
        lost the database, between the publish and marking the row done. Without Kafka
        transactions that publish cannot commit with the row, so the topic is read back
        instead: the session's partition (the key decides it), from `since` to its end.
        When the answer does not come in time, False: publishing again is better than
        losing the event."""
        topic, key = self.settings.kafka_output_topic, session_id.encode()
        wanted = (str(event.event_type), event.session_id, event.record_id)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.resolved_bootstrap_servers(), group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=100)
        try:
            async with asyncio.timeout(timeout):
                await consumer.start()
                partitions = sorted(await self.producer.partitions_for(topic))
                tp = TopicPartition(topic, DefaultPartitioner()(key, partitions, partitions))
                consumer.assign([tp])
                start = (await consumer.offsets_for_times({tp: int(since.timestamp() * 1000)}))[tp]
                end = (await consumer.end_offsets([tp]))[tp]
                if start is None:
                    return False
                consumer.seek(tp, start.offset)
                while await consumer.position(tp) < end:
                    for message in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                        if message.key == key and _same_outcome(message.value, wanted):
                            return True
                return False
        except TimeoutError:
            log.warning("could not read the outcome topic back in %.0f s; publishing the event again", timeout)
            return False
        finally:
            await consumer.stop()


def outcome_message(event: OutcomeEvent) -> bytes:
    """The event's bytes on the output topic: its contract document as compact JSON."""
    return orjson.dumps(event.payload())


def _same_outcome(value: bytes | None, wanted: tuple[Any, Any, Any]) -> bool:
    try:
        found = orjson.loads(value or b"null")
    except orjson.JSONDecodeError:
        return False
    return (
        isinstance(found, dict) and (found.get("event_type"), found.get("session_id"), found.get("record_id")) == wanted
    )
