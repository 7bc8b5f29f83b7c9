"""Helpers the test modules import: the service's settings under test, topics, the service
running in-process, and `eventually`, the one way a test waits for something to happen.

conftest.py holds only fixtures (and imports what it needs from here): a test module
imports from this module, never from conftest.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.settings import Settings, normalize_database_url
from tools.dev.embedded import free_port

ADMIN_TOKEN = "test-admin-token"

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T] | T], *, timeout: float = 20.0, interval: float = 0.1
) -> T:
    """Call `check()` (sync or async) until it returns a truthy value, and return that value;
    fail after `timeout` seconds naming the last value. An exception raised by `check`
    ends the wait at once (a check can fail fast, e.g. when the process it waits on died)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if loop.time() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s; last value: {last!r}")
        await asyncio.sleep(interval)


def server_url() -> str:
    """The PostgreSQL server the tests use: TEST_DATABASE_URL, else 127.0.0.1:5432."""
    return normalize_database_url(
        os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    )


def with_database(url: str, name: str) -> str:
    """`url` naming database `name` instead (its query string kept)."""
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return base + ("?" + query if query else "")


@dataclass(frozen=True)
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
    async with httpx.AsyncClient(base_url=service.base_url, timeout=2.0) as client:

        async def ready() -> bool:
            if service.task.done():
                service.task.result()  # raises what stopped it
                raise AssertionError("the service stopped before it was ready")
            with contextlib.suppress(httpx.HTTPError):
                return (await client.get("/readyz")).status_code == 200
            return False

        await eventually(ready, timeout=timeout, interval=0.2)


@contextlib.asynccontextmanager
async def executed_plans(pg: asyncpg.Connection) -> AsyncIterator[list[dict[str, Any]]]:
    """The plans of the statements run on `pg` inside the block, with their actual rows."""
    plans: list[dict[str, Any]] = []

    def collect(_connection: Any, message: Any) -> None:
        text_ = message.message
        if "plan:" in text_:
            plans.append(json.loads(text_.split("plan:", 1)[1])["Plan"])

    await pg.execute(
        "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on; "
        "SET auto_explain.log_format = 'json'; SET auto_explain.log_level = 'notice'; "
        "SET auto_explain.log_buffers = on; "
        "SET auto_explain.log_nested_statements = on"
    )
    pg.add_log_listener(collect)
    try:
        yield plans
    finally:
        # Notices reach listeners through the event loop: this round trip lets them in.
        await pg.execute("SET auto_explain.log_min_duration = -1")
        pg.remove_log_listener(collect)


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def rows_read(plan: dict[str, Any], relation: str) -> float:
    """Rows the plan's scans of `relation` read, kept or filtered out, over all their loops."""
    total = 0.0
    for node in nodes(plan):
        if node.get("Relation Name") == relation:
            loops = node.get("Actual Loops", 1)
            kept = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
            total += kept * loops + node.get("Rows Removed by Index Recheck", 0)
    return total


async def driver_connection(conn: Any) -> asyncpg.Connection:
    """asyncpg's connection under SQLAlchemy's `conn`, inside `conn`'s transaction if it
    has one: for repository functions that run on asyncpg's connection (raw.py) in a
    test's transaction. SQLAlchemy begins a transaction lazily, at its first statement,
    so one is run first."""
    from sqlalchemy import text

    if conn.in_transaction():
        await conn.execute(text("SELECT 1"))
    return (await conn.get_raw_connection()).driver_connection
