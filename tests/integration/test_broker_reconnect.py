"""The broker goes away and comes back on the same port (issue 10): the service says so
on /readyz while it is away and reconnects on its own. The embedded broker keeps its
data in memory, so the restarted broker starts empty and the test creates the topics
again, as a durable broker would still have them."""

from __future__ import annotations

import httpx

from tests.factories import call_events
from tests.helpers import Topics, create_topics, eventually, run_in_process, service_settings
from tests.integration.kafka_helpers import publish
from tests.integration.test_compression import _records
from tools.dev.embedded import EmbeddedBroker, free_port


async def _readyz(base_url: str) -> tuple[int, dict]:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        answer = await client.get("/readyz")
    return answer.status_code, answer.json()


async def test_the_service_reconnects_to_a_restarted_broker_and_says_so_meanwhile(
    clean_db, database_url, tmp_path
):
    port = free_port()
    broker = EmbeddedBroker(port, tmp_path / "broker.log").start()
    topics = Topics("events-restart", "events-restart.dlq", "records-restart")
    names = [topics.events, topics.dlq, topics.output]
    await create_topics(broker.bootstrap_servers, names)
    settings = service_settings(database_url, broker.bootstrap_servers, topics)
    try:
        async with run_in_process(settings) as service:
            await publish(broker.bootstrap_servers, topics.events, call_events("before-restart"))
            await eventually(lambda: _has(clean_db, "before-restart"), timeout=30)

            broker.stop()

            async def says_broker_away():
                status, body = await _readyz(service.base_url)
                detail = body["checks"]["consumer"].get("detail", "")
                return (status, detail) if "broker cannot be reached" in detail else None

            status, detail = await eventually(says_broker_away, timeout=30, interval=0.3)
            assert status == 503 and body_names_consumer(await _readyz(service.base_url))

            broker = EmbeddedBroker(port, tmp_path / "broker.log").start()
            await create_topics(broker.bootstrap_servers, names)
            await eventually(lambda: _ready(service.base_url), timeout=60, interval=0.3)
            await publish(broker.bootstrap_servers, topics.events, call_events("after-restart"))
            await eventually(lambda: _has(clean_db, "after-restart"), timeout=60)
            assert not service.task.done()
    finally:
        broker.stop()


def body_names_consumer(answer: tuple[int, dict]) -> bool:
    return "consumer" in answer[1]["not_ready"]


async def _ready(base_url: str) -> bool:
    return (await _readyz(base_url))[0] == 200


async def _has(engine, session_id: str) -> bool:
    return session_id in await _records(engine)
