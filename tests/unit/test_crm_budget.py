"""The CRM rate budget's schedule (app.adapters.crm.budget) on a fake clock: how long a
request waits for its slot, and that the announced limit holds in every window."""

from __future__ import annotations

import asyncio

import pytest

from app.adapters.crm.budget import MemoryBudgetStore, RateBudget, VendorQuota


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def budget_on(clock: Clock, limit: int) -> RateBudget:
    budget = RateBudget("freshdesk", "freshdesk:test", store=MemoryBudgetStore(clock), clock=clock)
    budget.observe(VendorQuota(limit=limit, remaining=limit))
    return budget


async def test_a_few_requests_at_once_do_not_wait_for_evenly_spaced_slots():
    # Freshdesk announces 200 a minute: evenly spaced slots are 0.32 s apart. Two records
    # arriving together must not make the second screen pop wait a slot, while the
    # announced limit leaves room for a few at once.
    clock = Clock()
    budget = budget_on(clock, 200)
    waits = [await budget.acquire() for _ in range(5)]
    assert waits == [0.0] * 5


async def test_the_announced_limit_holds_in_every_minute_with_the_burst_allowance():
    clock = Clock()
    budget = budget_on(clock, 200)
    sent: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        clock.now += seconds

    real_sleep = asyncio.sleep
    asyncio.sleep = fake_sleep  # type: ignore[assignment]
    try:
        for _ in range(600):  # three minutes' worth, all wanted at once
            await budget.acquire()
            sent.append(clock.now)
    finally:
        asyncio.sleep = real_sleep  # type: ignore[assignment]
    most = max(sum(1 for t in sent if start <= t < start + 60.0) for start in sent)
    assert most <= 200
    # and the pace is still the announced one (95 % of it), not slower
    assert sent[-1] - sent[0] < 600 / (200 * 0.95) * 60 + 1


async def test_a_configured_ceiling_gets_no_burst_beyond_it():
    clock = Clock()
    budget = RateBudget("freshdesk", "freshdesk:test", ceiling_per_minute=100, store=MemoryBudgetStore(clock),
                        clock=clock)
    budget.observe(VendorQuota(limit=300, remaining=300))
    assert budget.burst() == 0
    waits = [await budget.acquire() for _ in range(3)]
    assert waits == pytest.approx([0.0, 0.6, 1.2])
