"""One producer per process, for the dead-letter topic and the record-outcome topic.

No idempotent or transactional producer: exactly-once effects come from PostgreSQL
(dedup rows and the outbox), and a rare duplicate on these topics is harmless
(dead letters keep their original key and value; outcome events carry the session id)."""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from app.observability import tracing
from app.settings import Settings


class KafkaPublisher:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.resolved_bootstrap_servers(),
            acks="all",
            enable_idempotence=False,
            linger_ms=2,
            request_timeout_ms=15000,
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def publish_outcome(self, session_id: str, event: dict[str, Any]) -> None:
        await self.producer.send_and_wait(
            self.settings.kafka_output_topic, key=session_id.encode(), value=orjson.dumps(event),
            headers=tracing.outgoing_headers() or None,
        )

    async def dead_letter(
        self, key: bytes | None, value: bytes | None, reason: str, headers: list[tuple[str, bytes]] | None = None
    ):
        """Queue one dead letter; returns the delivery future to await before committing offsets."""
        kept = [(k, v) for k, v in (headers or []) if k != "error"]
        return await self.producer.send(
            self.settings.kafka_dlq_topic,
            key=key,
            value=value,
            headers=kept + [("error", reason.encode("utf-8", "replace"))],
        )
