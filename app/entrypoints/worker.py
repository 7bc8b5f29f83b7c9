"""The outbox worker loop: claim due rows (FOR UPDATE SKIP LOCKED), run the CRM work of
up to `OUTBOX_CONCURRENCY` of them at once, and sleep until PostgreSQL notifies that new
rows were committed or the next poll is due. Any number of replicas may run it.

While a row is in flight (waiting for the CRM's rate budget, or for a slow CRM) the
worker extends its lease every third of `OUTBOX_LEASE_SECONDS`, so a row is claimed
again only when its worker is really gone; and a worker that lost a row anyway has its
bookkeeping refused by the claim fence, so it publishes nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.db import outbox_claims, outbox_repo, raw
from app.adapters.db.engine import asyncpg_dsn
from app.adapters.db.outbox_repo import Claim
from app.domain.kinds import OutboxStatus
from app.service.outbox import OutboxRunner
from app.settings import Settings

log = logging.getLogger(__name__)


class OutboxWorker:
    def __init__(self, settings: Settings, engine: AsyncEngine, runner: OutboxRunner, *,
                 direct_wake_token: str | None = None):
        """`direct_wake_token`: the payload of the notifications of this process's own
        consumer, which wakes this worker directly (`wake`); those are not heard twice."""
        self.settings = settings
        self.engine = engine
        self.runner = runner
        self.direct_wake_token = direct_wake_token
        self._wake = asyncio.Event()
        # A claim is a round trip and a query over the due rows: claim only when one may
        # find something (test_outbox_claims). Due rows may be waiting for a slot when a
        # claim took as many rows as slots were free, or none was free.
        self._waiting_for_slot = False
        self._claims_started = 0
        runner.completions.watch_successors(claims_started=lambda: self._claims_started, wake=self.wake)
        self._in_flight: set[asyncio.Task] = set()  # every row not finished
        # The rows whose CRM work is not over: at most `outbox_concurrency`. A row past it
        # (its bookkeeping, its outcome events) holds no slot; all rows in flight are
        # bounded by twice that, so a slow database cannot pile up finished rows.
        self._at_crm: set[asyncio.Task] = set()
        self._claims: dict[int, str | None] = {}  # in-flight row id -> its claim id
        self._row_ids: dict[asyncio.Task, int] = {}  # for releasing rows at shutdown
        # The lease heartbeat is one statement: atomic without a BEGIN and a COMMIT around
        # it (two round trips).
        self._one_statement = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def run(self, stop: asyncio.Event) -> None:
        listener = await self._listen()
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: self._wake.set())
        heartbeat = asyncio.create_task(self._keep_leases(), name="outbox-lease-heartbeat")
        try:
            while not stop.is_set():
                # Cleared before claiming: a NOTIFY that lands while we claim sets it again,
                # so it is never lost to the poll interval.
                self._wake.clear()
                free = self._free_slots()
                limit = min(free, self.settings.outbox_claim_batch)
                claimed = []
                if free > 0:
                    self._claims_started += 1
                    try:
                        claimed = await self._claim(limit)
                    except Exception as exc:
                        log.error("claiming outbox rows failed: %r", exc)
                        await asyncio.sleep(1.0)
                for row in claimed:
                    self._start(row)
                # A claim that got fewer rows than it asked for got every due row (as of
                # its snapshot); one committed since has woken the worker again.
                full = free == 0 or len(claimed) == limit
                self._waiting_for_slot = full and limit == free
                if full and self._free_slots() > 0:
                    continue  # the claim batch's limit, not the slots: more may be due now
                # Idle, or every slot taken: until new rows, a freed slot or the stop wake us.
                # Awaited directly, not through a task per wait: a wake-up is one turn of a
                # busy event loop away from the next claim, not three.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.outbox_poll_seconds):
                        await self._wake.wait()
        finally:
            stopping.cancel()
            heartbeat.cancel()
            await self._finish_or_release()
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()

    def wake(self) -> None:
        """New rows were committed in this process (the consumer): claim now."""
        self._wake.set()

    def _free_slots(self) -> int:
        limit = self.settings.outbox_concurrency
        return min(limit - len(self._at_crm), 2 * limit - len(self._in_flight))

    def _start(self, row) -> None:
        task = asyncio.create_task(self._run_one(row, lambda: self._crm_done(task)))
        self._in_flight.add(task)
        self._at_crm.add(task)
        self._row_ids[task] = row.id
        task.add_done_callback(self._finished)

    def _crm_done(self, task: asyncio.Task) -> None:
        self._at_crm.discard(task)
        if self._waiting_for_slot:
            self._wake.set()

    def _finished(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        self._at_crm.discard(task)
        self._row_ids.pop(task, None)
        if self._waiting_for_slot:
            self._wake.set()

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        if self.direct_wake_token is None or payload != self.direct_wake_token:
            self._wake.set()

    async def _finish_or_release(self) -> None:
        """Shutdown: let running rows finish and be recorded, within the shutdown deadline
        (less a margin for the rest of the shutdown); rows still running then are cancelled
        and handed back (pending, attempt not counted), so another replica carries them out
        idempotently without waiting for their lease to run out; due after the CRM timeout,
        as a timed-out write is (test_late_write): a write cancelled here may still land."""
        if not self._in_flight:
            return
        # What is left for the rest: cancelling (1 s), releasing (2 s), the process (3.5 s).
        grace = max(0.2, self.settings.shutdown_timeout_seconds - 6.5)
        _, late = await asyncio.wait(set(self._in_flight), timeout=grace)
        if not late:
            return
        row_ids = [self._row_ids[task] for task in late if task in self._row_ids]
        for task in late:
            task.cancel()
        await asyncio.wait(late, timeout=1)
        try:
            async with asyncio.timeout(2):
                async with self.engine.begin() as conn:
                    released = await outbox_repo.release(
                        conn, row_ids, not_before_seconds=self.settings.crm_timeout_seconds)
            log.info("shutdown: released %d unfinished outbox rows for other replicas", released)
        except Exception as exc:  # their leases still bring them back
            log.warning("shutdown: could not release %d outbox rows (%r); they return after their lease",
                        len(row_ids), exc)

    async def _claim(self, limit: int):
        async with raw.connection(self.engine) as pg:
            # With each row's context: one round trip fewer before its CRM call.
            return await outbox_claims.claim_with_context(pg, limit, self.settings.outbox_lease_seconds,
                                                        crm=self.runner.crm.name, account=self.runner.account)

    async def _run_one(self, row, crm_done: Callable[[], None]) -> None:
        self._claims[row.id] = row.claim_id
        try:
            if await self.runner.run(row, crm_done) != OutboxStatus.DONE:
                # Parked (the rows behind it are free to go), put back, or lost to another
                # worker: claim again. A row done wakes it only for the rows behind it
                # (CompletionWriter.watch_successors).
                self._wake.set()
        except Exception as exc:
            self._wake.set()
            # Bookkeeping itself failed (database gone): the lease expiry will bring it back.
            # Expected when the database is down, so one line, no traceback.
            log.error("outbox row %s could not be recorded, it is retried after its lease: %r", row.id, exc)
        finally:
            self._claims.pop(row.id, None)

    async def _keep_leases(self) -> None:
        lease = self.settings.outbox_lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            claims = [Claim(outbox_id, claim_id) for outbox_id, claim_id in self._claims.items()]
            if not claims:
                continue
            try:
                async with self._one_statement.begin() as conn:
                    await outbox_repo.extend_leases(conn, claims, lease)
            except Exception as exc:  # the next beat tries again; the fence guards the rest
                log.warning("extending the leases of %d in-flight outbox rows failed: %r", len(claims), exc)

    async def _listen(self) -> asyncpg.Connection | None:
        try:
            connection = await asyncpg.connect(asyncpg_dsn(self.engine.url.render_as_string(hide_password=False)))
            await connection.add_listener(outbox_repo.NOTIFY_CHANNEL, self._notified)
            return connection
        except Exception as exc:  # polling still works, only slower
            log.warning("LISTEN for outbox notifications failed (%r); polling only", exc)
            return None
