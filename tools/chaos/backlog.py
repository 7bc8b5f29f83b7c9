"""`make backlog`: publish a backlog (1,000,000 events by default) while the service is
stopped, then start one replica and measure how fast it works the backlog off and
whether its memory stays flat while doing so.

Everything is private to the run: a PostgreSQL cluster in a temporary directory, an
embedded broker, the sandbox CRM. The events come from the tests' event factory (the
chaos traffic's session shapes), keyed by session id over 6 partitions."""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from app.adapters.kafka.topics import ensure_topics
from app.settings import Settings
from tests.integration.service_process import ServiceProcess
from tools.bench.procstat import status_kb
from tools.chaos.cluster import PrivatePostgres
from tools.chaos.traffic import session_events, shared_end_users
from tools.dev.embedded import EmbeddedBroker, free_port

PROGRESS_MARKS = (0.1, 0.25, 0.5, 0.75, 1.0)


@dataclass
class Sample:
    seconds: float
    applied: int
    rss_kb: int


@dataclass
class BacklogResult:
    events: int = 0
    sessions: int = 0
    publish_seconds: float = 0.0
    ready_seconds: float = 0.0
    applied_seconds: float | None = None
    drained_seconds: float | None = None
    outbox_rows: int = 0
    outbox_done: int = 0
    outbox_seconds: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    peak_rss_kb: int = 0
    broker_rss_kb: int = 0


async def publish_backlog(bootstrap: str, topic: str, events: int, seed: int = 1) -> tuple[int, int]:
    """Whole sessions until at least `events` events; returns (events, sessions) sent."""
    rng = random.Random(seed)
    end_users = shared_end_users(events // 8)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1,
                                max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024)
    await producer.start()
    sent = sessions = 0
    try:
        while sent < events:
            session_id, documents = session_events(rng, sessions, end_users)
            sessions += 1
            key = session_id.encode()
            for document in documents:
                await producer.send(topic, key=key, value=orjson.dumps(document))
            sent += len(documents)
            if sessions % 20000 == 0:
                print(f"  ... {sent:,} events published", flush=True)
        await producer.flush()
    finally:
        await producer.stop()
    return sent, sessions


async def _backlog(events: int, work_dir: Path, drain_seconds: float) -> BacklogResult:
    result = BacklogResult()
    cluster = PrivatePostgres(work_dir).init()
    broker = EmbeddedBroker(free_port(), work_dir / "broker.log")
    service: ServiceProcess | None = None
    try:
        await asyncio.to_thread(cluster.start)
        admin = await asyncpg.connect(cluster.dsn(), timeout=10)
        await admin.execute('CREATE DATABASE "backlog"')
        await admin.close()
        await asyncio.to_thread(broker.start)
        suffix = uuid.uuid4().hex[:8]
        settings = Settings(
            _env_file=None, database_url=cluster.url("backlog"), kafka_bootstrap_servers=broker.bootstrap_servers,
            kafka_topic=f"backlog-{suffix}", kafka_dlq_topic=f"backlog-{suffix}.dlq",
            kafka_output_topic=f"backlog-records-{suffix}", kafka_group_id=f"backlog-{suffix}",
            kafka_topic_partitions=6, crm_provider="sandbox", http_host="127.0.0.1", http_port=free_port(),
        )
        await ensure_topics(settings)
        print(f"backlog: publishing {events:,} events with the service stopped", flush=True)
        started = time.monotonic()
        result.events, result.sessions = await publish_backlog(broker.bootstrap_servers, settings.kafka_topic, events)
        result.publish_seconds = time.monotonic() - started
        print(f"backlog: {result.events:,} events ({result.sessions:,} sessions) published in "
              f"{result.publish_seconds:.0f} s; starting the service", flush=True)

        service = ServiceProcess(settings, work_dir / "service.log").start()
        started = time.monotonic()
        await service.wait_ready(timeout=180)
        result.ready_seconds = time.monotonic() - started
        db = await asyncpg.connect(cluster.dsn("backlog"), timeout=10)
        try:
            await _follow(service, db, result, started, drain_seconds)
        finally:
            await db.close()
        result.peak_rss_kb = status_kb(service.process.pid, "VmHWM") or 0
        if broker.process is not None:
            result.broker_rss_kb = status_kb(broker.process.pid, "VmHWM") or 0
        return result
    finally:
        if service is not None:
            service.stop()
        broker.stop()
        cluster.remove()


async def _follow(service: ServiceProcess, db: asyncpg.Connection, result: BacklogResult, started: float,
                  drain_seconds: float) -> None:
    """Sample RSS and progress every second until every event is applied and the outbox
    is drained. Bounded: events not applied within the limit, or an outbox not drained
    within `drain_seconds` after that, are reported as such (with the rate reached)."""
    apply_limit = max(900.0, result.events / 250)
    drain_limit = None
    last_print = 0.0
    while True:
        await asyncio.sleep(1.0)
        now = time.monotonic() - started
        assert service.process is not None and service.process.poll() is None, "the service exited"
        applied = await db.fetchval("SELECT count(*) FROM processed_events")
        result.samples.append(Sample(now, applied, status_kb(service.process.pid, "VmRSS") or 0))
        if result.applied_seconds is None and applied >= result.events:
            result.applied_seconds = now
            drain_limit = now + drain_seconds
        if result.applied_seconds is not None or now - last_print >= 15:
            open_rows = await db.fetchval("SELECT count(*) FROM outbox WHERE status IN ('pending', 'in_progress')")
            result.outbox_rows = await db.fetchval("SELECT count(*) FROM outbox")
            result.outbox_done, result.outbox_seconds = result.outbox_rows - open_rows, now
            if result.applied_seconds is not None and open_rows == 0:
                result.drained_seconds = now
                return
        if now - last_print >= 15:
            last_print = now
            print(f"  ... {now:.0f} s: {applied:,} events applied, {result.outbox_done:,} of {result.outbox_rows:,} "
                  f"outbox rows done, RSS {result.samples[-1].rss_kb / 1024:.0f} MiB", flush=True)
        if (result.applied_seconds is None and now > apply_limit) or (drain_limit and now > drain_limit):
            return


def render(result: BacklogResult) -> str:
    lines = [f"backlog: {result.events:,} events ({result.sessions:,} sessions) published in "
             f"{result.publish_seconds:.0f} s while the service was stopped; service ready after "
             f"{result.ready_seconds:.1f} s"]
    if result.applied_seconds:
        lines.append(f"  all events applied after {result.applied_seconds:.0f} s: "
                     f"{result.events / result.applied_seconds:,.0f} events/s on the backlog")
    elif result.samples:
        last = result.samples[-1]
        lines.append(f"  NOT every event applied within the time limit: {last.applied:,} after {last.seconds:.0f} s "
                     f"({last.applied / last.seconds:,.0f} events/s)")
    if result.drained_seconds:
        lines.append(f"  outbox drained ({result.outbox_rows:,} rows: records, notes, skips) after "
                     f"{result.drained_seconds:.0f} s: {result.outbox_rows / result.drained_seconds:,.0f} rows/s")
    elif result.outbox_seconds:
        lines.append(f"  outbox NOT drained: {result.outbox_done:,} of {result.outbox_rows:,} rows done after "
                     f"{result.outbox_seconds:.0f} s ({result.outbox_done / result.outbox_seconds:,.0f} rows/s)")
    lines.append("  service RSS while working the backlog off (share of events applied -> RSS):")
    for mark in PROGRESS_MARKS:
        sample = next((s for s in result.samples if s.applied >= mark * result.events), None)
        if sample:
            lines.append(f"    {mark:>4.0%} at {sample.seconds:5.0f} s: {sample.rss_kb / 1024:6.0f} MiB")
    if result.samples:
        last = result.samples[-1]
        lines.append(f"    at the end, {last.seconds:5.0f} s: {last.rss_kb / 1024:6.0f} MiB")
    lines.append(f"  service peak RSS (VmHWM): {result.peak_rss_kb / 1024:.0f} MiB; "
                 f"broker peak RSS {result.broker_rss_kb / 1024:.0f} MiB")
    return "\n".join(lines)


def run_backlog(events: int, drain_minutes: float) -> int:
    """Exit status 0 when every event was applied (the outbox's progress is reported either way)."""
    work_dir = Path(tempfile.mkdtemp(prefix="crm-records-backlog-"))
    result = asyncio.run(_backlog(events, work_dir, drain_minutes * 60))
    print(render(result), flush=True)
    done = result.applied_seconds is not None
    if done:
        shutil.rmtree(work_dir, ignore_errors=True)
    else:
        print(f"logs kept in {work_dir}", flush=True)
    return 0 if done else 1
