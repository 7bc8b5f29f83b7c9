"""The consumer loop: poll, validate, dead-letter the invalid, apply each partition's
batch in one transaction, and only then commit `offset + 1` for that partition.

Auto-commit is off. Offsets that were applied but not yet committed are committed
again when partitions are revoked; if that fails, the new owner replays the batch
and the dedup rows make the replay a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.adapters.kafka.producer import KafkaPublisher
from app.domain.events import InvalidEvent, SessionEvent, parse_event
from app.observability import tracing
from app.observability.logs import log_context
from app.service.consume import apply_batch
from app.settings import Settings

log = logging.getLogger(__name__)


def _is_connection_problem(exc: DBAPIError) -> bool:
    return isinstance(exc, (OperationalError, InterfaceError)) or bool(exc.connection_invalidated)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: ConsumerLoop):
        self.loop = loop

    async def on_partitions_revoked(self, revoked):
        await self.loop.commit_applied(revoked)

    async def on_partitions_assigned(self, assigned):
        self.loop.joined = True
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))


class ConsumerLoop:
    def __init__(self, settings: Settings, engine: AsyncEngine, publisher: KafkaPublisher, crm_name: str):
        self.settings = settings
        self.engine = engine
        self.publisher = publisher
        self.crm_name = crm_name
        self.joined = False
        self.consumer: AIOKafkaConsumer | None = None
        # Applied in PostgreSQL, offset not yet committed to Kafka.
        self._applied: dict[TopicPartition, int] = {}

    def _build(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.resolved_bootstrap_servers(),
            group_id=self.settings.kafka_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.kafka_max_poll_records,
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
        )

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer = consumer = self._build()
        consumer.subscribe([self.settings.kafka_topic], listener=_Rebalance(self))
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=self.settings.kafka_max_poll_records)
                if not batches:
                    continue
                # Partitions never share a session, so their batches are applied side by side,
                # each in its own transaction; then one commit covers every applied partition.
                applied = await asyncio.gather(
                    *(self._apply_partition(consumer, tp, messages) for tp, messages in batches.items())
                )
                await self.commit_applied([tp for tp in applied if tp is not None])
        finally:
            try:
                await self.commit_applied(list(self._applied))
            finally:
                self.joined = False
                await consumer.stop()

    async def commit_applied(self, partitions: Sequence[TopicPartition]) -> None:
        offsets = {tp: self._applied[tp] for tp in partitions if tp in self._applied}
        if not offsets or self.consumer is None:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # Harmless: whoever reads these partitions next replays into the dedup rows.
            log.warning("offset commit failed (%s); the batch will be replayed as duplicates", exc)
            return
        for tp in offsets:
            if self._applied.get(tp) == offsets[tp]:
                del self._applied[tp]

    async def _apply_partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, messages: list[ConsumerRecord]
    ) -> TopicPartition | None:
        try:
            with log_context(topic=tp.topic, partition=tp.partition, offset=messages[0].offset,
                             last_offset=messages[-1].offset):
                await self.apply_messages(messages)
        except Exception as exc:  # database down, broker down: retry the same batch, lose nothing
            log.error("batch of %d on %s/%d failed, will retry: %r", len(messages), tp.topic, tp.partition, exc)
            consumer.seek(tp, messages[0].offset)
            await asyncio.sleep(1.0)
            return None
        self._applied[tp] = messages[-1].offset + 1
        return tp

    async def apply_messages(self, messages: list[ConsumerRecord]) -> None:
        """Validate, dead-letter the invalid, and apply the rest in one transaction."""
        valid: list[SessionEvent] = []
        origin: dict[int, ConsumerRecord] = {}
        deliveries = []
        for message in messages:
            try:
                event = parse_event(message.value)
            except InvalidEvent as exc:
                deliveries.append(await self._dead_letter(message, exc.reason))
                continue
            origin[id(event)] = message
            valid.append(event)
        started = time.perf_counter()
        first = messages[0]
        event_ids = {origin[id(event)].offset: event.event_id for event in valid}
        try:
            with tracing.batch_span(first.topic, first.partition, messages, event_ids) as batch_trace:
                await self._apply(valid, batch_trace.traceparent_for if batch_trace else None)
        except DBAPIError as exc:
            if _is_connection_problem(exc):
                raise
            # Something in this batch cannot be stored (e.g. a NUL character, which
            # PostgreSQL text refuses): find it one event at a time, dead-letter it, keep the rest.
            for event in valid:
                try:
                    await self._apply([event])
                except DBAPIError as single:
                    if _is_connection_problem(single):
                        raise
                    reason = f"could not be stored: {type(single.orig).__name__ if single.orig else ''} {single.orig}"
                    with log_context(session_id=event.session.id, event_id=event.event_id):
                        deliveries.append(await self._dead_letter(origin[id(event)], reason.strip()))
        metrics.batch_duration.observe(time.perf_counter() - started)
        for delivery in deliveries:
            await delivery

    async def _apply(self, events: list[SessionEvent], trace_for=None) -> None:
        if not events:
            return
        async with self.engine.begin() as conn:
            outcome = await apply_batch(conn, events, self.crm_name, trace_for)
        metrics.events_consumed.inc(outcome.applied)
        if outcome.duplicates:
            metrics.events_duplicate.inc(outcome.duplicates)
        for decision in outcome.decisions:
            metrics.decisions.labels(decision.kind).inc()

    async def _dead_letter(self, message: ConsumerRecord, reason: str):
        metrics.events_dead_lettered.labels(metrics.dead_letter_reason_class(reason)).inc()
        with log_context(offset=message.offset):
            log.warning("dead-lettering %s/%d@%d: %s", message.topic, message.partition, message.offset, reason)
        return await self.publisher.dead_letter(message.key, message.value, reason, list(message.headers or ()))
