"""A poll's partitions are applied in one transaction; when that transaction fails for a
reason that is not the data (a statement timeout on one huge batch, say), each partition
is tried alone, so the one that fails again is retried alone and the others move on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from app.entrypoints.consumer import ConsumerLoop, _Rebalance
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
