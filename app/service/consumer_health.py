"""What the consumer knows about its own progress, for /readyz and /metrics.

Per assigned partition: when it last advanced, whether its current batch is failing
(and since when, with which error), and when it may be retried. A partition whose
batch has failed, or been in progress, for longer than `stuck_after_seconds` is
*stuck*: /readyz reports the replica as degraded, naming the partition and the error.
Retries back off exponentially (with jitter) up to `retry_max_seconds`.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from app import metrics
from app.service.readiness import CheckResult, StuckPartition


@dataclass(slots=True)
class _Partition:
    next_offset: int | None = None
    failures: int = 0
    failing_since: float | None = None
    busy_since: float | None = None
    last_error: str | None = None
    retry_at: float = 0.0


@dataclass
class ConsumerHealth:
    stuck_after_seconds: float
    retry_base_seconds: float = 0.25
    retry_max_seconds: float = 5.0
    clock: Callable[[], float] = time.monotonic
    joined: bool = False
    # Why the broker cannot be reached right now (None while it answers).
    broker_error: str | None = None
    _partitions: dict[TopicPartition, _Partition] = field(default_factory=dict)

    # --- what the consumer loop reports ----------------------------------------------------

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._partitions.setdefault(tp, _Partition())
            # Read when scraped, as /readyz computes it when asked: the two agree at any moment.
            metrics.consumer_partition_stalled.labels(str(tp.partition)).set_function(
                functools.partial(self.stalled_seconds, tp)
            )

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._partitions.pop(tp, None)
            for gauge in (metrics.consumer_partition_stalled, metrics.consumer_lag):
                with contextlib.suppress(KeyError):
                    gauge.remove(str(tp.partition))

    # A batch still running when its partition was revoked reports afterwards: that report
    # is dropped, or a partition this replica no longer reads could show as stuck forever.

    def started(self, tp: TopicPartition) -> None:
        if (state := self._partitions.get(tp)) is not None:
            state.busy_since = self.clock()

    def advanced(self, tp: TopicPartition, next_offset: int) -> None:
        if (state := self._partitions.get(tp)) is None:
            return
        state.next_offset = next_offset
        state.failures, state.failing_since, state.busy_since, state.last_error = 0, None, None, None

    def failed(self, tp: TopicPartition, first_offset: int, error: str) -> float:
        """Record a failed batch; returns how long to wait before retrying it."""
        now = self.clock()
        state = self._partitions.get(tp) or _Partition()  # a revoked partition: not kept
        state.next_offset = first_offset
        state.failures += 1
        state.busy_since = None
        state.failing_since = state.failing_since or now
        state.last_error = error
        delay = min(self.retry_max_seconds, self.retry_base_seconds * 2 ** (state.failures - 1))
        delay *= random.uniform(0.8, 1.0)
        state.retry_at = now + delay
        return delay

    def due_for_retry(self) -> list[TopicPartition]:
        now = self.clock()
        return [tp for tp, s in self._partitions.items() if s.failing_since is not None and s.retry_at <= now]

    # --- what /readyz and /metrics read -----------------------------------------------------

    def stuck(self) -> list[StuckPartition]:
        now = self.clock()
        found = []
        for tp, state in sorted(self._partitions.items(), key=lambda item: (item[0].topic, item[0].partition)):
            since = state.failing_since if state.failing_since is not None else state.busy_since
            if since is None or now - since < self.stuck_after_seconds:
                continue
            error = state.last_error or "its batch has been in progress all this time"
            found.append(StuckPartition(tp.topic, tp.partition, state.next_offset, now - since, error))
        return found

    def readiness(self, group_id: str) -> CheckResult:
        """The consumer's entry in /readyz's checks."""
        if self.broker_error is not None:
            return CheckResult(False, f"the broker cannot be reached: {self.broker_error}; reconnecting")
        if not self.joined:
            return CheckResult(False, f"consumer has not joined group {group_id!r} yet")
        stuck = self.stuck()
        if stuck:
            return CheckResult(False, "; ".join(s.describe() for s in stuck), degraded=True,
                               stuck_partitions=tuple(stuck))
        return CheckResult(True)

    def stalled_seconds(self, tp: TopicPartition) -> float:
        """How long the partition's current batch has failed or run (0: it moves)."""
        state = self._partitions.get(tp)
        if state is None:
            return 0.0
        since = state.failing_since if state.failing_since is not None else state.busy_since
        return 0.0 if since is None else self.clock() - since

    def refresh_metrics(self, highwater: Callable[[TopicPartition], int | None]) -> None:
        for tp, state in self._partitions.items():
            label = str(tp.partition)
            end = highwater(tp)
            if end is not None and state.next_offset is not None:
                metrics.consumer_lag.labels(label).set(max(0, end - state.next_offset))
