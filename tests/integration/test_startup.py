"""A replica started while its dependencies are missing waits for them (issue 10, item 4):
/healthz answers, /readyz says what is missing, the wait is logged once per interval,
and the replica comes up on its own when they appear."""

from __future__ import annotations

import asyncio
import logging

import httpx
from sqlalchemy.engine import make_url

from tests.factories import call_events
from tests.helpers import eventually, run_in_process, service_settings, wait_until_ready
from tests.integration.kafka_helpers import publish
from tests.integration.pg_faults import PostgresFaultProxy
from tests.integration.test_compression import _records
from tools.dev.embedded import EmbeddedBroker, free_port


async def _health(base_url: str) -> tuple[int, int, dict] | None:
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=3) as client:
            health = await client.get("/healthz")
            ready = await client.get("/readyz")
    except httpx.HTTPError:
        return None
    return health.status_code, ready.status_code, ready.json()


async def test_a_replica_started_while_the_database_is_down_waits_and_comes_up(
    clean_db, kafka_bootstrap, topics, database_url, caplog
):
    url = make_url(database_url)
    proxy = PostgresFaultProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.port = free_port()  # nothing listens there yet: connection refused
    settings = service_settings(proxy.url(url.database), kafka_bootstrap, topics)
    caplog.set_level(logging.INFO, logger="app")
    async with run_in_process(settings, wait_ready=False) as service:
        answer = await eventually(lambda: _health(service.base_url), timeout=20)
        healthz, readyz, body = answer
        assert (healthz, readyz) == (200, 503)
        assert body["checks"]["startup"]["ready"] is False
        assert "waiting for the database (to apply migrations)" in body["checks"]["startup"]["detail"]
        assert "refused" in body["checks"]["startup"]["detail"].lower()
        await asyncio.sleep(4)
        assert not service.task.done()
        waiting = [r for r in caplog.records if r.getMessage().startswith("waiting for the database")]
        assert len(waiting) == 1, [r.getMessage() for r in waiting]  # once per 10 s, not once per try

        # The server comes back, first still starting up (57P03), then for real.
        await proxy.start(proxy.port)
        proxy.starting_up()
        await eventually(lambda: _detail_mentions(service.base_url, "57P03"), timeout=30)
        await proxy.recover()
        await wait_until_ready(service, timeout=60)
        await publish(kafka_bootstrap, topics.events, call_events("after-db-wait"))
        await eventually(lambda: _records(clean_db), timeout=30)
    await proxy.stop()


async def test_a_replica_started_while_the_broker_is_down_waits_and_comes_up(
    clean_db, database_url, topics, tmp_path
):
    port = free_port()
    settings = service_settings(database_url, f"127.0.0.1:{port}", topics)
    async with run_in_process(settings, wait_ready=False) as service:
        answer = await eventually(lambda: _detail_mentions(service.base_url, "the broker"), timeout=20)
        assert answer
        assert (await _health(service.base_url))[0] == 200
        broker = EmbeddedBroker(port, tmp_path / "broker.log").start()
        try:
            await wait_until_ready(service, timeout=60)
            await publish(broker.bootstrap_servers, topics.events, call_events("after-broker-wait"))
            await eventually(lambda: _records(clean_db), timeout=30)
        finally:
            service.stop.set()
            await asyncio.wait_for(service.task, timeout=30)
            broker.stop()


async def _detail_mentions(base_url: str, text: str) -> bool:
    answer = await _health(base_url)
    return answer is not None and text in answer[2]["checks"]["startup"].get("detail", "")
