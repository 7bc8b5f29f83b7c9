"""A poll's partitions are applied in one transaction; when that transaction fails for a
reason that is not the data (a statement timeout on one huge batch, say), each partition
is tried alone, so the one that fails again is retried alone and the others move on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from app.entrypoints.consumer import COMMIT_INTERVAL_SECONDS, ConsumerLoop, _Rebalance
from app.settings import Settings

GOOD, BAD = TopicPartition("events", 0), TopicPartition("events", 1)


class _Consumer:
    def __init__(self):
        self.batch = {tp: [ConsumerRecord("events", tp.partition, 7, 0, 0, b"k", b"{}", None, 1, 2, ())]
                      for tp in (GOOD, BAD)}
        self.paused_partitions: set[TopicPartition] = set()
        self.committed: dict = {}

    def assignment(self):
        return {GOOD, BAD}

    def paused(self):
        return set(self.paused_partitions)

    def resume(self, *partitions):
        self.paused_partitions -= set(partitions)

    def pause(self, *partitions):
        self.paused_partitions |= set(partitions)

    def seek(self, tp, offset):
        pass

    async def getmany(self, timeout_ms=0, max_records=None):
        batch, self.batch = self.batch, {}
        return batch

    def highwater(self, tp):
        return 8

    async def commit(self, offsets):
        self.committed.update(offsets)


async def test_a_failure_one_partition_causes_holds_back_only_that_partition():
    settings = Settings(_env_file=None, kafka_topic="events")
    loop = ConsumerLoop(settings, engine=None, publisher=SimpleNamespace(producer=None), crm_name="sandbox")
    consumer = _Consumer()
    loop.consumer = consumer
    await _Rebalance(loop).on_partitions_assigned({GOOD, BAD})
    tried: list[set[TopicPartition]] = []

    async def apply_poll(batches):
        tried.append(set(batches))
        if BAD in batches:
            raise TimeoutError("canceling statement due to statement timeout")
        return {tp: [] for tp in batches}

    async def deliver(letters):
        pass

    loop.ingest.apply_poll = apply_poll
    loop.dead_letters = SimpleNamespace(deliver=deliver)
    await loop.poll_once(consumer)
    await loop.settle_commits()
    assert tried[0] == {GOOD, BAD}  # one transaction first
    assert consumer.committed == {GOOD: 8}  # the good partition moved on
    assert consumer.paused_partitions == {BAD}  # the bad one waits for its retry, alone


@dataclass
class _SlowBroker:
    """A consumer loop whose broker holds every offset commit until `answers` is set."""

    loop: ConsumerLoop
    consumer: _Consumer
    answers: asyncio.Event = field(default_factory=asyncio.Event)
    commits: list[dict] = field(default_factory=list)


async def _slow_broker() -> _SlowBroker:
    settings = Settings(_env_file=None, kafka_topic="events")
    loop = ConsumerLoop(settings, engine=None, publisher=SimpleNamespace(producer=None), crm_name="sandbox")
    consumer = _Consumer()
    loop.consumer = consumer
    await _Rebalance(loop).on_partitions_assigned({GOOD, BAD})
    broker = _SlowBroker(loop, consumer)

    async def slow_commit(offsets):
        broker.commits.append(dict(offsets))
        await broker.answers.wait()
        consumer.committed.update(offsets)

    async def apply_poll(batches):
        return {tp: [] for tp in batches}

    async def deliver(letters):
        pass

    consumer.commit = slow_commit  # type: ignore[method-assign]
    loop.ingest.apply_poll = apply_poll  # type: ignore[method-assign]
    loop.dead_letters = SimpleNamespace(deliver=deliver)  # type: ignore[assignment]
    return broker


async def test_a_poll_does_not_wait_for_the_broker_to_take_its_offsets():
    # A commit is a round trip to the broker; the next poll is applied meanwhile, and the
    # commit after it carries every offset applied while the first was in flight.
    broker = await _slow_broker()
    loop, consumer, commits = broker.loop, broker.consumer, broker.commits
    async with asyncio.timeout(2):
        await loop.poll_once(consumer)  # waited for the broker's answer before
        consumer.batch = {GOOD: [ConsumerRecord("events", 0, 8, 0, 0, b"k", b"{}", None, 1, 2, ())]}
        await loop.poll_once(consumer)
    assert commits == [{GOOD: 8, BAD: 8}] and consumer.committed == {}
    broker.answers.set()
    await loop.settle_commits()
    assert commits == [{GOOD: 8, BAD: 8}, {GOOD: 9}]
    assert consumer.committed == {GOOD: 9, BAD: 8} and loop._applied == {}


async def test_a_commit_outside_the_poll_waits_for_the_one_in_flight():
    # Recovery from a fetch error, a revocation and the stop commit too: an older commit
    # still in flight must not land after theirs.
    broker = await _slow_broker()
    loop, consumer, commits = broker.loop, broker.consumer, broker.commits
    await loop.poll_once(consumer)
    await asyncio.sleep(0.01)  # its commit is at the broker
    assert commits == [{GOOD: 8, BAD: 8}]
    loop._applied[GOOD] = 9  # applied since, by a path outside the poll
    other = asyncio.create_task(loop.commit_applied([GOOD]))
    await asyncio.sleep(0.05)
    assert commits == [{GOOD: 8, BAD: 8}]  # not sent while the older one is in flight
    broker.answers.set()
    await asyncio.wait_for(other, timeout=2)
    assert commits[-1] == {GOOD: 9} and consumer.committed == {GOOD: 9, BAD: 8}


async def test_offsets_are_committed_at_most_once_per_interval_and_the_polls_between_ride_on_the_next():
    # Each commit is a request the broker answers; one per poll was a tenth of the
    # consumer's CPU at 1,000 events/s (docs/bench.md). A crash replays what was applied
    # but not committed into the dedup rows, as it did before.
    broker = await _slow_broker()
    broker.answers.set()
    loop, consumer, commits = broker.loop, broker.consumer, broker.commits
    sent_at: list[float] = []
    answer = consumer.commit

    async def timed_commit(offsets):
        sent_at.append(asyncio.get_running_loop().time())
        await answer(offsets)

    consumer.commit = timed_commit  # type: ignore[method-assign]
    await loop.poll_once(consumer)
    await asyncio.sleep(0)  # the first commit goes at once
    for offset in (8, 9, 10):
        consumer.batch = {GOOD: [ConsumerRecord("events", 0, offset, 0, 0, b"k", b"{}", None, 1, 2, ())]}
        await loop.poll_once(consumer)
    await loop.settle_commits()
    assert commits == [{GOOD: 8, BAD: 8}, {GOOD: 11}]
    assert sent_at[1] - sent_at[0] >= COMMIT_INTERVAL_SECONDS * 0.9
    assert consumer.committed == {GOOD: 11, BAD: 8} and loop._applied == {}
