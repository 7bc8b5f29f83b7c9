"""`SERVICE_ROLE`: one process may run the consumer alone, another the outbox worker
alone (two Deployments of one image), and together they do what `all` does. Found by
`make bench`: on one event loop the worker's rows delay the consumer's transaction, and
at 1,000 events/s that was most of the time from publish to the consumer's commit."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from app.adapters.db.schema import processed_events, sandbox_notes, sandbox_records
from tests.helpers import eventually, run_in_process
from tests.integration.kafka_helpers import publish, read_all
from tests.integration.test_end_to_end import example_documents


async def _count(engine, table) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def _readiness(base_url: str) -> dict:
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_a_consumer_and_a_worker_process_share_the_work(clean_db, make_settings, kafka_bootstrap, topics):
    documents = example_documents()
    consumer_settings = make_settings(service_role="consumer")
    worker_settings = make_settings(service_role="worker")
    async with run_in_process(consumer_settings) as consumer:
        checks = (await _readiness(consumer.base_url))["checks"]
        assert "consumer" in checks and "crm" not in checks  # it calls no CRM
        await publish(kafka_bootstrap, topics.events, documents)

        async def all_applied():
            return await _count(clean_db, processed_events) == len(documents)

        await eventually(all_applied)
        assert await _count(clean_db, sandbox_records) == 0  # no worker yet: the rows wait

        async with run_in_process(worker_settings) as worker:
            checks = (await _readiness(worker.base_url))["checks"]
            assert "crm" in checks and "consumer" not in checks  # it joins no consumer group

            async def records_and_notes():
                return (await _count(clean_db, sandbox_records), await _count(clean_db, sandbox_notes)) == (2, 2)

            await eventually(records_and_notes)
    outcomes = await read_all(kafka_bootstrap, topics.output, expect=5)
    assert sorted(m.key.decode() for m in outcomes) == ["call-1001", "call-1001", "chat-2001", "chat-2001", "chat-2002"]


async def test_an_unknown_role_is_refused_naming_the_variable(make_settings):
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="service_role"):
        make_settings(service_role="both")
