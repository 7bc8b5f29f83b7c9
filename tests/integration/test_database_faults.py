"""The database restarting under the consumer: valid events must wait, never be
dead-lettered (issue 10, item 1). PostgreSQL is reached through a fault proxy that
answers like a server in start-up (SQLSTATE 57P03) or drops a batch's connection at
its COMMIT."""

from __future__ import annotations

import asyncio
import collections

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from app.adapters.db.schema import outbox, processed_events, sandbox_records
from tests.factories import call_events
from tests.helpers import eventually, run_in_process, service_settings
from tests.integration.kafka_helpers import publish, read_all
from tests.integration.pg_faults import PostgresFaultProxy


@pytest.fixture
async def pg_proxy(database_url):
    url = make_url(database_url)
    proxy = await PostgresFaultProxy(url.host or "127.0.0.1", url.port or 5432).start()
    yield proxy
    await proxy.stop()


def _through(proxy: PostgresFaultProxy, database_url: str) -> str:
    return proxy.url(make_url(database_url).database)


async def _scalar(engine, statement):
    async with engine.connect() as conn:
        return (await conn.execute(statement)).scalar()


def _sessions(prefix: str, count: int) -> list[dict]:
    documents = []
    for n in range(count):
        documents += call_events(f"{prefix}-{n}", end_user_id=f"{prefix}-eu-{n}", end_user_phone=f"+1555100{n:04d}")
    return documents


async def _all_applied_and_done(engine, events: int) -> bool:
    applied = await _scalar(engine, select(func.count()).select_from(processed_events))
    unfinished = await _scalar(engine, select(func.count()).select_from(outbox).where(outbox.c.status != "done"))
    return applied == events and unfinished == 0


async def _one_record_each(engine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(sandbox_records.c.external_id))).scalars().all()
    return collections.Counter(rows)


async def test_a_database_starting_up_dead_letters_nothing(
    clean_db, kafka_bootstrap, topics, pg_proxy, database_url
):
    documents = _sessions("pg-starting", 8)
    settings = service_settings(_through(pg_proxy, database_url), kafka_bootstrap, topics)
    async with run_in_process(settings):
        pg_proxy.starting_up()
        await publish(kafka_bootstrap, topics.events, documents)
        # The consumer keeps asking and keeps being told 57P03 ...
        await eventually(lambda: _at_least(lambda: pg_proxy.refused_with_57p03, 6), timeout=30)
        await asyncio.sleep(1.0)
        assert await _scalar(clean_db, select(func.count()).select_from(processed_events)) == 0
        # ... and once the server is up, applies the very same batch.
        await pg_proxy.recover()
        await eventually(lambda: _all_applied_and_done(clean_db, len(documents)), timeout=60)
    assert await read_all(kafka_bootstrap, topics.dlq, expect=1, timeout=3) == []
    assert await _one_record_each(clean_db) == {f"pg-starting-{n}": 1 for n in range(8)}


async def test_a_connection_dropped_mid_batch_then_a_restart_dead_letters_nothing(
    clean_db, kafka_bootstrap, topics, pg_proxy, database_url
):
    documents = _sessions("pg-dropped", 8)
    settings = service_settings(_through(pg_proxy, database_url), kafka_bootstrap, topics)
    async with run_in_process(settings):
        # The first batch's COMMIT never arrives: the server "crashes" and then starts up.
        pg_proxy.cut_at_next_commits(1, touching=b"processed_events", then_starting_up=True)
        await publish(kafka_bootstrap, topics.events, documents)
        await eventually(lambda: _at_least(lambda: pg_proxy.cut_commits, 1), timeout=30)
        await eventually(lambda: _at_least(lambda: pg_proxy.refused_with_57p03, 3), timeout=30)
        assert await _scalar(clean_db, select(func.count()).select_from(processed_events)) == 0
        await pg_proxy.recover()
        await eventually(lambda: _all_applied_and_done(clean_db, len(documents)), timeout=60)
    assert await read_all(kafka_bootstrap, topics.dlq, expect=1, timeout=3) == []
    assert await _one_record_each(clean_db) == {f"pg-dropped-{n}": 1 for n in range(8)}


async def _at_least(value, minimum: int):
    return value() >= minimum


async def _readyz(base_url: str) -> tuple[int, dict]:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        answer = await client.get("/readyz")
    return answer.status_code, answer.json()


async def _stalled_seconds(base_url: str) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        text = (await client.get("/metrics")).text
    return {line.split('partition="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith("crm_records_consumer_partition_stalled_seconds{")}


async def test_a_partition_that_cannot_advance_shows_on_readyz_and_metrics(
    clean_db, kafka_bootstrap, topics, pg_proxy, database_url
):
    documents = call_events("stuck-1")
    settings = service_settings(_through(pg_proxy, database_url), kafka_bootstrap, topics,
                                consumer_stuck_partition_seconds=2)
    async with run_in_process(settings) as service:
        # Every consumer transaction loses its connection at COMMIT; the rest of the database
        # answers, so the replica is up but one partition cannot advance.
        pg_proxy.cut_at_next_commits(10_000, touching=b"processed_events")
        await publish(kafka_bootstrap, topics.events, documents)

        async def degraded():
            status, body = await _readyz(service.base_url)
            return (status, body) if body["status"] == "degraded" else None

        status, body = await eventually(degraded, timeout=30, interval=0.3)
        assert status == 503 and body["not_ready"] == ["consumer"]
        stuck = body["checks"]["consumer"]["stuck_partitions"]
        assert len(stuck) == 1 and stuck[0]["topic"] == topics.events and stuck[0]["offset"] == 0
        assert stuck[0]["seconds"] >= 2 and stuck[0]["error"]
        assert f"partition {stuck[0]['partition']} of {topics.events}" in body["checks"]["consumer"]["detail"]
        stalled = await _stalled_seconds(service.base_url)
        assert stalled[str(stuck[0]["partition"])] >= 2

        await pg_proxy.recover()
        await eventually(lambda: _all_applied_and_done(clean_db, len(documents)), timeout=60)
        await eventually(lambda: _ready(service.base_url), timeout=30, interval=0.3)
        assert (await _stalled_seconds(service.base_url))[str(stuck[0]["partition"])] == 0
    assert await read_all(kafka_bootstrap, topics.dlq, expect=1, timeout=3) == []


async def _ready(base_url: str) -> bool:
    return (await _readyz(base_url))[0] == 200
