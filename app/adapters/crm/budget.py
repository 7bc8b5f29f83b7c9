"""The request budget of one CRM account, shared by every replica that speaks to it.

Each CRM's API limit belongs to the customer's account, not to one process, so the
budget is a single schedule kept where all replicas see it (PostgreSQL in the service,
memory in unit tests and for an adapter built without one): every request books the
next free slot, slots are `60 / per_minute` seconds apart, and a request waits for its
slot. Once the vendor's limit is known, a few requests may take their slots at once
(`burst`, a generic cell rate algorithm's tolerance): the pace is 95 % of the limit, so
the other 5 % lets records that arrive together go without waiting for evenly spaced
slots, and every window still holds at most the limit. The rate follows what the
vendor announces on every answer (`VendorQuota`, read from its headers by each
adapter); a configured ceiling only lowers it. A 429 or a
spent "remaining" count pauses the whole account until the vendor's reset.

Priorities: a request for a record (someone waits for the screen pop) may book a slot
up to RECORD_HORIZON_SECONDS ahead; a note only when the queue ahead is short, so a
backlog of notes never delays a record.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from app import metrics

log = logging.getLogger(__name__)


class Priority(IntEnum):
    RECORD = 0  # create, attach, reopen: an agent waits for the record
    NOTE = 1  # end-of-session notes: may wait


# The worker sets the priority of the outbox row it runs; CrmHttp reads it per request.
current_priority: ContextVar[Priority] = ContextVar("current_priority", default=Priority.RECORD)

# How far ahead a request may book its slot, by priority (seconds).
HORIZON_SECONDS = {Priority.RECORD: 30.0, Priority.NOTE: 1.0}
# Before any vendor answer was ever seen (and with no ceiling), requests are spaced as
# if the limit were this: the first answer, a round trip later, gives the real figure.
PROVISIONAL_PER_MINUTE = 600.0
# A budget with no known limit books slots this close together: in effect unpaced, yet
# every request still sees a pause another replica set.
UNPACED_PER_MINUTE = 6_000_000.0
# Paced a little under the announced limit: the vendor's clock and window are not ours.
VENDOR_SHARE = 0.95
# At most this many requests at once beyond the pace: enough for records that arrive
# together, and little excess when the vendor's limit just dropped (the schedule was
# advanced at the old pace) or another integration spends the same window.
MAX_BURST = 4
# With a daily allocation (Salesforce), a spent share pauses for this long before the
# next look (the header says nothing of when the day rolls over).
DAILY_PAUSE_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class VendorQuota:
    """What one answer's headers said about the account's limit."""

    limit: int | None = None  # requests allowed per window
    remaining: int | None = None  # left in the current window
    reset_seconds: float | None = None  # until the window starts over, when the vendor says
    window_seconds: float = 60.0  # 86400 for a daily allocation

    @property
    def daily(self) -> bool:
        return self.window_seconds >= 3600


QuotaReader = Callable[..., "VendorQuota | None"]


def header_int(headers, *names: str) -> int | None:
    for name in names:
        value = headers.get(name)
        if value is None:
            continue
        match = re.match(r"\s*(\d+)", str(value))
        if match:
            return int(match.group(1))
    return None


_SFORCE_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")


def parse_sforce_limit_info(value: str | None) -> VendorQuota | None:
    """`Sforce-Limit-Info: api-usage=N/M`: N of the org's M daily API requests used."""
    match = _SFORCE_USAGE.search(value or "")
    if not match:
        return None
    used, limit = int(match.group(1)), int(match.group(2))
    return VendorQuota(limit=limit, remaining=max(0, limit - used), window_seconds=86400.0)


@dataclass(slots=True)
class BudgetState:
    """What /readyz and the metrics show of a budget."""

    crm: str
    account: str
    per_minute: float | None  # the pace in force (None: not known yet)
    ceiling_per_minute: int | None
    vendor_limit: int | None
    vendor_remaining: int | None
    window_seconds: float
    usable_remaining: int | None  # for a daily allocation: what is left above the reserved share
    paused_for_seconds: float


@dataclass(frozen=True, slots=True)
class Reservation:
    """What `BudgetStore.reserve` answers. Booked: the slot is this request's and starts
    in `wait_seconds`. Not booked: nothing was taken, and the horizon would admit the
    request in `wait_seconds`."""

    booked: bool
    wait_seconds: float


class BudgetStore(Protocol):
    """Where the schedule lives. `reserve` books the next slot when it is no more than
    `horizon` seconds away (a booked `Reservation`); otherwise it books nothing (see
    `Reservation`). The schedule
    is the theoretical arrival time of the next request; a request may go up to `burst`
    slots ahead of it (never before now, nor during a pause)."""

    async def reserve(self, account: str, per_minute: float, horizon: float, burst: int = 0) -> Reservation:
        """`per_minute` is this replica's pace, used only while no shared one is stored."""

    async def set_rate(self, account: str, per_minute: float | None) -> None: ...

    async def pause(self, account: str, seconds: float) -> None: ...

    async def load_rate(self, account: str) -> float | None: ...


class MemoryBudgetStore:
    """The schedule in this process only (tests, and adapters built without a shared store)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._paused: dict[str, float] = {}
        self._rate: dict[str, float | None] = {}

    async def reserve(self, account: str, per_minute: float, horizon: float, burst: int = 0) -> Reservation:
        now = self._clock()
        paused = self._paused.get(account, now)
        interval = 60.0 / (self._rate.get(account) or per_minute)
        base = max(self._tat.get(account, now), now, paused)
        slot = max(base - burst * interval, now, paused)
        if slot - now > horizon:
            return Reservation(booked=False, wait_seconds=slot - now - horizon)
        self._tat[account] = base + interval
        return Reservation(booked=True, wait_seconds=slot - now)

    async def set_rate(self, account: str, per_minute: float | None) -> None:
        self._rate[account] = per_minute

    async def pause(self, account: str, seconds: float) -> None:
        self._paused[account] = max(self._paused.get(account, 0.0), self._clock() + seconds)

    async def load_rate(self, account: str) -> float | None:
        return self._rate.get(account)


class RateBudget:
    """One CRM account's budget. `acquire` before every request, `observe` every answer's
    quota, `pause` on a refusal. Safe to share between the adapter's HTTP clients."""

    def __init__(
        self,
        crm: str,
        account: str,
        *,
        ceiling_per_minute: int | None = None,
        store: BudgetStore | None = None,
        daily_reserve_share: float = 0.0,
        provisional_per_minute: float | None = PROVISIONAL_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`provisional_per_minute`: the pace before the vendor has announced its limit;
        None for a vendor that announces none per minute (only refusals pause it)."""
        self.crm = crm
        self.provisional = provisional_per_minute
        self.account = account
        self.ceiling = ceiling_per_minute
        self.store: BudgetStore = store or MemoryBudgetStore(clock)
        self.daily_reserve_share = daily_reserve_share
        self._clock = clock
        self._vendor: VendorQuota | None = None  # the latest per-window quota
        self._daily: VendorQuota | None = None
        self._per_minute: float | None = float(ceiling_per_minute) if ceiling_per_minute else None
        self._persisted_rate: float | None = None
        self._paused_until = 0.0
        self._loaded = False
        self._tasks: set[asyncio.Task] = set()
        # One booking at a time per process: a booking is one short statement, and this
        # keeps a burst from taking a database connection per waiting request.
        self._booking = asyncio.Lock()

    # --- what the HTTP layer calls ---------------------------------------------------------

    async def acquire(self, priority: Priority | None = None) -> float:
        """Wait for this request's slot; returns the seconds waited."""
        priority = current_priority.get() if priority is None else priority
        horizon = HORIZON_SECONDS[priority]
        if not self._loaded:
            await self._load()
        waited = 0.0
        while True:
            local_pause = self._paused_until - self._clock()
            if local_pause > 0:
                await asyncio.sleep(local_pause)
                waited += local_pause
                continue
            async with self._booking:
                reservation = await self.store.reserve(self.account, self.pace(), horizon, self.burst())
            wait = reservation.wait_seconds
            if reservation.booked:
                if wait > 0:
                    await asyncio.sleep(wait)
                return waited + max(0.0, wait)
            # Not within this priority's horizon yet: come back when it may be.
            step = min(max(wait, 0.05), 5.0)
            await asyncio.sleep(step)
            waited += step

    def pace(self) -> float:
        return self._per_minute or self.provisional or UNPACED_PER_MINUTE

    def burst(self) -> int:
        """How many requests may go at once beyond the even pace: what the announced
        per-window limit (or a configured ceiling, which is kept exactly) leaves above the
        pace, less one, and one for the vendor's clock, so that no window ever holds more
        than the limit, and at most MAX_BURST; none while the limit is unknown."""
        vendor = self._vendor
        if vendor is None or not vendor.limit or self._per_minute is None:
            return 0
        per_window = vendor.window_seconds / 60.0
        cap = min(vendor.limit, self.ceiling * per_window) if self.ceiling else vendor.limit
        return min(MAX_BURST, max(0, int(cap - self._per_minute * per_window) - 2))

    @property
    def per_minute(self) -> float | None:
        """The pace in force: the vendor's announced limit (a little under it), lowered
        to the configured ceiling; None until either is known."""
        return self._per_minute

    def observe(self, quota: VendorQuota | None) -> None:
        """Take the vendor's announcement into account (called on every answer)."""
        if quota is None:
            return
        if quota.daily:
            self._observe_daily(quota)
            return
        self._vendor = quota
        if quota.limit:
            announced = quota.limit * (60.0 / quota.window_seconds) * VENDOR_SHARE
            rate = min(announced, self.ceiling) if self.ceiling else announced
            if rate != self._per_minute:
                self._per_minute = rate
                self._spawn(self.store.set_rate(self.account, rate))
        if quota.remaining is not None:
            self._pause_for_remaining(quota)
        self._export()

    def _pause_for_remaining(self, quota: VendorQuota) -> None:
        """Another integration (or a replica's in-flight requests) may have used what our
        pace counted on: when the remaining requests would run out before the window
        resets at our pace, wait so that they last until it does."""
        remaining = quota.remaining or 0
        reset = quota.reset_seconds
        if remaining <= 0:
            self.pause(reset if reset is not None else 60.0 / self.pace() * 5)
            return
        if reset is not None:
            spend_time = remaining * 60.0 / self.pace()
            if spend_time < reset:
                self.pause(reset - spend_time)

    def _observe_daily(self, quota: VendorQuota) -> None:
        self._daily = quota
        usable = self._usable_daily()
        if usable is not None and usable <= 0:
            self.pause(DAILY_PAUSE_SECONDS)
        self._export()

    def _usable_daily(self) -> int | None:
        quota = self._daily
        if quota is None or quota.limit is None or quota.remaining is None:
            return None
        return quota.remaining - int(quota.limit * self.daily_reserve_share)

    def pause(self, seconds: float) -> None:
        """Hold every request to this account (every replica) for `seconds`."""
        if seconds <= 0:
            return
        until = self._clock() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self._spawn(self.store.pause(self.account, seconds))

    # --- state ------------------------------------------------------------------------------

    def state(self) -> BudgetState:
        vendor = self._daily if self._daily is not None else self._vendor
        return BudgetState(
            crm=self.crm,
            account=self.account,
            per_minute=self._per_minute,
            ceiling_per_minute=self.ceiling,
            vendor_limit=vendor.limit if vendor else None,
            vendor_remaining=vendor.remaining if vendor else None,
            window_seconds=vendor.window_seconds if vendor else 60.0,
            usable_remaining=self._usable_daily(),
            paused_for_seconds=max(0.0, self._paused_until - self._clock()),
        )

    async def _load(self) -> None:
        """Start from the pace another replica (or an earlier run) learned, if any."""
        self._loaded = True
        try:
            stored = await self.store.load_rate(self.account)
        except Exception as exc:  # the budget still works on what this process learns
            log.warning("could not read the shared CRM budget (%r)", exc)
            return
        if stored and self._per_minute is None:
            self._per_minute = min(stored, self.ceiling) if self.ceiling else stored

    def _export(self) -> None:
        for quota, window in ((self._vendor, "minute"), (self._daily, "day")):
            if quota is not None and quota.remaining is not None:
                metrics.crm_quota_remaining.labels(self.crm, window).set(quota.remaining)
            if quota is not None and quota.limit is not None:
                metrics.crm_quota_limit.labels(self.crm, window).set(quota.limit)
        usable = self._usable_daily()
        if usable is not None:
            metrics.crm_quota_usable.labels(self.crm, "day").set(max(0, usable))

    def _spawn(self, work) -> None:
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:  # no loop (a synchronous caller in a test): local state only
            work.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not share a CRM budget change: %r", task.exception())
