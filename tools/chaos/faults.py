"""The faults: replicas SIGKILLed and restarted, PostgreSQL crashed and restarted, the
CRM answering in storms of errors, rate limits and slow answers. Every choice comes from
the run's seeded random generator; `last_fault_at` is when the last fault ended."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.settings import Settings
from tests.fakes.base import FakeServer
from tests.integration.service_process import ServiceProcess
from tools.chaos.cluster import PrivatePostgres

log = logging.getLogger("chaos")


@dataclass
class FaultLog:
    kills: int = 0
    pg_restarts: int = 0
    storms: list[str] = field(default_factory=list)
    last_fault_at: float = 0.0

    def ended(self) -> None:
        self.last_fault_at = time.monotonic()


@dataclass
class Replica:
    name: str
    settings: Settings
    log_path: Path
    process: ServiceProcess | None = None
    started_at: float = 0.0
    ready_at: float | None = None  # when /readyz first answered 200 since the last start


class Replicas:
    """The service's replicas (`python -m app run` subprocesses) in one consumer group. A
    replica that ends without being killed is counted and started again, as an
    orchestrator would."""

    def __init__(self, settings: list[Settings], log_dir: Path, rng: random.Random, *, vary_sandbox_latency: bool):
        self.replicas = [Replica(f"replica-{n}", s, log_dir / f"replica-{n}.log") for n, s in enumerate(settings)]
        self.rng = rng
        self.vary_sandbox_latency = vary_sandbox_latency
        self.unexpected_exits: list[str] = []

    def start(self, replica: Replica) -> None:
        settings = replica.settings
        if self.vary_sandbox_latency:
            # Slow sandbox answers, different per start: a kill then often lands mid-write.
            settings = settings.model_copy(update={"sandbox_latency_ms": self.rng.choice([0, 50, 150, 300])})
        replica.process = ServiceProcess(settings, replica.log_path).start()
        replica.started_at, replica.ready_at = time.monotonic(), None

    def start_all(self) -> None:
        for replica in self.replicas:
            self.start(replica)

    async def wait_ready(self, timeout: float) -> None:
        await asyncio.gather(*(r.process.wait_ready(timeout) for r in self.replicas if r.process))

    def kill(self, replica: Replica) -> None:
        assert replica.process is not None
        replica.process.kill()

    def restart_exited(self) -> None:
        for replica in self.replicas:
            process = replica.process.process if replica.process else None
            if process is not None and process.poll() is not None:
                self.unexpected_exits.append(f"{replica.name} exited with {process.returncode}")
                log.warning("%s exited on its own (status %s); starting it again", replica.name, process.returncode)
                self.start(replica)

    def stop_all(self) -> None:
        for replica in self.replicas:
            if replica.process:
                replica.process.stop()

    def peak_rss_kb(self) -> int:
        from tools.bench.procstat import status_kb

        peaks = [status_kb(r.process.process.pid, "VmHWM") or 0 for r in self.replicas
                 if r.process and r.process.process]
        return max(peaks, default=0)


async def watch_exits(replicas: Replicas, stop: asyncio.Event) -> None:
    while not stop.is_set():
        replicas.restart_exited()
        await asyncio.sleep(1.0)


async def watch_ready(replicas: Replicas, stop: asyncio.Event) -> None:
    """Note when each (re)started replica is first ready: joined its group, database and CRM answering."""
    async with httpx.AsyncClient(timeout=1.0) as client:
        while not stop.is_set():
            for replica in replicas.replicas:
                if replica.ready_at is None:
                    with contextlib.suppress(httpx.HTTPError):
                        answer = await client.get(f"http://127.0.0.1:{replica.settings.http_port}/readyz")
                        if answer.status_code == 200 and replica.ready_at is None:
                            replica.ready_at = time.monotonic()
            await asyncio.sleep(0.3)


async def kill_replicas(replicas: Replicas, faults: FaultLog, rng: random.Random, *, kills: int,
                        span: float) -> None:
    """`kills` SIGKILLs spread over `span` seconds, each followed by a restart. A victim
    has been ready (partitions assigned) for a moment, or up 6 s (a start-up may wait for the
    database or a rebalance), so kills land in the middle of work rather than in start-ups,
    and the group is not kept rebalancing for ever."""
    interval = span / max(1, kills)
    for _ in range(kills):
        await asyncio.sleep(interval * rng.uniform(0.5, 1.5))
        working = rng.uniform(0.5, 3.0)
        while True:
            now = time.monotonic()
            candidates = [r for r in replicas.replicas
                          if (r.ready_at is not None and now - r.ready_at >= working) or now - r.started_at >= 6]
            if candidates:
                break
            await asyncio.sleep(0.1)
        victim = rng.choice(candidates)
        replicas.kill(victim)
        replicas.start(victim)
        faults.kills += 1
        faults.ended()


async def restart_postgres(cluster: PrivatePostgres, faults: FaultLog, rng: random.Random, *, restarts: int,
                           span: float) -> None:
    """`restarts` hard restarts (`pg_ctl stop -m immediate`), evenly spread, each down 1-4 s
    and then about a second in crash recovery (refusing connections with 57P03)."""
    started = time.monotonic()
    for number in range(restarts):
        at = span * (number + 1) / (restarts + 1) + rng.uniform(-2, 2)
        await asyncio.sleep(max(0.0, started + at - 4 - time.monotonic()))
        await cluster.write_ballast(rng.randint(1_000_000, 1_500_000))
        await asyncio.to_thread(cluster.crash)
        log.info("PostgreSQL crashed (stop -m immediate), restart %d of %d", number + 1, restarts)
        await asyncio.sleep(rng.uniform(1.0, 4.0))
        await asyncio.to_thread(cluster.start)
        faults.pg_restarts += 1
        faults.ended()


async def crm_storms(fake: FakeServer, faults: FaultLog, rng: random.Random, *, span: float) -> None:
    """Storms on a fake CRM until `span` seconds have passed: runs of 5xx answers, of 429s
    with Retry-After, slow answers (some slower than the service's CRM timeout, after
    the CRM did the work), and creates whose connection drops after the ticket is made."""
    ends = time.monotonic() + span
    while True:
        await asyncio.sleep(rng.uniform(4.0, 9.0))
        if time.monotonic() >= ends:
            break
        kind = rng.choice(["errors", "rate_limit", "slow", "dropped"])
        if kind == "errors":
            count = rng.randint(10, 40)
            fake.set_faults(server_error_next=count)
            faults.storms.append(f"{count} x 503")
        elif kind == "rate_limit":
            count, wait = rng.randint(5, 30), rng.choice([1, 2, 5, 8])
            fake.set_faults(rate_limit_next=count, retry_after_seconds=wait)
            faults.storms.append(f"{count} x 429 Retry-After {wait}")
        elif kind == "slow":
            delay, lasting = rng.choice([0.5, 1.5, 3.0, 5.0]), rng.uniform(3.0, 8.0)
            fake.set_faults(delay_seconds=delay)
            faults.storms.append(f"answers {delay:g} s late for {lasting:.0f} s")
            await asyncio.sleep(lasting)
            fake.set_faults(delay_seconds=0.0)
        else:
            count = rng.randint(2, 6)
            fake.set_faults(drop_after_create_next=count)
            faults.storms.append(f"{count} creates dropped after the record was made")
        faults.ended()
    # Whatever is left of the last storm ends now: the settle time counts from here.
    fake.set_faults(server_error_next=0, rate_limit_next=0, delay_seconds=0.0, drop_after_create_next=0)
    faults.ended()
