"""Starting while a dependency is missing: wait for it, never exit.

A replica started while PostgreSQL (or the broker) is down keeps trying with backoff,
logs once per interval what it is waiting for and why, and says so on /readyz; its
/healthz answers all along. Exiting instead turns into CrashLoopBackOff, with restart
delays that keep growing after the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from app.adapters.db.errors import short_description
from app.service.readiness import CheckResult

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class StartupProgress:
    """What a starting replica waits for (None once everything is up)."""

    waiting_for: str | None = "starting"
    stopping: bool = False

    def readiness(self) -> CheckResult:
        if self.stopping:
            return CheckResult(False, "shutting down")
        if self.waiting_for is not None:
            return CheckResult(False, f"waiting for {self.waiting_for}")
        return CheckResult(True)


async def keep_trying(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    progress: StartupProgress,
    stop: asyncio.Event,
    *,
    log_interval_seconds: float = 10.0,
    first_delay_seconds: float = 0.5,
    max_delay_seconds: float = 10.0,
) -> T | None:
    """`await attempt()` until it succeeds (returns its result) or `stop` is set (None)."""
    delay = first_delay_seconds
    started = time.monotonic()
    logged_at: float | None = None
    while not stop.is_set():
        progress.waiting_for = what
        try:
            result = await attempt()
        except Exception as exc:
            why = short_description(exc)
            progress.waiting_for = f"{what}: {why}"
            now = time.monotonic()
            if logged_at is None or now - logged_at >= log_interval_seconds:
                logged_at = now
                log.warning("waiting for %s (%.0f s so far, retrying with backoff): %s", what, now - started, why)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(max_delay_seconds, delay * 2)
            continue
        if logged_at is not None:
            log.info("%s: done after %.0f s", what, time.monotonic() - started)
        return result
    return None
