"""The bench's phases: the service's sustained ingest, and its latency at a given rate."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from tools.bench import traffic as synthetic
from tools.bench.harness import BenchError, Resources
from tools.bench.probes import Probe, SessionTimes
from tools.bench.procstat import CpuWindow, status_kb

POLL_SECONDS = 0.1
# The probe's counts take PostgreSQL's CPU from the service under test, and they grow
# with the tables (at 10,000 sessions they took 20-45 ms each, polled every 100 ms: half
# a core). The probe waits ten times as long as its last look took: at most about a
# tenth of a core. The rates come from the database's own timestamps, not from polls.
PROBE_DUTY = 10


def pause_after(probe_seconds: float) -> float:
    return max(POLL_SECONDS, PROBE_DUTY * probe_seconds)


def producer(bootstrap: str, *, linger_ms: int) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=linger_ms, acks=1,
        max_batch_size=256 * 1024, max_request_size=4 * 1024 * 1024,
    )


async def publish_all(bootstrap: str, topic: str, stream: synthetic.Traffic) -> float:
    """Publish every message as fast as the producer goes; seconds it took."""
    kafka = producer(bootstrap, linger_ms=5)
    await kafka.start()
    try:
        started = time.perf_counter()
        for message in stream.messages:
            await kafka.send(topic, key=message.key, value=message.value)
        await kafka.flush()
        return time.perf_counter() - started
    finally:
        await kafka.stop()


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least `share` of all values at or below it."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))]


@dataclass
class IngestResult:
    sessions: int
    events: int
    publish_seconds: float
    applied_seconds: float  # first to last batch applied (transaction starts)
    wall_seconds: float  # first publish to all applied, polled every 100 ms
    records_seconds: float | None
    drained_seconds: float | None
    ingest_cpu: CpuWindow  # until every event was applied
    total_cpu: CpuWindow  # until the outbox was drained (records, notes, outcome events)

    @property
    def events_per_second(self) -> float:
        return self.events / max(self.applied_seconds, 1e-9)


async def run_ingest(resources: Resources, probe: Probe, topic: str, stream: synthetic.Traffic,
                     ingest_cpu: CpuWindow, total_cpu: CpuWindow, *, wait_for_outbox: bool = True) -> IngestResult:
    total, sessions = len(stream.messages), len(stream.session_ids)
    apply_limit = max(120.0, total / 200)  # a slow service is a result, as long as it progresses
    drain_limit = apply_limit + max(120.0, sessions / 25)
    applied_at = records_at = drained_at = None
    reported = 0.0
    ingest_cpu.start()
    total_cpu.start()
    started = time.perf_counter()
    publishing = asyncio.create_task(publish_all(resources.bootstrap, topic, stream))
    pause = POLL_SECONDS
    try:
        while True:
            await asyncio.sleep(pause)
            now = time.perf_counter() - started
            if publishing.done():
                publishing.result()  # raises a producer error
            looked = time.perf_counter()
            progress = await probe.progress()
            pause = pause_after(time.perf_counter() - looked)
            if applied_at is None and progress.events_applied >= total:
                applied_at = now
                ingest_cpu.stop()
                if not wait_for_outbox:
                    break
            if applied_at is not None and records_at is None and progress.records >= sessions:
                records_at = now
            if records_at is not None and progress.outbox_not_done == 0:
                drained_at = now
                break
            if applied_at is None and now > apply_limit:
                raise BenchError(f"ingest: only {progress.events_applied} of {total} events applied "
                                 f"after {apply_limit:.0f} s")
            if now > drain_limit:
                break  # events applied; records or outbox not finished: reported as such
            if now - reported >= 10:
                reported = now
                rss = [status_kb(pid, "VmRSS") or 0 for pid in resources.service_pids]
                print(f"  ... {now:.0f} s: {progress}; service RSS {', '.join(f'{kb / 1024:.0f}' for kb in rss)} MiB",
                      flush=True)
            resources.check_alive()
    finally:
        if not publishing.done():
            publishing.cancel()
    publish_seconds = await publishing
    total_cpu.stop()
    span = await probe.applied_span()
    assert applied_at is not None
    return IngestResult(sessions, total, publish_seconds, span.seconds or applied_at, applied_at,
                        records_at, drained_at, ingest_cpu, total_cpu)


@dataclass
class LatencyResult:
    rate: float
    sessions: int
    events: int
    achieved_rate: float
    publish_to_record_ms: list[float]
    publish_to_consumed_ms: list[float]
    consumed_to_claimed_ms: list[float]
    claimed_to_record_ms: list[float]
    missing: int
    backlog_at_start: int
    cpu: CpuWindow


def _ms(later, earlier) -> float:
    return max(0.0, (later - earlier) * 1000)


async def run_latency(resources: Resources, probe: Probe, topic: str, rate: float, seconds: float,
                      cpu: CpuWindow, *, linger_ms: int) -> LatencyResult:
    stream = synthetic.generate(f"lat{int(rate)}-{uuid.uuid4().hex[:6]}", min_events=max(1, int(rate * seconds)),
                                seed=11)
    total = len(stream.messages)
    print(f"latency: {len(stream.session_ids)} sessions, {total} events at {rate:g} events/s "
          f"(about {total / rate:.0f} s)", flush=True)
    backlog = (await probe.progress()).outbox_not_done
    kafka = producer(resources.bootstrap, linger_ms=linger_ms)
    await kafka.start()
    published_at: dict[str, float] = {}  # session id -> wall time its `assigned` event was sent
    assigned: dict[str, str] = {}  # session id -> the event id of its `assigned` event
    try:
        cpu.start()
        started = time.perf_counter()
        sent = 0
        last_check = started
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            while sent < due:
                message = stream.messages[sent]
                if message.assigned:
                    published_at[message.session_id] = time.time()
                    assigned[message.session_id] = message.event_id
                await kafka.send(topic, key=message.key, value=message.value)
                sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
            if time.perf_counter() - last_check > 1.0:
                resources.check_alive()
                last_check = time.perf_counter()
        await kafka.flush()
        achieved = total / (time.perf_counter() - started)
    finally:
        await kafka.stop()

    # Every session was assigned, so every one is due a record (default settings).
    ids = list(published_at)
    deadline = time.perf_counter() + max(60.0, len(ids) / 25)
    reported = time.perf_counter()
    while True:
        looked = time.perf_counter()
        made = await probe.records_made(ids)
        if made >= len(ids) or time.perf_counter() >= deadline:
            break
        pause = pause_after(time.perf_counter() - looked)
        if time.perf_counter() - reported >= 10:
            reported = time.perf_counter()
            print(f"  ... waiting for records: {made} of {len(ids)}", flush=True)
        resources.check_alive()
        await asyncio.sleep(pause)
    cpu.stop()
    times: list[SessionTimes] = await probe.session_times(assigned)
    result = LatencyResult(rate, len(ids), total, achieved, [], [], [], [], 0, backlog, cpu)
    for t in times:
        sent_at = published_at[t.session_id]
        if t.recorded_at is None:
            result.missing += 1
            continue
        result.publish_to_record_ms.append(_ms(t.recorded_at.timestamp(), sent_at))
        if t.consumed_at is not None:
            result.publish_to_consumed_ms.append(_ms(t.consumed_at.timestamp(), sent_at))
            if t.claimed_at is not None:
                result.consumed_to_claimed_ms.append(_ms(t.claimed_at.timestamp(), t.consumed_at.timestamp()))
                result.claimed_to_record_ms.append(_ms(t.recorded_at.timestamp(), t.claimed_at.timestamp()))
    return result
