"""One producer per process, for the dead-letter topic and the record-outcome topic.

No idempotent or transactional producer: exactly-once effects come from PostgreSQL
(dedup rows and the outbox), and a rare duplicate on these topics is harmless
(dead letters keep their original key and value; outcome events carry the session id)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from app.observability import tracing
from app.settings import Settings


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
            return f"{type(exc).__name__}: {exc}".rstrip(": ") if str(exc) else f"{type(exc).__name__} (no answer in {timeout:.0f} s)"
        return None

    async def publish_outcome(self, session_id: str, event: dict[str, Any]) -> None:
        await self.producer.send_and_wait(
            self.settings.kafka_output_topic, key=session_id.encode(), value=orjson.dumps(event),
            headers=tracing.outgoing_headers() or None,
        )
