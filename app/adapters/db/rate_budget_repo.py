"""The shared rate budget's schedule in PostgreSQL: one row per CRM account, read and
advanced in one statement by every replica (app.adapters.crm.budget.BudgetStore)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.crm.budget import Reservation

_ENSURE = text("INSERT INTO crm_rate_budgets (account) VALUES (:account) ON CONFLICT (account) DO NOTHING")

# Book the next slot when it is within the horizon: the row lock serialises replicas, so
# no two requests get the same slot. `next_slot` is the theoretical arrival time of the
# next request (the later of itself, now, and a pause); a request may go up to `burst`
# slots ahead of it, but never before now nor during a pause (a generic cell rate
# algorithm: see app.adapters.crm.budget). The pace is the one shared in the row (what
# some replica last learned from the vendor), else the caller's.
_RESERVE = text(
    """
    WITH b AS (
        SELECT account,
               GREATEST(next_slot, clock_timestamp(), COALESCE(paused_until, '-infinity')) AS base,
               COALESCE(paused_until, '-infinity') AS paused,
               60.0 / COALESCE(per_minute, :per_minute) AS interval
        FROM crm_rate_budgets WHERE account = :account FOR UPDATE
    ), c AS (
        SELECT account, base, interval,
               GREATEST(base - make_interval(secs => :burst * interval), clock_timestamp(), paused) AS slot
        FROM b
    )
    UPDATE crm_rate_budgets r
    SET next_slot = CASE WHEN c.slot <= clock_timestamp() + make_interval(secs => :horizon)
                         THEN c.base + make_interval(secs => c.interval) ELSE r.next_slot END
    FROM c WHERE r.account = c.account
    RETURNING c.slot <= clock_timestamp() + make_interval(secs => :horizon) AS booked,
              EXTRACT(EPOCH FROM (c.slot - clock_timestamp()))::float8 AS wait
    """
)
_SET_RATE = text(
    "UPDATE crm_rate_budgets SET per_minute = :per_minute, updated_at = now() "
    "WHERE account = :account AND per_minute IS DISTINCT FROM :per_minute"
)
_PAUSE = text(
    """
    UPDATE crm_rate_budgets
    SET paused_until = GREATEST(COALESCE(paused_until, '-infinity'),
                                clock_timestamp() + make_interval(secs => :seconds)),
        updated_at = now()
    WHERE account = :account
    """
)
_LOAD = text("SELECT per_minute FROM crm_rate_budgets WHERE account = :account")


class PostgresBudgetStore:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self._ensured: set[str] = set()

    async def _ensure(self, account: str) -> None:
        if account not in self._ensured:
            async with self.engine.begin() as conn:
                await conn.execute(_ENSURE, {"account": account})
            self._ensured.add(account)

    async def reserve(self, account: str, per_minute: float, horizon: float, burst: int = 0) -> Reservation:
        await self._ensure(account)
        params = {"account": account, "per_minute": per_minute, "horizon": horizon, "burst": burst}
        async with self.engine.begin() as conn:
            row = (await conn.execute(_RESERVE, params)).first()
            if row is None:  # the row was removed since (an operator reset the budget)
                await conn.execute(_ENSURE, {"account": account})
                row = (await conn.execute(_RESERVE, params)).one()
        wait = max(0.0, float(row.wait))
        if row.booked:
            return Reservation(booked=True, wait_seconds=wait)
        return Reservation(booked=False, wait_seconds=max(0.0, wait - horizon))

    async def set_rate(self, account: str, per_minute: float | None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(_ENSURE, {"account": account})
            await conn.execute(_SET_RATE, {"account": account, "per_minute": per_minute})

    async def pause(self, account: str, seconds: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(_ENSURE, {"account": account})
            await conn.execute(_PAUSE, {"account": account, "seconds": seconds})

    async def load_rate(self, account: str) -> float | None:
        await self._ensure(account)
        async with self.engine.connect() as conn:
            return (await conn.execute(_LOAD, {"account": account})).scalar()
