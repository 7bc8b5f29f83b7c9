"""/metrics costs the database nothing per scrape (issue 9, item 5): its database-derived
gauges are refreshed in the background at a fixed interval."""

from __future__ import annotations

import asyncio

from sqlalchemy import event

from app.adapters.db import outbox_repo
from app.adapters.db.outbox_repo import NewOutboxRow
from app.service.gauges import refresh_gauges_periodically
from tests.helpers import eventually
from tests.integration.asgi_api import api_settings, asgi_client, build_runtime


class StatementCounter:
    def __init__(self, engine):
        self.count = 0
        self.engine = engine.sync_engine

    def _executed(self, *args, **kwargs):
        self.count += 1

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._executed)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self._executed)


def pending_rows(body: str) -> float | None:
    prefix = 'crm_records_outbox_rows{status="pending"} '
    return next((float(x.removeprefix(prefix)) for x in body.splitlines() if x.startswith(prefix)), None)


async def test_a_scrape_issues_no_query_and_the_background_refresh_keeps_gauges_current(clean_db, database_url):
    runtime = build_runtime(api_settings(database_url), clean_db)
    async with clean_db.begin() as conn:
        await outbox_repo.enqueue(conn, [NewOutboxRow("k-1", "record", "s-1", "s-1", {}),
                                         NewOutboxRow("k-2", "record", "s-2", "s-2", {})])
    stop = asyncio.Event()
    refresher = asyncio.create_task(refresh_gauges_periodically(clean_db, 0.1, stop))
    try:
        async with asgi_client(runtime, token=None) as client:
            assert await eventually(lambda: _scrape_shows(client, 2.0))
            with StatementCounter(clean_db) as during_scrapes:
                stop.set()
                await refresher  # no background refresh while counting
                bodies = await asyncio.gather(*(client.get("/metrics") for _ in range(50)))
            assert during_scrapes.count == 0
            assert all(b.status_code == 200 and pending_rows(b.text) == 2.0 for b in bodies)
    finally:
        stop.set()
        await refresher


async def _scrape_shows(client, pending: float) -> bool:
    response = await client.get("/metrics")
    return response.status_code == 200 and pending_rows(response.text) == pending
