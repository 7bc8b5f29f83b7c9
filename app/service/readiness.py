"""Readiness: is this replica able to do its work? One check per component, aggregated.

A check is anything with a `name` and an async `check()` returning a `CheckResult`; the
service passes a list of them, so a new condition (a stuck partition, a broker gone
away) is one more object in that list, not a change to the HTTP layer.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# A check that does not answer in this time counts as not ready: /readyz must stay fast.
CHECK_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    ready: bool
    detail: str | None = None  # why not, in words an operator can act on
    # Not ready, but running: e.g. one partition stuck while the rest of the replica works.
    degraded: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # extra facts shown beside the result

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> CheckResult:
        """From a component's own `{"ready", "detail", "degraded", ...}` answer."""
        rest = {k: v for k, v in document.items() if k not in ("ready", "detail", "degraded")}
        return cls(bool(document["ready"]), document.get("detail"), bool(document.get("degraded")), rest)


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


class ReportsReadiness(Protocol):
    def readiness(self, *args: Any) -> dict[str, Any]: ...


@dataclass(slots=True)
class ComponentCheck:
    """A component that reports its own readiness as a document (the consumer's progress,
    the start-up waits): `component.readiness(*args)`."""

    name: str
    component: ReportsReadiness
    args: tuple[Any, ...] = ()

    async def check(self) -> CheckResult:
        return CheckResult.from_document(self.component.readiness(*self.args))


@dataclass(slots=True)
class CrmHealth:
    """The CRM credential check's last answer, written by the service's watcher."""

    ok: bool = False
    detail: str = "credentials not checked yet"
    checked_at: datetime | None = None


@dataclass(slots=True)
class CrmCredentialsCheck:
    health: CrmHealth
    crm_name: str
    name: str = "crm"
    # The CRM account's rate budget (app.adapters.crm.budget.RateBudget): its quota is
    # shown beside the check, as information; a spent quota slows records, it does not
    # make the replica unready.
    budget: Any = None

    async def check(self) -> CheckResult:
        info: dict[str, Any] = {"crm": self.crm_name}
        if self.budget is not None:
            info["quota"] = dataclasses.asdict(self.budget.state())
        if self.health.ok:
            return CheckResult(True, info=info)
        return CheckResult(False, self.health.detail, info=info)
