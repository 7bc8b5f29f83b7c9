"""`make bench` (`python -m tools.bench`): the service against its own ceiling, in one run.

1. Setup: a broker (KAFKA_BOOTSTRAP_SERVERS, else an embedded Tansu broker), a fresh
   database on DATABASE_URL's (else TEST_DATABASE_URL's, else the local) server, topics
   of 6 partitions, and the service as `--replicas` processes (`python -m app run`,
   sandbox CRM) in one consumer group. All of it is taken down at the end.
2. Ingest: the same stream of synthetic sessions is consumed by a bare batched consumer
   (tools/bench/bare.py), then by the service, then by the bare consumer again. The
   service's sustained rate is reported as a ratio to the bare one, with CPU µs per
   event of the service and of PostgreSQL for both.
3. Latency: fresh sessions published at each `--latency-rates` rate; per session the
   time from publishing its `assigned` event to its record, split into publish ->
   consumer transaction -> outbox claim -> record.

Other service variables in the environment (DATABASE_POOL_SIZE, OUTBOX_CONCURRENCY, ...)
are passed on to the service and listed in the report. The exit status is 0 whatever
the figures, 1 when the bench could not run, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from app.settings import Settings
from tools.bench import bare, phases
from tools.bench import traffic as synthetic
from tools.bench.harness import BenchError, Resources, safe_location
from tools.bench.probes import Probe
from tools.bench.procstat import CpuWindow, load_average
from tools.bench.report import Report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=2500, help="sessions in the ingest stream")
    parser.add_argument("--replicas", type=int, default=1, help="service replicas in one consumer group")
    parser.add_argument("--layout", choices=("all", "split"), default="all",
                        help="all: a replica is one process (SERVICE_ROLE=all); split: a consumer process and "
                             "a worker process (SERVICE_ROLE=consumer and =worker)")
    parser.add_argument("--producer-linger-ms", type=int, default=5,
                        help="the latency phases' load generator's linger.ms: 5, the default of Apache Kafka's "
                             "producer since 4.0 (KIP-1030) and of librdkafka since 1.5; publish time is still "
                             "the time of the send, so the linger counts against the service")
    parser.add_argument("--bare-runs", type=int, default=2, choices=(0, 1, 2),
                        help="bare consumer runs around the service's (before, after)")
    parser.add_argument("--latency-rates", default="500,1000", help="events/s, comma-separated; empty: none")
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--ingest-only", action="store_true",
                        help="stop waiting when every event is applied (records and notes may still be due); "
                             "for peak RSS at many sessions")
    parser.add_argument("--profile", type=Path, default=None,
                        help="py-spy the first service process through the service's phases into this file "
                             "(collapsed stacks; summarise with python -m tools.bench.profile_table)")
    return parser


def _rates(text: str) -> list[float]:
    rates = [float(part) for part in text.split(",") if part.strip()]
    if any(rate <= 0 for rate in rates):
        raise BenchError("--latency-rates must be positive")
    return rates


async def _bare_run(resources: Resources, topic: str, events: int, settings: Settings, label: str):
    cpu = CpuWindow({"bench": [os.getpid()], "broker": resources.broker_pids}, resources.database or "")
    result = await bare.run(
        resources.bootstrap, topic, f"bench-bare-{uuid.uuid4().hex[:8]}", resources.url("postgresql"), events, cpu,
        max_poll_records=settings.kafka_max_poll_records, fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    print(f"bare consumer ({label}): {result.events_per_second:,.0f} events/s", flush=True)
    return result


async def _bench(settings: Settings, args: argparse.Namespace, resources: Resources) -> int:
    rates = _rates(args.latency_rates)
    if args.sessions < 1 or args.replicas < 1 or args.latency_seconds <= 0:
        raise BenchError("--sessions, --replicas and --latency-seconds must be positive")
    report = Report(args)
    report.broker = await resources.start_broker(settings)
    await resources.create_database(settings)
    report.database = f"fresh database on {safe_location(resources.server_url)}"
    suffix = uuid.uuid4().hex[:8]
    topics = {"events": f"bench-events-{suffix}", "dlq": f"bench-events-{suffix}.dlq",
              "output": f"bench-records-{suffix}", "bare": f"bench-bare-{suffix}"}
    await resources.create_topics(list(topics.values()))
    group = f"crm-records-bench-{suffix}"
    roles = ["all"] if args.layout == "all" else ["consumer", "worker"]
    for _ in range(args.replicas):
        for role in roles:
            # As deploy/kubernetes/overlays/split-roles runs them: the console's what-if
            # history is kept warm where the console is served, not by the workers.
            extra = {"WHATIF_KEEP_WARM": "false"} if role == "worker" else None
            resources.start_replica(topics, group, extra, role=role)
    print(f"service: {len(resources.replicas)} process(es) ({', '.join(roles)} per replica); waiting for /readyz",
          flush=True)
    report.startup_seconds = await resources.wait_ready()

    stream = synthetic.generate(f"tp-{suffix}", sessions=args.sessions)
    print(f"ingest stream: {args.sessions} sessions ({stream.calls} calls, {stream.chats} chats), "
          f"{len(stream.messages)} events", flush=True)
    report.stream = stream
    report.load_before = load_average()
    probe = Probe(resources.url())
    await probe.start()
    try:
        if args.bare_runs:
            await phases.publish_all(resources.bootstrap, topics["bare"], stream)
            report.bare.append(await _bare_run(resources, topics["bare"], len(stream.messages), settings, "before"))

        def window() -> CpuWindow:
            return CpuWindow({"service": resources.service_pids, "bench": [os.getpid()],
                              "broker": resources.broker_pids}, resources.database or "", {probe.backend_pid})

        profiler = _start_profiler(args.profile, resources.service_pids[0]) if args.profile else None
        report.ingest = await phases.run_ingest(resources, probe, topics["events"], stream, window(), window(),
                                                wait_for_outbox=not args.ingest_only)
        print(f"service: {report.ingest.events_per_second:,.0f} events/s", flush=True)
        if args.bare_runs == 2:
            report.bare.append(await _bare_run(resources, topics["bare"], len(stream.messages), settings, "after"))
        for rate in rates:
            report.latency.append(
                await phases.run_latency(resources, probe, topics["events"], rate, args.latency_seconds, window(),
                                         linger_ms=args.producer_linger_ms)
            )
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            await asyncio.to_thread(profiler.wait, 30)
            print(f"profile: {args.profile}", flush=True)
    finally:
        await probe.close()
    resources.check_alive()
    resources.stop_services()  # reads each VmHWM first
    report.peak_rss_kb = [r.peak_rss_kb for r in resources.replicas]
    report.print()
    return 0


def _start_profiler(output: Path, pid: int) -> subprocess.Popen:
    """py-spy (pip install py-spy) sampling the service at 250 Hz, CPU only (idle excluded)."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                             "--output", str(output), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work_dir = Path(tempfile.mkdtemp(prefix="crm-records-bench-"))
    resources = Resources(work_dir)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    failed = True
    try:
        code = asyncio.run(_bench(Settings(), args, resources))
        failed = False
        return code
    except KeyboardInterrupt:
        print("bench interrupted; cleaning up", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        resources.cleanup()
        signal.signal(signal.SIGTERM, previous)
        if failed:
            print(f"logs kept in {work_dir}", file=sys.stderr)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
