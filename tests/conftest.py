"""Shared fixtures: a real PostgreSQL database of the tests' own and a real Kafka-compatible
broker. What test modules import (settings under test, topics, the service running
in-process, `eventually`) is in tests/helpers.py, not here.

- PostgreSQL: TEST_DATABASE_URL, else 127.0.0.1:5432 (user postgres). A fresh database
  is created per test run and dropped afterwards.
- Broker: KAFKA_BOOTSTRAP_SERVERS, else an embedded Tansu broker on a free port.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.db.engine import asyncpg_dsn, build_engine
from app.adapters.db.schema import metadata
from app.entrypoints.service import migrate
from app.settings import Settings, normalize_database_url
from tests.helpers import Topics, new_topics, server_url, service_settings, with_database
from tools.dev.embedded import EmbeddedBroker, free_port


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
    return normalize_database_url(test_backend.postgres_url) if test_backend.postgres_url else server_url()


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    server = postgres_server_url
    name = f"crm_records_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(asyncpg_dsn(server))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(server, name)
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


@pytest.fixture
async def topics(kafka_bootstrap: str) -> Topics:
    return await new_topics(kafka_bootstrap)


@pytest.fixture
def make_settings(database_url: str, kafka_bootstrap: str, topics: Topics):
    def build(**overrides) -> Settings:
        return service_settings(database_url, kafka_bootstrap, topics, **overrides)

    return build
