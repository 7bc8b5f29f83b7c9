"""Gauges derived from the database, refreshed in the background at a fixed interval.

A scrape only reads the registry: however often and however many scrapers come, the
database sees one small query pair per interval (300 concurrent scrapes that each
queried the outbox had raised publish-to-record latency six-fold)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.adapters.db import outbox_repo

log = logging.getLogger("app.gauges")


async def refresh_outbox_gauges(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        counts = await outbox_repo.backlog_counts(conn)
        oldest_due_age = await outbox_repo.oldest_due_age_seconds(conn)
    for status, count in counts.items():
        metrics.outbox_rows.labels(status).set(count)
    metrics.outbox_oldest_due_age.set(oldest_due_age)


async def refresh_gauges_periodically(engine: AsyncEngine, interval_seconds: float, stop: asyncio.Event) -> None:
    """Until `stop`: refresh, then wait `interval_seconds`. A failed refresh keeps the last
    values (the scrape still answers) and is tried again at the next interval."""
    while not stop.is_set():
        try:
            await refresh_outbox_gauges(engine)
        except Exception as exc:
            log.warning("database gauges not refreshed: %s", type(exc).__name__)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
