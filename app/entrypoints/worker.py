"""The outbox worker loop: claim due rows (FOR UPDATE SKIP LOCKED), run up to
`OUTBOX_CONCURRENCY` of them at once, and sleep until PostgreSQL notifies that new
rows were committed or the next poll is due. Any number of replicas may run it."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.db import outbox_repo
from app.adapters.db.engine import asyncpg_dsn
from app.service.outbox import OutboxRunner
from app.settings import Settings

log = logging.getLogger(__name__)


class OutboxWorker:
    def __init__(self, settings: Settings, engine: AsyncEngine, runner: OutboxRunner):
        self.settings = settings
        self.engine = engine
        self.runner = runner
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task] = set()

    async def run(self, stop: asyncio.Event) -> None:
        listener = await self._listen()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                # Cleared before claiming: a NOTIFY that lands while we claim sets it again,
                # so it is never lost to the poll interval.
                self._wake.clear()
                free = self.settings.outbox_concurrency - len(self._in_flight)
                claimed = []
                if free > 0:
                    try:
                        claimed = await self._claim(min(free, self.settings.outbox_claim_batch))
                    except Exception as exc:
                        log.error("claiming outbox rows failed: %r", exc)
                        await asyncio.sleep(1.0)
                for row in claimed:
                    task = asyncio.create_task(self._run_one(row))
                    self._in_flight.add(task)
                    task.add_done_callback(self._finished)
                if claimed and len(claimed) == free:
                    # There may be more; wait only for a slot.
                    await asyncio.wait([stopping, *self._in_flight], return_when=asyncio.FIRST_COMPLETED)
                    continue
                if claimed:
                    continue
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(
                    [stopping, waker], timeout=self.settings.outbox_poll_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                waker.cancel()
        finally:
            stopping.cancel()
            if self._in_flight:
                # Let running CRM calls finish and be recorded; an interrupted one is repeated
                # idempotently by whoever claims it after its lease.
                await asyncio.wait(self._in_flight, timeout=10)
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()

    def _finished(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        self._wake.set()

    async def _claim(self, limit: int):
        async with self.engine.begin() as conn:
            return await outbox_repo.claim(conn, limit, self.settings.outbox_lease_seconds)

    async def _run_one(self, row) -> None:
        try:
            await self.runner.run(row)
        except Exception as exc:
            # Bookkeeping itself failed (database gone): the lease expiry will bring it back.
            # Expected when the database is down, so one line, no traceback.
            log.error("outbox row %s could not be recorded, it is retried after its lease: %r", row.id, exc)

    async def _listen(self) -> asyncpg.Connection | None:
        try:
            connection = await asyncpg.connect(asyncpg_dsn(self.engine.url.render_as_string(hide_password=False)))
            await connection.add_listener(outbox_repo.NOTIFY_CHANNEL, lambda *_: self._wake.set())
            return connection
        except Exception as exc:  # polling still works, only slower
            log.warning("LISTEN for outbox notifications failed (%r); polling only", exc)
            return None
