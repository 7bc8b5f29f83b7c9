"""Readiness: is this replica able to do its work? One check per component, aggregated.

A check is anything with a `name` and an async `check()` returning a `CheckResult`; the
service passes a list of them, so a new condition (a stuck partition, a broker gone
away) is one more object in that list, not a change to the HTTP layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.crm.budget import BudgetState, RateBudget

# A check that does not answer in this time counts as not ready: /readyz must stay fast.
CHECK_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class StuckPartition:
    topic: str
    partition: int
    offset: int | None  # the first offset not yet applied, when known
    seconds: float
    error: str

    def describe(self) -> str:
        at = f" at offset {self.offset}" if self.offset is not None else ""
        return f"partition {self.partition} of {self.topic}{at} has not advanced for {self.seconds:.0f} s: {self.error}"


@dataclass(frozen=True, slots=True)
class CheckResult:
    ready: bool
    detail: str | None = None  # why not, in words an operator can act on
    # Not ready, but running: e.g. one partition stuck while the rest of the replica works.
    degraded: bool = False
    # Facts a check shows beside its result (None / empty: it has none).
    stuck_partitions: tuple[StuckPartition, ...] = ()  # the consumer's
    crm: str | None = None  # the CRM check's: which CRM
    quota: BudgetState | None = None  # the CRM check's: its account's rate budget


class ReadinessCheck(Protocol):
    name: str

    async def check(self) -> CheckResult: ...


@dataclass(frozen=True, slots=True)
class Readiness:
    results: dict[str, CheckResult]

    @property
    def ready(self) -> bool:
        return all(r.ready for r in self.results.values())

    @property
    def not_ready(self) -> list[str]:
        return [name for name, r in self.results.items() if not r.ready]

    @property
    def status(self) -> str:
        """`degraded` when every part that is not ready is still running (a stuck partition)."""
        if self.ready:
            return "ready"
        return "degraded" if all(self.results[name].degraded for name in self.not_ready) else "not ready"


async def _run(check: ReadinessCheck) -> CheckResult:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            return await check.check()
    except TimeoutError:
        return CheckResult(False, f"{check.name} check did not answer within {CHECK_TIMEOUT_SECONDS:g} s")
    except Exception as exc:  # a failing check says not ready, it does not fail /readyz
        return CheckResult(False, f"{check.name} check failed: {type(exc).__name__}")


async def readiness(checks: Sequence[ReadinessCheck]) -> Readiness:
    """Every check, side by side, in the order given."""
    results = await asyncio.gather(*(_run(c) for c in checks))
    return Readiness({c.name: r for c, r in zip(checks, results, strict=True)})


@dataclass(slots=True)
class DatabaseCheck:
    engine: AsyncEngine
    name: str = "database"

    async def check(self) -> CheckResult:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return CheckResult(False, f"database does not answer: {type(exc).__name__}")
        return CheckResult(True)


@dataclass(slots=True)
class ComponentCheck:
    """A component that reports its own readiness (the consumer's progress, the start-up
    waits): `report()`, e.g. a bound `component.readiness`."""

    name: str
    report: Callable[[], CheckResult]

    async def check(self) -> CheckResult:
        return self.report()


@dataclass(slots=True)
class CrmHealth:
    """The CRM credential check's last answer, written by the service's watcher."""

    ok: bool = False
    detail: str = "credentials not checked yet"


@dataclass(slots=True)
class CrmCredentialsCheck:
    health: CrmHealth
    crm_name: str
    name: str = "crm"
    # The CRM account's rate budget: its quota is shown beside the check, as information;
    # a spent quota slows records, it does not make the replica unready.
    budget: RateBudget | None = None

    async def check(self) -> CheckResult:
        quota = self.budget.state() if self.budget is not None else None
        if self.health.ok:
            return CheckResult(True, crm=self.crm_name, quota=quota)
        return CheckResult(False, self.health.detail, crm=self.crm_name, quota=quota)
