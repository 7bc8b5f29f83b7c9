"""Readiness aggregated from a list of component checks (the service layer's rule)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from app.service import readiness as readiness_module
from app.service.readiness import CheckResult, ComponentCheck, StuckPartition, readiness


@dataclass
class Fixed:
    name: str
    result: CheckResult

    async def check(self) -> CheckResult:
        return self.result


class Hangs:
    name = "slow"

    async def check(self) -> CheckResult:
        await asyncio.sleep(60)
        return CheckResult(True)


class Fails:
    name = "broken"

    async def check(self) -> CheckResult:
        raise RuntimeError("boom")


async def test_ready_only_when_every_check_is():
    state = await readiness([Fixed("a", CheckResult(True)), Fixed("b", CheckResult(True))])
    assert (state.ready, state.status, state.not_ready) == (True, "ready", [])
    state = await readiness([Fixed("a", CheckResult(True)), Fixed("b", CheckResult(False, "why"))])
    assert (state.ready, state.status, state.not_ready) == (False, "not ready", ["b"])


async def test_degraded_when_every_part_that_is_not_ready_is_still_running():
    stuck = CheckResult(False, "partition 3 stuck", degraded=True)
    assert (await readiness([Fixed("a", CheckResult(True)), Fixed("consumer", stuck)])).status == "degraded"
    down = CheckResult(False, "database does not answer")
    assert (await readiness([Fixed("db", down), Fixed("consumer", stuck)])).status == "not ready"


async def test_a_check_that_hangs_or_raises_is_not_ready_and_readiness_still_answers(monkeypatch):
    monkeypatch.setattr(readiness_module, "CHECK_TIMEOUT_SECONDS", 0.1)
    state = await asyncio.wait_for(readiness([Hangs(), Fails(), Fixed("ok", CheckResult(True))]), timeout=2)
    assert state.not_ready == ["slow", "broken"]
    assert "did not answer" in state.results["slow"].detail
    assert state.results["broken"].detail == "broken check failed: RuntimeError"


async def test_a_component_check_answers_what_the_component_reports():
    stuck = StuckPartition("events", 1, 40, 61.0, "SQLSTATE 57P03")

    class Consumer:
        def readiness(self, group: str) -> CheckResult:
            return CheckResult(False, f"stuck in {group}", True, stuck_partitions=(stuck,))

    result = await ComponentCheck("consumer", lambda: Consumer().readiness("g1")).check()
    assert result == CheckResult(False, "stuck in g1", True, stuck_partitions=(stuck,))
