"""The async engine, built once from Settings."""

from __future__ import annotations

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.settings import Settings


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def build_engine(
    settings: Settings, *, url: str | None = None, pool_size: int | None = None, max_overflow: int = 8,
    plan_every_statement: bool = False, commits_wait_for_flush: bool = True,
) -> AsyncEngine:
    """The service's engine. `plan_every_statement`: PostgreSQL plans each statement for
    its own parameters and the tables as they are, never a generic plan (the sandbox's).
    `commits_wait_for_flush=False`: a commit returns before its WAL is on disk
    (`synchronous_commit = off`; the sandbox's, see SandboxAdapter.from_settings)."""
    # The driver prepares each statement once per connection, and after five runs
    # PostgreSQL may switch it to a generic plan made with the sizes the tables had then and
    # keep it until the table is next analyzed. The service's own statements are written so
    # that their generic plans stay bounded as tables grow (test_cached_plans), and they
    # keep PostgreSQL's default: planning every statement cost PostgreSQL about 40 % on top
    # of executing them at 1,000 events/s (docs/bench.md).
    server_settings = {"plan_cache_mode": "force_custom_plan"} if plan_every_statement else {}
    if not commits_wait_for_flush:
        server_settings["synchronous_commit"] = "off"
    return create_async_engine(
        url or settings.resolved_database_url(),
        pool_size=pool_size or settings.database_pool_size,
        # The pool itself is sized for the worker's rows in flight plus the consumer;
        # a few more for bursts (the API, the claimer). Connections are held briefly, never
        # across a CRM call, so beyond that a row waits for one rather than opening a new
        # server process, and a replica never holds more than pool + 8.
        max_overflow=max_overflow,
        # No pre-ping (a round trip per checkout): a connection lost with a database
        # restart fails once, and the consumer and worker retry their work anyway.
        pool_recycle=1800,
        # An error names the statement, never its parameters: they carry end users'
        # phone numbers, emails and names.
        hide_parameters=True,
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
        connect_args={"server_settings": server_settings},
    )


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """The same database as a plain libpq URL, for asyncpg's LISTEN connection."""
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)
