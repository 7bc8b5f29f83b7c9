"""A partition's progress as /readyz and /metrics see it: stuck after the configured
time of failing (or running), named with its offset and error; backoff grows and is
capped; it clears when the partition advances."""

from __future__ import annotations

from itertools import pairwise

from aiokafka import TopicPartition

from app.service.consumer_health import ConsumerHealth
from app.service.readiness import CheckResult

TP = TopicPartition("events", 2)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failing_partition_is_stuck_only_after_the_threshold_and_clears_when_it_advances():
    clock = Clock()
    health = ConsumerHealth(stuck_after_seconds=60, clock=clock, joined=True)
    health.assigned([TP])
    health.failed(TP, 4812, "CannotConnectNowError SQLSTATE 57P03: the database system is starting up")
    clock.now += 59
    assert health.stuck() == [] and health.readiness("g") == CheckResult(True)
    clock.now += 2
    [stuck] = health.stuck()
    assert (stuck.partition, stuck.offset, round(stuck.seconds)) == (2, 4812, 61)
    check = health.readiness("g")
    assert check.ready is False and check.degraded is True and check.stuck_partitions == (stuck,)
    assert check.detail.startswith("partition 2 of events at offset 4812 has not advanced for 61 s: ")
    assert "57P03" in check.detail
    health.advanced(TP, 4831)
    assert health.stuck() == [] and health.readiness("g").ready is True


def test_a_batch_running_too_long_is_stuck_too():
    clock = Clock()
    health = ConsumerHealth(stuck_after_seconds=10, clock=clock, joined=True)
    health.assigned([TP])
    health.started(TP)
    clock.now += 11
    assert health.stuck()[0].error == "its batch has been in progress all this time"


def test_retries_back_off_up_to_the_cap():
    health = ConsumerHealth(stuck_after_seconds=60, retry_base_seconds=0.25, retry_max_seconds=5, clock=Clock())
    health.assigned([TP])
    delays = [health.failed(TP, 0, "down") for _ in range(8)]
    assert 0.2 <= delays[0] <= 0.25 and delays[-1] <= 5 and delays[-1] >= 4
    assert all(later >= earlier * 0.8 for earlier, later in pairwise(delays))


def test_an_unreachable_broker_comes_before_everything_else():
    health = ConsumerHealth(stuck_after_seconds=60, joined=True, broker_error="KafkaConnectionError: refused")
    assert "broker cannot be reached" in health.readiness("g").detail


def test_a_batch_that_fails_after_its_partition_was_revoked_leaves_no_stuck_ghost():
    clock = Clock()
    health = ConsumerHealth(stuck_after_seconds=60, clock=clock, joined=True)
    health.assigned([TP])
    health.started(TP)
    health.revoked([TP])  # a rebalance while the batch runs
    health.failed(TP, 10, "CannotConnectNowError SQLSTATE 57P03")
    clock.now += 3600
    assert health.stuck() == [] and health.readiness("g") == CheckResult(True)


def test_the_stalled_seconds_metric_is_read_when_scraped_not_when_the_consumer_last_polled():
    # /readyz computes a partition's stalled time when asked; the metric must agree with it
    # at the same moment, not lag by the consumer's last poll.
    from app import metrics

    clock = Clock()
    health = ConsumerHealth(stuck_after_seconds=2, clock=clock, joined=True)
    tp = TopicPartition("events-stalled-metric", 5)
    health.assigned([tp])
    health.failed(tp, 0, "ConnectionDoesNotExistError SQLSTATE 08003")
    health.refresh_metrics(lambda _: None)
    clock.now += 2.5

    def scraped() -> float | None:
        return metrics.REGISTRY.get_sample_value("crm_records_consumer_partition_stalled_seconds", {"partition": "5"})

    [stuck] = health.stuck()
    assert scraped() == stuck.seconds == 2.5
    health.advanced(tp, 1)
    assert scraped() == 0
    health.revoked([tp])
    assert scraped() is None
