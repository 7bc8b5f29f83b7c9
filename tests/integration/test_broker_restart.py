"""`make run` restarted: the embedded broker comes back empty (new cluster, no topics, no
committed offsets) while PostgreSQL keeps everything. The service notices the new
cluster, says so, and re-published events make no second record."""

from __future__ import annotations

import logging

from sqlalchemy import func, select

from app.adapters.db.schema import kafka_clusters, processed_events, sandbox_records
from tests.factories import call_events
from tests.helpers import Topics, eventually, run_in_process, service_settings
from tests.integration.kafka_helpers import publish
from tests.integration.test_end_to_end import example_documents
from tools.dev.embedded import EmbeddedBroker, free_port


async def _count(engine, table) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def test_a_new_empty_broker_is_noticed_and_nothing_is_done_twice(clean_db, database_url, caplog):
    caplog.set_level(logging.INFO, logger="app")
    port = free_port()
    topics = Topics("restart-events", "restart-events.dlq", "restart-records")
    documents = example_documents()

    first = EmbeddedBroker(port).start()
    try:
        settings = service_settings(database_url, first.bootstrap_servers, topics)
        async with run_in_process(settings):
            await publish(first.bootstrap_servers, topics.events, documents)
            await eventually(lambda: _records_with(clean_db, 2), timeout=30)
    finally:
        first.stop()
    applied_before = await _count(clean_db, processed_events)

    second = EmbeddedBroker(port).start()  # same address, nothing in it
    try:
        assert second.cluster_id != first.cluster_id
        caplog.clear()
        async with run_in_process(settings):
            # The same sessions published again, and one new session.
            await publish(second.bootstrap_servers, topics.events, documents + call_events("after-restart-1"))
            await eventually(lambda: _records_with(clean_db, 3), timeout=30)
            await eventually(lambda: _all_applied(clean_db, applied_before + 4), timeout=30)
    finally:
        second.stop()

    async with clean_db.connect() as conn:
        sessions = sorted((await conn.execute(select(sandbox_records.c.external_id))).scalars())
        row = (await conn.execute(select(kafka_clusters))).mappings().one()
    assert sessions == ["after-restart-1", "call-1001", "chat-2001"]
    assert row["cluster_id"] == second.cluster_id and row["previous_cluster_id"] == first.cluster_id
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Kafka cluster changed" in m and first.cluster_id in m for m in warnings), warnings


async def _records_with(engine, count: int) -> bool:
    return await _count(engine, sandbox_records) == count


async def _all_applied(engine, count: int) -> bool:
    return await _count(engine, processed_events) == count
