"""Use case: take a poll's messages into the database.

Parse and validate each message; apply the valid ones of every partition the poll
brought together, in one statement (the `consume.apply_batch` use case). When PostgreSQL
refuses the *data* (SQLSTATE classes 22 and 23, see adapters/db/errors), each partition
is tried alone and its batch split in halves until the refused events are alone, and
only those become dead letters; everything else is applied. An event the pure domain
code raises on (EventNotApplicable) is isolated and dead-lettered the same way. Any
other failure (the database unreachable, restarting, out of connections, a timeout) is
raised unchanged: the caller retries the same batches and commits nothing, so no valid
event is ever dead-lettered for the database's sake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import ConsumerRecord, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.adapters.db import raw
from app.adapters.db.errors import rejects_the_data, short_description
from app.adapters.kafka.dead_letters import DeadLetter
from app.domain.events import InvalidEvent, SessionEvent, parse_event
from app.observability import tracing
from app.observability.logs import log_context
from app.service.consume import EventNotApplicable, apply_batch
from app.service.saved_states import SavedStates

log = logging.getLogger(__name__)
# When tracing is on: the trace context an event's outbox rows carry, by event id.
TraceFor = Callable[[str], str | None] | None


@dataclass(frozen=True, slots=True)
class _Parsed:
    event: SessionEvent
    message: ConsumerRecord


def dead_letter(message: ConsumerRecord, reason: str) -> DeadLetter:
    return DeadLetter(
        topic=message.topic, partition=message.partition, offset=message.offset, key=message.key,
        value=message.value, headers=tuple(message.headers or ()), reason=reason,
    )


class PartitionIngest:
    def __init__(self, engine: AsyncEngine, crm_name: str, *, on_outbox_rows: Callable[[], None] | None = None,
                 wake_token: str = ""):
        self.engine = engine
        self.crm_name = crm_name
        # Told after a commit that added outbox rows: this replica's worker claims them at
        # once, without waiting for PostgreSQL's notification (which wakes the others, and
        # carries `wake_token` so that worker does not claim twice for it).
        self.on_outbox_rows = on_outbox_rows
        self.wake_token = wake_token
        # What this consumer saved: a steady stream's batches skip their read (saved_states).
        self.saved_states = SavedStates()

    async def apply(self, messages: Sequence[ConsumerRecord]) -> list[DeadLetter]:
        """One partition's messages: apply what is valid; return the dead letters (not
        yet sent) in offset order."""
        if not messages:
            return []
        tp = TopicPartition(messages[0].topic, messages[0].partition)
        return (await self.apply_poll({tp: messages}))[tp]

    async def apply_poll(
        self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord]]
    ) -> dict[TopicPartition, list[DeadLetter]]:
        """A poll's batches, every partition's in one write: two statements
        per poll, however many partitions it brought. Partitions never share a session,
        so their events go in side by side, each partition's in its order. When the data
        is refused, each partition is retried alone and split until the refused events
        are isolated; the other partitions lose nothing. Returns each partition's dead
        letters (not yet sent) in offset order."""
        letters: dict[TopicPartition, list[DeadLetter]] = {tp: [] for tp in batches}
        parsed: dict[TopicPartition, list[_Parsed]] = {}
        for tp, messages in batches.items():
            parsed[tp] = []
            for message in messages:
                try:
                    parsed[tp].append(_Parsed(parse_event(message.value), message))
                except InvalidEvent as exc:
                    letters[tp].append(dead_letter(message, exc.reason))
        started = time.perf_counter()
        valid = [p for tp in batches for p in parsed[tp]]
        if valid:
            event_ids = {(p.message.partition, p.message.offset): p.event.event_id for p in valid}
            with tracing.batch_span(batches, event_ids) as batch_trace:
                trace_for = batch_trace.traceparent_for if batch_trace else None
                try:
                    await self._apply([p.event for p in valid], trace_for)
                except Exception as exc:
                    if not _refuses_the_data(exc):
                        raise  # infrastructure: the caller retries the poll
                    with_events = [tp for tp in batches if parsed[tp]]
                    if len(with_events) == 1:  # that partition's batch was just tried: split it
                        await self._split(parsed[with_events[0]], letters[with_events[0]], exc, trace_for)
                    else:
                        for tp in with_events:
                            await self._apply_isolating(parsed[tp], letters[tp], trace_for)
        metrics.batch_duration.observe(time.perf_counter() - started)
        for found in letters.values():
            for letter in found:
                with log_context(offset=letter.offset):
                    log.warning("dead-lettering %s/%d@%d: %s", letter.topic, letter.partition, letter.offset,
                                letter.reason)
            found.sort(key=lambda letter: letter.offset)
        return letters

    async def _apply_isolating(self, parsed: list[_Parsed], letters: list[DeadLetter], trace_for: TraceFor) -> None:
        try:
            await self._apply([p.event for p in parsed], trace_for)
        except Exception as exc:
            if not _refuses_the_data(exc):
                raise  # infrastructure: the whole batch is retried
            await self._split(parsed, letters, exc, trace_for)

    async def _split(self, parsed: list[_Parsed], letters: list[DeadLetter], exc: BaseException,
                     trace_for: TraceFor) -> None:
        """`parsed` was refused: dead-letter it if it is one event, else try its halves."""
        if len(parsed) == 1:
            with log_context(session_id=parsed[0].event.session.id, event_id=parsed[0].event.event_id):
                letters.append(dead_letter(parsed[0].message, _stored_reason(exc)))
            return
        # Halves keep the partition's order; k refused events cost about 2k·log n tries.
        middle = len(parsed) // 2
        await self._apply_isolating(parsed[:middle], letters, trace_for)
        await self._apply_isolating(parsed[middle:], letters, trace_for)

    async def _apply(self, events: list[SessionEvent], trace_for: TraceFor) -> None:
        if not events:
            return
        # Outside a transaction: the batch's two statements each commit alone (apply_batch).
        async with raw.connection(self.engine) as pg:
            outcome = await apply_batch(pg, events, self.crm_name, trace_for, self.wake_token, self.saved_states)
        if outcome.outbox_rows and self.on_outbox_rows is not None:
            self.on_outbox_rows()
        if outcome.locked_after_conflict:
            metrics.consumer_batches_locked.inc()
        metrics.events_consumed.inc(outcome.applied)
        if outcome.duplicates:
            metrics.events_duplicate.inc(outcome.duplicates)
        for decision in outcome.decisions:
            metrics.decisions.labels(decision.kind).inc()


def _refuses_the_data(exc: BaseException) -> bool:
    return rejects_the_data(exc) or isinstance(exc, EventNotApplicable)


def _stored_reason(exc: BaseException) -> str:
    if isinstance(exc, EventNotApplicable):
        return f"could not be applied: {exc.reason}"
    return f"could not be stored: {short_description(exc)}"
