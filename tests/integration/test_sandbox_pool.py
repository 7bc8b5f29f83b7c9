"""The sandbox CRM's own pool (adapters/crm/sandbox.py) adds a bounded number of
connections to a replica's budget (README: DATABASE_POOL_SIZE), however many outbox
rows call the sandbox at once: a call waits for a connection rather than opening more."""

from __future__ import annotations

import asyncio

from sqlalchemy import event

from app.adapters.crm.base import EndUserInfo
from app.adapters.crm.sandbox import SANDBOX_CONNECTIONS, SandboxAdapter
from app.settings import Settings


async def test_many_calls_at_once_open_no_more_than_the_sandbox_pool(clean_db):
    sandbox = SandboxAdapter.from_settings(Settings(_env_file=None), engine=clean_db)
    opened: list[int] = []
    event.listen(sandbox.engine.sync_engine, "connect", lambda *_: opened.append(1))
    try:
        users = [EndUserInfo(f"eu-pool-{n}", None, f"+5511900{n:06d}", None) for n in range(3 * SANDBOX_CONNECTIONS)]
        contacts = await asyncio.gather(*(sandbox.find_or_create_end_user(user) for user in users))
    finally:
        await sandbox.aclose()
    assert len(set(contacts)) == len(users)  # every call was answered
    assert 0 < len(opened) <= SANDBOX_CONNECTIONS


async def test_the_sandbox_commits_without_waiting_for_the_wal_flush_and_the_service_waits(clean_db):
    """The sandbox stands for a remote CRM, whose writes cost the service's database
    nothing; its commits do not wait for their WAL flush (PostgreSQL's asynchronous
    commit), which was most of what PostgreSQL's busy backends waited on at 1,000 events/s
    (docs/bench.md). The service's own connections still wait: the consumer's write is
    what its Kafka offsets follow, and the worker's claims and bookkeeping are what keeps
    a row from being run twice (the one statement of its own that does not wait says so
    itself: test_outbox_store)."""
    sandbox = SandboxAdapter.from_settings(Settings(_env_file=None), engine=clean_db)
    try:
        async with sandbox.engine.connect() as conn:
            sandbox_setting = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar()
    finally:
        await sandbox.aclose()
    async with clean_db.connect() as conn:
        service_setting = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar()
    assert sandbox_setting == "off"
    assert service_setting == "on"
