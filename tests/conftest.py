"""Shared fixtures: a real PostgreSQL database of the tests' own, a real Kafka-compatible
broker, and the service itself running in-process or as a subprocess.

- PostgreSQL: TEST_DATABASE_URL, else 127.0.0.1:5432 (user postgres). A fresh database
  is created per test run and dropped afterwards.
- Broker: KAFKA_BOOTSTRAP_SERVERS, else an embedded Tansu broker on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.db.engine import asyncpg_dsn, build_engine
from app.adapters.db.schema import metadata
from app.entrypoints.embedded import EmbeddedBroker, free_port
from app.entrypoints.service import migrate
from app.settings import Settings, normalize_database_url

ADMIN_TOKEN = "test-admin-token"


def _server_url() -> str:
    return normalize_database_url(
        os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    )


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return base + ("?" + query if query else "")


def pytest_report_header(config):
    from tests.backends import docker_reachable, select_backend

    wants_containers = os.environ.get("TEST_BACKEND") == "containers"
    return "backend: " + select_backend(os.environ, wants_containers and docker_reachable(os.environ)).note


@pytest.fixture(scope="session")
def test_backend():
    """TEST_BACKEND=containers: testcontainers' PostgreSQL and Kafka (tests/backends.py)."""
    from tests.backends import start_backend

    with start_backend() as running:
        yield running


@pytest.fixture(scope="session")
def postgres_server_url(test_backend) -> str:
    return normalize_database_url(test_backend.postgres_url) if test_backend.postgres_url else _server_url()


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    server = postgres_server_url
    name = f"crm_records_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _with_database(server, name)
    await asyncio.to_thread(migrate, Settings(_env_file=None, database_url=url))
    yield url
    admin = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = build_engine(Settings(_env_file=None, database_url=database_url))
    yield engine
    await engine.dispose()


@pytest.fixture
async def clean_db(engine: AsyncEngine) -> AsyncEngine:
    """Every table emptied: each test starts from nothing."""
    names = ", ".join(table.name for table in metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    return engine


@pytest.fixture(scope="session")
def kafka_bootstrap(test_backend) -> str:
    if test_backend.kafka_bootstrap:
        yield test_backend.kafka_bootstrap
        return
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    broker = EmbeddedBroker(free_port()).start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@dataclass
class Topics:
    events: str
    dlq: str
    output: str


async def create_topics(bootstrap: str, names: list[str], partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def new_topics(bootstrap: str) -> Topics:
    suffix = uuid.uuid4().hex[:8]
    made = Topics(f"events-{suffix}", f"events-{suffix}.dlq", f"records-{suffix}")
    await create_topics(bootstrap, [made.events, made.dlq, made.output])
    return made


@pytest.fixture
async def topics(kafka_bootstrap: str) -> Topics:
    return await new_topics(kafka_bootstrap)


def service_settings(database_url: str, kafka_bootstrap: str, topics: Topics, **overrides) -> Settings:
    """Settings for a service under test: its own topics and group, short timeouts and
    backoffs so tests are quick; keyword arguments override any field."""
    values = dict(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_topic=topics.events,
        kafka_dlq_topic=topics.dlq,
        kafka_output_topic=topics.output,
        kafka_group_id=f"group-{topics.events}",
        kafka_topic_partitions=3,
        kafka_session_timeout_ms=6000,
        kafka_heartbeat_interval_ms=1000,
        admin_api_token=ADMIN_TOKEN,
        http_host="127.0.0.1",
        http_port=free_port(),
        outbox_poll_seconds=0.2,
        outbox_backoff_base_seconds=0.1,
        outbox_backoff_max_seconds=1.0,
        outbox_lease_seconds=5.0,
        crm_timeout_seconds=5.0,
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def make_settings(database_url: str, kafka_bootstrap: str, topics: Topics):
    def build(**overrides) -> Settings:
        return service_settings(database_url, kafka_bootstrap, topics, **overrides)

    return build


@dataclass
class RunningService:
    settings: Settings
    base_url: str
    stop: asyncio.Event
    task: asyncio.Task

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, timeout=10.0, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )


@contextlib.asynccontextmanager
async def run_in_process(settings: Settings, *, wait_ready: bool = True) -> AsyncIterator[RunningService]:
    from app.entrypoints.service import run_service

    stop = asyncio.Event()
    task = asyncio.create_task(run_service(settings, stop))
    service = RunningService(settings, f"http://127.0.0.1:{settings.http_port}", stop, task)
    try:
        if wait_ready:
            await wait_until_ready(service)
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def wait_until_ready(service: RunningService, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=service.base_url, timeout=2.0) as client:
        while True:
            if service.task.done():
                service.task.result()  # raises what stopped it
                raise AssertionError("the service stopped before it was ready")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("the service did not become ready in time")
            await asyncio.sleep(0.2)


async def eventually(check, timeout: float = 20.0, interval: float = 0.1):
    """Poll an async `check()` until it returns a truthy value (returned), or fail."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s; last value: {last!r}")
