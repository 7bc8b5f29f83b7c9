"""A partition revoked while its batch is being applied (a rebalance: another replica
joined or died) must not stop the consumer. Found by the chaos run: a replica ended with
`consumer stopped: AssertionError('Partition is not assigned')` (aiokafka's `highwater`
asserts on a partition no longer assigned) and exited with status 0."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from app.entrypoints.consumer import ConsumerLoop, _Rebalance
from app.settings import Settings

TP = TopicPartition("events", 0)


class _Consumer:
    """Just enough of AIOKafkaConsumer, with its assertions on unassigned partitions."""

    def __init__(self):
        self.assigned = {TP}
        self.batch = {TP: [ConsumerRecord("events", 0, 7, 0, 0, b"k", b"{}", None, 1, 2, ())]}

    def assignment(self):
        return set(self.assigned)

    def paused(self):
        return set()

    def resume(self, *partitions):
        pass

    async def getmany(self, timeout_ms=0, max_records=None):
        batch, self.batch = self.batch, {}
        return batch

    def highwater(self, tp):
        assert tp in self.assigned, "Partition is not assigned"
        return 8

    async def commit(self, offsets):
        from aiokafka.errors import IllegalStateError

        if not set(offsets) <= self.assigned:  # as aiokafka's own check
            raise IllegalStateError(f"Partitions {set(offsets) - self.assigned} are not assigned")
        self.committed = dict(offsets)


async def test_a_partition_revoked_mid_batch_does_not_stop_the_consumer():
    settings = Settings(_env_file=None, kafka_topic="events")
    loop = ConsumerLoop(settings, engine=None, publisher=SimpleNamespace(producer=None), crm_name="sandbox")
    consumer = _Consumer()
    loop.consumer = consumer
    await _Rebalance(loop).on_partitions_assigned({TP})

    async def apply_while_revoked(batches):
        consumer.assigned.clear()  # the rebalance runs while the batch is in the database
        await _Rebalance(loop).on_partitions_revoked({TP})
        return {tp: [] for tp in batches}

    loop.ingest.apply_poll = apply_while_revoked
    await loop.poll_once(consumer)  # raised AssertionError before
    await loop.poll_once(consumer)
    # Nothing of the revoked partition is kept for a later commit, and it cannot look stuck.
    assert loop._applied == {} and loop.health.stuck() == []


async def test_a_revocation_forgets_the_states_this_consumer_saved():
    """The new owner moves the revoked partitions' sessions on: what this consumer
    remembers of them would only make its next writes conflict."""
    from app.adapters.db.sessions_repo import VersionedStates
    from app.adapters.db.settings_repo import in_force_of
    from app.domain.session import apply_event
    from tests.factories import call_events, to_event

    settings = Settings(_env_file=None, kafka_topic="events")
    loop = ConsumerLoop(settings, engine=None, publisher=SimpleNamespace(producer=None), crm_name="sandbox")
    loop.consumer = _Consumer()
    await _Rebalance(loop).on_partitions_assigned({TP})
    state = apply_event(None, to_event(call_events("c1")[0]))
    loop.ingest.saved_states.remember(VersionedStates({"c1": state}, {"c1": 1}), in_force_of(None, None))
    assert len(loop.ingest.saved_states) == 1
    await _Rebalance(loop).on_partitions_revoked({TP})
    assert len(loop.ingest.saved_states) == 0 and loop.ingest.saved_states.settings is None
