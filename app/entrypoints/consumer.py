"""The consumer loop: poll, apply the poll's batches of every partition in one
transaction (service.ingest), deliver each partition's dead letters, and only then
commit `offset + 1` for that partition.

Auto-commit is off. The offsets are committed while the next poll is applied, one commit
in flight at a time: a commit is a round trip to the broker, and a poll that waited for it
held up every event behind it (p90 5 ms, p99 13 ms at 1,000 events/s). A crash before the
commit replays the batch into the dedup rows, as it always could.

When the poll's transaction fails for any reason other than its own data (the database
or the broker unreachable or restarting, a statement timeout), each partition is tried
again alone, so a partition whose own batch fails holds back only itself. A partition
that fails alone is retried as it is: it is rewound to its batch's first offset and
paused for a backoff, and nothing is committed for it; one whose dead letters could not
be delivered is retried the same way. Offsets applied but not yet committed are
committed again when partitions are revoked; if that fails, the new owner replays the
batch and the dedup rows make the replay a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.db.errors import short_description
from app.adapters.kafka.dead_letters import DeadLetter, DeadLetterQueue, UndecodableBatch
from app.adapters.kafka.producer import KafkaPublisher
from app.adapters.kafka.undecodable import (
    is_decode_error,
    read_until_undecodable,
    rewind_to_committed,
    undecodable_end,
)
from app.observability.logs import log_context
from app.service.consumer_health import ConsumerHealth
from app.service.ingest import PartitionIngest
from app.settings import Settings

log = logging.getLogger(__name__)

# A partition that keeps failing is logged at its first failure, then at most this often.
_FAILURE_LOG_INTERVAL_SECONDS = 30.0
_SETTLE_COMMIT_SECONDS = 5.0
# Offsets go to the broker at most this often: each commit is a request it answers, and
# one per poll was a tenth of the consumer's CPU at 1,000 events/s (docs/bench.md). What a
# crash leaves applied but not committed is replayed into the dedup rows, as before; a
# revocation and the stop commit at once (commit_applied).
COMMIT_INTERVAL_SECONDS = 0.2


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: ConsumerLoop):
        self.loop = loop

    async def on_partitions_revoked(self, revoked):
        await self.loop.commit_applied(revoked)
        self.loop.forget(revoked)

    async def on_partitions_assigned(self, assigned):
        self.loop.health.joined = True
        self.loop.health.assigned(assigned)
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))


class ConsumerLoop:
    def __init__(self, settings: Settings, engine: AsyncEngine, publisher: KafkaPublisher, crm_name: str,
                 *, health: ConsumerHealth | None = None, on_outbox_rows: Callable[[], None] | None = None,
                 wake_token: str = ""):
        self.settings = settings
        self.ingest = PartitionIngest(engine, crm_name, on_outbox_rows=on_outbox_rows, wake_token=wake_token)
        self.dead_letters = DeadLetterQueue(publisher.producer, settings.kafka_dlq_topic)
        self.health = health or ConsumerHealth(stuck_after_seconds=settings.consumer_stuck_partition_seconds)
        self.consumer: AIOKafkaConsumer | None = None
        # Applied in PostgreSQL, offset not yet committed to Kafka.
        self._applied: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task[None] | None = None  # the commit in flight, if any
        self._last_commit_at = -COMMIT_INTERVAL_SECONDS  # event loop time the last background commit was sent
        self._last_failure_log: dict[TopicPartition, float] = {}

    @property
    def joined(self) -> bool:
        return self.health.joined

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
        await self._start(consumer, stop)
        try:
            while not stop.is_set():
                await self.poll_once(consumer)
        finally:
            try:
                await self.commit_applied(list(self._applied))
            finally:
                self.health.joined = False
                await consumer.stop()

    async def _start(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """The broker may vanish between start-up's checks and here: wait for it."""
        delay = 0.5
        while True:
            try:
                await consumer.start()
                return
            except KafkaError as exc:
                if stop.is_set():
                    raise
                log.error("the consumer cannot reach the broker (%r); retrying in %.0f s", exc, delay)
                self.health.broker_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)

    async def poll_once(self, consumer: AIOKafkaConsumer) -> None:
        self._resume_due(consumer)
        try:
            batches = await consumer.getmany(timeout_ms=200, max_records=self.settings.kafka_max_poll_records)
        except Exception as exc:
            try:
                await self._recover_from_fetch_error(consumer, exc)
            except Exception as again:  # e.g. the broker went away meanwhile: the next poll tries again
                log.error("recovering from a failed fetch failed too (%r); polling again", again)
                await asyncio.sleep(1.0)
            return
        if batches:
            # Every partition's batch in one transaction (service.ingest); then one offset
            # commit covers every applied partition.
            if await self._apply_poll(consumer, batches):
                self._commit_in_background()
        self.health.refresh_metrics(self._highwater_of_assigned(consumer))

    @staticmethod
    def _highwater_of_assigned(consumer: AIOKafkaConsumer):
        # A batch in flight when its partition was revoked (a rebalance) still reports on it
        # afterwards; aiokafka asserts on a partition that is no longer assigned.
        assigned = consumer.assignment()
        return lambda tp: consumer.highwater(tp) if tp in assigned else None

    def _commit_in_background(self) -> None:
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_until_caught_up(), name="offset-commit")

    async def _commit_until_caught_up(self) -> None:
        """Commit what is applied; then what was applied while that commit was in flight,
        or waited for the interval since the last one."""
        clock = asyncio.get_running_loop().time
        while self._applied:
            if (pause := self._last_commit_at + COMMIT_INTERVAL_SECONDS - clock()) > 0:
                await asyncio.sleep(pause)
            self._last_commit_at = clock()
            before = dict(self._applied)
            await self._commit(list(before))
            if self._applied == before:
                return  # the commit failed: the next poll's commit tries again

    async def settle_commits(self) -> None:
        """Wait for the commit in flight, so that no older commit lands after a newer one;
        at most a few seconds (aiokafka retries a commit while the broker is away): an older
        commit landing later only replays into the dedup rows."""
        if self._committing is not None and not self._committing.done():
            await asyncio.wait({self._committing}, timeout=_SETTLE_COMMIT_SECONDS)

    async def commit_applied(self, partitions: Sequence[TopicPartition]) -> None:
        """Commit now what is applied of `partitions` (a revocation, the stop, a recovery),
        after the background commit in flight."""
        await self.settle_commits()
        await self._commit(partitions)

    async def _commit(self, partitions: Sequence[TopicPartition]) -> None:
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

    async def _apply_poll(
        self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord]]
    ) -> list[TopicPartition]:
        """Apply a poll's batches; returns the partitions to commit. When the poll's one
        transaction fails, each partition is tried alone: one partition's batch may be
        what failed (a statement timeout on a huge batch), and the others must not wait
        for it. A partition that fails alone is retried alone, after a backoff; a failure
        to deliver one partition's dead letters retries that partition's batch (replayed
        into the dedup rows)."""
        for tp in batches:
            self.health.started(tp)
        try:
            letters = await self.ingest.apply_poll(batches)
        except Exception as exc:  # the database or the broker: retry the same batches, lose nothing
            if len(batches) > 1:
                alone = await asyncio.gather(*(self._apply_poll(consumer, {tp: m}) for tp, m in batches.items()))
                return [tp for applied in alone for tp in applied]
            [(tp, messages)] = batches.items()
            self._retry_later(consumer, tp, messages[0].offset, messages[-1].offset, exc)
            return []
        delivered = await asyncio.gather(
            *(self._deliver(consumer, tp, messages, letters[tp]) for tp, messages in batches.items())
        )
        return [tp for tp in delivered if tp is not None]

    async def _deliver(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, messages: list[ConsumerRecord],
        letters: list[DeadLetter],
    ) -> TopicPartition | None:
        try:
            with log_context(topic=tp.topic, partition=tp.partition, offset=messages[0].offset,
                             last_offset=messages[-1].offset):
                await self.dead_letters.deliver(letters)
        except Exception as exc:
            self._retry_later(consumer, tp, messages[0].offset, messages[-1].offset, exc)
            return None
        self._advanced(tp, messages[-1].offset + 1)
        return tp

    async def _apply_partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, messages: list[ConsumerRecord]
    ) -> TopicPartition | None:
        applied = await self._apply_poll(consumer, {tp: messages})
        return applied[0] if applied else None

    def forget(self, revoked: Sequence[TopicPartition]) -> None:
        """Partitions now someone else's: what was applied and not committed is replayed
        by the new owner (a no-op through the dedup rows)."""
        for tp in revoked:
            self._applied.pop(tp, None)
            self._last_failure_log.pop(tp, None)
        # The new owner moves these partitions' sessions on: their writes would conflict.
        self.ingest.saved_states.clear()
        self.health.revoked(revoked)

    def _advanced(self, tp: TopicPartition, next_offset: int) -> None:
        if self.consumer is not None and tp not in self.consumer.assignment():
            return  # revoked while its batch ran: not ours to commit any more
        self._applied[tp] = next_offset
        self.health.advanced(tp, next_offset)
        if self._last_failure_log.pop(tp, None) is not None:
            log.info("partition %s/%d moves again at offset %d", tp.topic, tp.partition, next_offset)

    def _retry_later(self, consumer: AIOKafkaConsumer, tp: TopicPartition, first: int, last: int,
                     exc: BaseException) -> None:
        error = short_description(exc)
        delay = self.health.failed(tp, first, error)
        now = time.monotonic()
        if now - self._last_failure_log.get(tp, -_FAILURE_LOG_INTERVAL_SECONDS) >= _FAILURE_LOG_INTERVAL_SECONDS:
            self._last_failure_log[tp] = now
            log.error("batch %s/%d offsets %d..%d not applied, retrying it in %.1f s (backoff up to %.0f s): %s",
                      tp.topic, tp.partition, first, last, delay, self.health.retry_max_seconds, error)
        if tp in consumer.assignment():
            consumer.seek(tp, first)
            consumer.pause(tp)

    def _resume_due(self, consumer: AIOKafkaConsumer) -> None:
        paused = consumer.paused()
        due = [tp for tp in self.health.due_for_retry() if tp in paused]
        if due:
            consumer.resume(*due)

    async def _recover_from_fetch_error(self, consumer: AIOKafkaConsumer, exc: BaseException) -> None:
        """A fetch raised: find the partition and offsets it could not decode, send a
        stand-in letter for them, and go on past them (see adapters/kafka/undecodable)."""
        readable = [tp for tp in consumer.assignment() if tp not in consumer.paused()]
        if not is_decode_error(exc):
            log.error("fetching from the broker failed, retrying: %r", exc)
            await asyncio.sleep(1.0)
            return
        log.error("a fetched batch could not be decoded (%r); finding its partition", exc)
        await rewind_to_committed(consumer, readable)
        for tp in sorted(readable, key=lambda p: p.partition):
            run = await read_until_undecodable(consumer, tp, self.settings.kafka_max_poll_records)
            if run.records and await self._apply_partition(consumer, tp, run.records) is None:
                continue
            if run.error is not None:
                first = run.records[-1].offset + 1 if run.records else await consumer.position(tp)
                await self._step_over(consumer, tp, first, run.error)
        await self.commit_applied(list(self._applied))

    async def _step_over(self, consumer: AIOKafkaConsumer, tp: TopicPartition, first: int,
                         error: BaseException) -> None:
        last = await undecodable_end(consumer, tp, first)
        what = str(error) if str(error).startswith(type(error).__name__) else f"{type(error).__name__}: {error}"
        reason = f"undecodable batch: {what}"
        try:
            await self.dead_letters.deliver_undecodable(UndecodableBatch(tp.topic, tp.partition, first, last, reason))
        except Exception as exc:
            self._retry_later(consumer, tp, first, last, exc)
            return
        log.error("stepped over offsets %d..%d of %s/%d, which cannot be decoded: %s; a stand-in letter names them",
                  first, last, tp.topic, tp.partition, reason)
        self._advanced(tp, last + 1)
