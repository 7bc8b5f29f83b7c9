"""The bench's report: ratios to the bare consumer first, absolute figures with the
machine and the load they were measured under."""

from __future__ import annotations

import math
import os
import platform
import statistics
from argparse import Namespace
from dataclasses import dataclass, field

from tools.bench.bare import BareResult
from tools.bench.harness import PARTITIONS, tuning_env
from tools.bench.phases import IngestResult, LatencyResult, percentile
from tools.bench.procstat import CpuWindow, cpu_model, load_average
from tools.bench.traffic import Traffic

TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
TARGET_P99_RATE = 1000.0
TARGET_SERVICE_US = 50.0


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _cpu_line(cpu: CpuWindow, names: tuple[str, ...]) -> str:
    parts = [f"{name} {cpu.percent(name):.0f}%" for name in names if name in cpu.used]
    busy = f"; whole machine {cpu.machine_busy:.0f}% busy" if cpu.machine_busy is not None else ""
    return "CPU (% of one core): " + ", ".join(parts) + busy


def _spread(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (f"p50 {percentile(values, .50):7.1f}  p95 {percentile(values, .95):7.1f}  "
            f"p99 {percentile(values, .99):7.1f}  max {max(values):7.1f}  (n={len(values)})")


def _by_quarter(values: list[float]) -> str:
    """p50 / p99 of each quarter of `values` (in publish order): whether the latency
    grows through the phase, as the embedded broker's fetches do (docs/bench.md)."""
    size = len(values) // 4
    if size < 100:
        return ""
    parts = [values[n * size:(n + 1) * size] for n in range(4)]
    return ", ".join(f"{percentile(part, .50):.0f} / {percentile(part, .99):.0f}" for part in parts)


@dataclass
class Report:
    args: Namespace
    broker: str = ""
    database: str = ""
    startup_seconds: float = 0.0
    stream: Traffic | None = None
    load_before: float | None = None
    bare: list[BareResult] = field(default_factory=list)
    ingest: IngestResult | None = None
    latency: list[LatencyResult] = field(default_factory=list)
    peak_rss_kb: list[int | None] = field(default_factory=list)

    @property
    def bare_rate(self) -> float | None:
        rates = [b.events_per_second for b in self.bare if math.isfinite(b.events_per_second)]
        return statistics.fmean(rates) if rates else None

    def print(self) -> None:
        rule = "-" * 78
        print(rule)
        print("crm-records bench")
        print(rule)
        print(f"machine   : {os.cpu_count()} cores, {cpu_model()}; Python {platform.python_version()}; "
              f"load average {self.load_before or 0:.1f} before, {load_average() or 0:.1f} after")
        print(f"broker    : {self.broker}; {PARTITIONS} partitions; CRM: sandbox")
        print(f"database  : {self.database}")
        layout = "one process each" if self.args.layout == "all" else "a consumer and a worker process each"
        print(f"service   : {self.args.replicas} replica(s), {layout}, ready {self.startup_seconds:.1f} s after start; "
              f"load generator linger.ms {self.args.producer_linger_ms}"
              + (f"; env {' '.join(tuning_env())}" if tuning_env() else ""))
        self._print_ingest()
        self._print_latency()
        rss = [f"{kb / 1024:.0f} MiB" for kb in self.peak_rss_kb if kb]
        print(f"\npeak RSS (VmHWM) per service process: {', '.join(rss) or 'unknown'}")
        self._print_targets()
        print(rule, flush=True)

    def _print_ingest(self) -> None:
        t, stream = self.ingest, self.stream
        if t is None or stream is None:
            return
        print(f"\ningest    : {t.sessions} sessions ({stream.calls} calls, {stream.chats} chats), {t.events} events")
        for n, b in enumerate(self.bare):
            print(f"  bare consumer {('before', 'after')[n]:6}: {b.events_per_second:9,.0f} events/s; CPU µs/event: "
                  f"consumer {b.cpu.per_event_us('bench', b.events):5.1f}, "
                  f"postgres {b.cpu.per_event_us('postgres', b.events):5.1f}")
        print(f"  service             : {t.events_per_second:9,.0f} events/s; CPU µs/event: "
              f"service {t.ingest_cpu.per_event_us('service', t.events):5.1f}, "
              f"postgres {t.ingest_cpu.per_event_us('postgres', t.events):5.1f}")
        if self.bare_rate:
            print(f"  ratio service / bare: {t.events_per_second / self.bare_rate:.2f}")
        print(f"  published in {t.publish_seconds:.2f} s; all applied {t.wall_seconds:.2f} s after the first publish")
        records = f"{t.records_seconds:.2f} s" if t.records_seconds is not None else "NOT within the limit"
        drained = f"{t.drained_seconds:.2f} s" if t.drained_seconds is not None else "NOT within the limit"
        print(f"  all {t.sessions} records: {records}; outbox drained: {drained}")
        print(f"  until drained, CPU µs/event (records, notes, outcome events included): "
              f"service {t.total_cpu.per_event_us('service', t.events):.1f}, "
              f"postgres {t.total_cpu.per_event_us('postgres', t.events):.1f}")
        print(f"  {_cpu_line(t.ingest_cpu, ('service', 'postgres', 'broker', 'bench'))}")

    def _print_latency(self) -> None:
        for lat in self.latency:
            print(f"\nlatency at {lat.rate:g} events/s ({lat.achieved_rate:,.0f} achieved), {lat.sessions} sessions, "
                  f"{lat.events} events (ms):")
            print(f"  publish -> record          : {_spread(lat.publish_to_record_ms)}")
            if quarters := _by_quarter(lat.publish_to_record_ms):
                print(f"    p50 / p99 by quarter of the phase: {quarters}")
            print(f"  publish -> consumer txn    : {_spread(lat.publish_to_consumed_ms)}")
            print(f"  consumer txn -> claim      : {_spread(lat.consumed_to_claimed_ms)}")
            print(f"  claim -> record            : {_spread(lat.claimed_to_record_ms)}")
            print(f"  service CPU µs/event {lat.cpu.per_event_us('service', lat.events):.1f}, "
                  f"postgres {lat.cpu.per_event_us('postgres', lat.events):.1f}")
            print(f"  {_cpu_line(lat.cpu, ('service', 'postgres', 'broker', 'bench'))}")
            if lat.backlog_at_start:
                print(f"  note: {lat.backlog_at_start} outbox rows of an earlier phase were not done at its start")
            if lat.missing:
                print(f"  {lat.missing} record(s) still missing at the deadline (counted as FAIL)")

    def _print_targets(self) -> None:
        print("\ntargets:")
        t = self.ingest
        if t is not None and self.bare_rate:
            ratio = t.events_per_second / self.bare_rate
            print(f"  ingest >= {TARGET_RATIO} x bare consumer      : {ratio:.2f}  {_verdict(ratio >= TARGET_RATIO)}")
        if t is not None:
            us = t.ingest_cpu.per_event_us("service", t.events)
            print(f"  service CPU <= {TARGET_SERVICE_US:.0f} µs/event         : {us:.1f}  "
                  f"{_verdict(us <= TARGET_SERVICE_US)}")
        for lat in self.latency:
            if lat.rate == TARGET_P99_RATE:
                p99 = percentile(lat.publish_to_record_ms, .99)
                ok = p99 <= TARGET_P99_MS and not lat.missing
                print(
                    f"  p99 publish -> record <= {TARGET_P99_MS:.0f} ms at {lat.rate:g}/s: {p99:.1f} ms  {_verdict(ok)}"
                )
