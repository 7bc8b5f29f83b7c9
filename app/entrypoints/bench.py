"""`python -m app bench` (`make bench`): measure the service's throughput and latency.

The bench sets up everything it needs and takes it all down again, also on errors and
Ctrl-C:

- a broker: KAFKA_BOOTSTRAP_SERVERS when set, else an embedded Tansu broker on a free port;
- a fresh PostgreSQL database `crm_records_bench_<random>` on DATABASE_URL's server
  (else TEST_DATABASE_URL's, else postgresql://postgres@127.0.0.1:5432), dropped at the end;
- its own topics (6 partitions) and consumer group, so it never touches real traffic;
- the service itself as a subprocess (`python -m app run`, sandbox CRM), waited on /readyz.

Then two phases:

1. Throughput: N synthetic sessions (calls and chats, distinct end users, keyed by session
   id) are generated up front and published as fast as the producer goes. Sustained
   consumption = events / (first publish -> the moment every event is applied, i.e. the
   count of `processed_events` reaches the total, polled every 100 ms). The time until
   every due record exists in `sandbox_records`, and until the outbox is drained, are
   reported too.
2. Latency: fresh sessions published at a steady rate. For each session, the wall time
   its `assigned` event was handed to the producer is compared with the `created_at` of
   its record in `sandbox_records` (the same machine clock when PostgreSQL is local).

The report ends with the targets (>= 5,000 events/s sustained; p99 < 200 ms at 500
events/s) marked PASS or FAIL. The exit status is 0 whatever the figures (this is a
measurement), non-zero only when the bench itself could not run.

Any other service setting (OUTBOX_CONCURRENCY, KAFKA_MAX_POLL_RECORDS, SANDBOX_LATENCY_MS,
...) set in the environment is passed on to the service, so variations can be measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from app.entrypoints.embedded import EmbeddedBroker, free_port
from app.settings import PROJECT_ROOT, Settings, normalize_database_url

TARGET_EVENTS_PER_SECOND = 5000.0
TARGET_P99_MS = 200.0
TARGET_LATENCY_RATE = 500.0
PARTITIONS = 6
POLL_SECONDS = 0.1
# Sessions are interleaved in waves of this many, as a contact center has many at once.
WAVE = 200
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# Settings the bench chooses for the service; every other service variable is passed on.
_OWN_VARIABLES = {
    "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "KAFKA_OUTPUT_TOPIC", "KAFKA_DLQ_TOPIC",
    "KAFKA_GROUP_ID", "KAFKA_TOPIC_PARTITIONS", "CRM_PROVIDER", "HTTP_PORT", "HTTP_HOST", "ADMIN_API_TOKEN",
}
_TUNING_PREFIXES = ("KAFKA_", "DATABASE_", "OUTBOX_", "SANDBOX_", "LOG_LEVEL", "CRM_TIMEOUT")

CALL_TYPES = [
    "voice_inbound_ivr", "voice_inbound_ivr_mobile", "voice_inbound_app", "voice_inbound_web",
    "voice_inbound_api", "voice_callback_web", "voice_scheduled_app", "voice_scheduled_web",
    "voice_outbound", "voice_outbound_api", "voice_campaign",
]
CHAT_TYPES = [
    "messaging_inbound_web", "messaging_inbound_app", "messaging_inbound_sms",
    "messaging_inbound_whatsapp", "messaging_outbound_sms", "messaging_outbound_sms_api",
]
QUEUES = [
    ("q-billing-refunds", ["Billing", "Refunds"]),
    ("q-billing-invoices", ["Billing", "Invoices"]),
    ("q-support-orders", ["Support", "Orders"]),
    ("q-support-delivery", ["Support", "Delivery"]),
    ("q-sales-new", ["Sales", "New customers"]),
    ("q-sales-upgrade", ["Sales", "Upgrades"]),
    ("q-tech-internet", ["Technical", "Internet", "Outage"]),
    ("q-tech-mobile", ["Technical", "Mobile"]),
]


class BenchError(Exception):
    """The bench could not run (setup failed, the service died, a phase never finished)."""


# --- synthetic traffic ---------------------------------------------------------------------------


@dataclass(slots=True)
class Message:
    key: bytes
    value: bytes
    session_id: str
    assigned: bool  # the session's `assigned` event: the latency phase times it


@dataclass(slots=True)
class Traffic:
    messages: list[Message]
    session_ids: list[str]
    calls: int = 0
    chats: int = 0


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _session_events(prefix: str, index: int, rng: random.Random, start: datetime) -> tuple[str, bool, list[dict]]:
    """One session's events in order: queued, assigned, connected, (messages), ended."""
    is_chat = rng.random() < 0.6
    session_id = f"{prefix}-{index:06d}"
    queue_id, path = rng.choice(QUEUES)
    end_user = {
        "id": f"eu-{session_id}",
        "name": f"Bench User {index}",
        "phone": None if is_chat else f"+5511{9 * 10**8 + index:09d}",
        "email": f"{session_id}@bench.example" if is_chat else None,
    }
    header = {
        "id": session_id,
        "medium": "chat" if is_chat else "call",
        "session_type": rng.choice(CHAT_TYPES if is_chat else CALL_TYPES),
        "queue": {"id": queue_id, "path": path},
        "language": rng.choice(["pt-BR", "en-US", "es-MX"]),
        "phone_number": "+551130000000",
        "end_user": end_user,
        "started_at": _iso(start),
    }
    agent_no = rng.randrange(1, 200)
    agent = {"id": f"ag-{agent_no}", "name": f"Agent {agent_no}", "email": f"agent{agent_no}@bench.example"}
    clock = [0.0]

    def event(event_type: str, **extra: Any) -> dict:
        clock[0] += rng.uniform(1, 30)
        number = len(events) + 1
        document = {
            "schema_version": 1,
            "event_id": f"{session_id}-{number}",
            "event_type": event_type,
            "occurred_at": _iso(start + timedelta(seconds=clock[0])),
            "session": header,
        }
        document.update(extra)
        return document

    events: list[dict] = []
    events.append(event("queued"))
    if is_chat:
        events.append(event("message", message={"id": "m0", "sender": "end_user", "text": "Hello, I need help"}))
    events.append(event("assigned", agent=agent))
    events.append(event("connected", agent=agent))
    if is_chat:
        for n in range(1, rng.randint(4, 8) + 1):
            sender = "agent" if n % 2 else "end_user"
            text = f"message {n} of {session_id}: " + "lorem ipsum dolor sit amet " * rng.randint(1, 4)
            events.append(event("message", message={"id": f"m{n}", "sender": sender, "text": text}))
    summary = {
        "duration_seconds": round(clock[0], 1),
        "disposition": rng.choice(["resolved", "refund-issued", "follow-up", "escalated"]),
        "recording_url": None if is_chat else f"https://recordings.bench.example/{session_id}.wav",
    }
    events.append(event("ended", agent=agent, summary=summary))
    return session_id, is_chat, events


def generate_traffic(prefix: str, *, sessions: int | None = None, min_events: int | None = None,
                     seed: int = 7) -> Traffic:
    """Whole sessions, interleaved in waves of WAVE: event k of every session of a wave,
    then event k+1, ...; each session's events stay in order (one key, one partition)."""
    rng = random.Random(seed)
    start = datetime.now(timezone.utc).replace(microsecond=0)
    traffic = Traffic([], [])
    index = 0
    while True:
        if sessions is not None and index >= sessions:
            break
        if min_events is not None and len(traffic.messages) >= min_events:
            break
        if sessions is not None:
            size = min(WAVE, sessions - index)
        else:  # about 8 events a session: the last wave only as large as still needed
            size = min(WAVE, max(1, math.ceil((min_events - len(traffic.messages)) / 8)))
        wave = []
        for _ in range(size):
            session_id, is_chat, events = _session_events(prefix, index, rng, start + timedelta(seconds=index))
            index += 1
            traffic.session_ids.append(session_id)
            traffic.chats += is_chat
            traffic.calls += not is_chat
            key = session_id.encode()
            wave.append([Message(key, orjson.dumps(e), session_id, e["event_type"] == "assigned") for e in events])
        for step in range(max(len(w) for w in wave)):
            traffic.messages.extend(w[step] for w in wave if step < len(w))
    return traffic


# --- measuring the service process and the machine -----------------------------------------------


def _proc_status(pid: int, field_name: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (e.g. VmHWM, VmRSS), in kB."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return None


def _proc_cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def _machine_cpu() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with contextlib.suppress(OSError, ValueError):
        numbers = [int(n) for n in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)
        return sum(numbers) - idle, sum(numbers)
    return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _database_backends(database: str | None) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends serving `database` (when PostgreSQL is local)."""
    found: dict[int, float] = {}
    if not database:
        return found
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                command = Path(entry.path, "cmdline").read_bytes()
                if command.startswith(b"postgres:") and f" {database} ".encode() in command:
                    seconds = _proc_cpu_seconds(int(entry.name))
                    if seconds is not None:
                        found[int(entry.name)] = seconds
    return found


@dataclass
class CpuWindow:
    """CPU used by the service, the bench, the embedded broker, the bench database's
    PostgreSQL backends and the whole machine over one phase."""

    pids: dict[str, int | None]
    database: str | None = None
    started: float = 0.0
    machine: tuple[int, int] | None = None
    processes: dict[str, float | None] = field(default_factory=dict)
    backends: dict[int, float] = field(default_factory=dict)

    def start(self) -> CpuWindow:
        self.started = time.perf_counter()
        self.machine = _machine_cpu()
        self.processes = {name: _proc_cpu_seconds(pid) for name, pid in self.pids.items()}
        self.backends = _database_backends(self.database)
        return self

    def stop(self) -> dict[str, float]:
        """Percent of one core per process, and the machine's busy percent of all cores."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        usage: dict[str, float] = {}
        for name, pid in self.pids.items():
            before, after = self.processes.get(name), _proc_cpu_seconds(pid)
            if before is not None and after is not None:
                usage[name] = 100 * (after - before) / elapsed
        if self.database:
            now = _database_backends(self.database)
            used = sum(seconds - self.backends.get(pid, 0.0) for pid, seconds in now.items())
            usage["postgres"] = 100 * used / elapsed
        machine = _machine_cpu()
        if self.machine and machine and machine[1] > self.machine[1]:
            usage["machine"] = 100 * (machine[0] - self.machine[0]) / (machine[1] - self.machine[1])
        return usage


# --- setup and teardown ----------------------------------------------------------------------------


def _server_url(settings: Settings) -> str:
    url = settings.database_url or os.environ.get("TEST_DATABASE_URL") or DEFAULT_SERVER_URL
    return normalize_database_url(url)


def _database_url(server_url: str, name: str, *, driver: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(server_url).set(drivername=driver)
    if name:
        url = url.set(database=name)
    elif not url.database:
        url = url.set(database="postgres")
    return url.render_as_string(hide_password=False)


def _safe_location(server_url: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    return f"{url.host or url.query.get('host') or 'local socket'}:{url.port or 5432}"


@dataclass
class Resources:
    """Everything the bench started, so that it can all be taken down (synchronously)."""

    work_dir: Path
    broker: EmbeddedBroker | None = None
    bootstrap: str | None = None
    server_url: str | None = None
    database: str | None = None
    topics: list[str] = field(default_factory=list)
    external_broker: bool = False
    service: subprocess.Popen | None = None
    service_log: Path | None = None
    peak_rss_kb: int | None = None

    def stop_service(self) -> None:
        process = self.service
        if process is None:
            return
        if process.poll() is None:
            self.peak_rss_kb = _proc_status(process.pid, "VmHWM") or self.peak_rss_kb
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self.service = None

    def cleanup(self) -> None:
        errors = []
        for step in (self.stop_service, self._delete_topics, self._stop_broker, self._drop_database):
            try:
                step()
            except BaseException as exc:  # keep going: every other part must still be removed
                errors.append(f"{step.__name__}: {exc!r}")
        for problem in errors:
            print(f"cleanup: {problem}", file=sys.stderr)

    def _delete_topics(self) -> None:
        # An embedded broker forgets everything when it stops; a real one keeps topics.
        if not (self.external_broker and self.topics and self.bootstrap):
            return

        async def delete() -> None:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                await admin.delete_topics(self.topics)
            finally:
                await admin.close()

        asyncio.run(asyncio.wait_for(delete(), timeout=15))
        self.topics = []

    def _stop_broker(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def _drop_database(self) -> None:
        if not (self.database and self.server_url):
            return
        import asyncpg

        async def drop() -> None:
            admin = await asyncpg.connect(_database_url(self.server_url, "", driver="postgresql"), timeout=10)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            finally:
                await admin.close()

        asyncio.run(drop())
        self.database = None


async def _create_database(resources: Resources) -> str:
    import asyncpg

    assert resources.server_url is not None
    name = f"crm_records_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(_database_url(resources.server_url, "", driver="postgresql"), timeout=10)
    except Exception as exc:
        raise BenchError(
            f"cannot reach PostgreSQL at {_safe_location(resources.server_url)} ({type(exc).__name__}: {exc}); "
            "set DATABASE_URL or TEST_DATABASE_URL to a server where the bench may create a database"
        ) from None
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    resources.database = name
    return _database_url(resources.server_url, name, driver="postgresql+asyncpg")


async def _create_topics(bootstrap: str, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
    finally:
        await admin.close()


def _log_tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join("    " + line for line in text)


def _start_service(resources: Resources, database_url: str, topics: dict[str, str], port: int, token: str) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _OWN_VARIABLES}
    env.update(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=resources.bootstrap or "",
        KAFKA_TOPIC=topics["events"],
        KAFKA_DLQ_TOPIC=topics["dlq"],
        KAFKA_OUTPUT_TOPIC=topics["output"],
        KAFKA_GROUP_ID=f"crm-records-bench-{topics['events']}",
        KAFKA_TOPIC_PARTITIONS=str(PARTITIONS),
        CRM_PROVIDER="sandbox",
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(port),
        ADMIN_API_TOKEN=token,
    )
    resources.service_log = resources.work_dir / "service.log"
    output = open(resources.service_log, "ab")
    try:
        resources.service = subprocess.Popen(
            [sys.executable, "-m", "app", "run"], cwd=str(PROJECT_ROOT), env=env,
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
        )
    finally:
        output.close()


async def _wait_ready(resources: Resources, port: int, timeout: float = 90.0) -> float:
    import httpx

    started = time.perf_counter()
    deadline = started + timeout
    last = "no answer"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as client:
        while True:
            if resources.service is None or resources.service.poll() is not None:
                raise BenchError("the service exited before it was ready:\n" + _log_tail(resources.service_log))
            with contextlib.suppress(httpx.HTTPError):
                answer = await client.get("/readyz")
                if answer.status_code == 200:
                    return time.perf_counter() - started
                last = answer.text
            if time.perf_counter() > deadline:
                raise BenchError(f"the service was not ready after {timeout:.0f} s: {last}\n"
                                 + _log_tail(resources.service_log))
            await asyncio.sleep(0.2)


def _check_alive(resources: Resources) -> None:
    if resources.service is None or resources.service.poll() is not None:
        raise BenchError("the service exited during the bench:\n" + _log_tail(resources.service_log))


# --- the two phases --------------------------------------------------------------------------------


@dataclass
class ThroughputResult:
    sessions: int
    calls: int
    chats: int
    events: int
    publish_seconds: float
    applied_seconds: float
    records_seconds: float | None
    drained_seconds: float | None
    cpu: dict[str, float]

    @property
    def events_per_second(self) -> float:
        return self.events / self.applied_seconds


@dataclass
class LatencyResult:
    rate: float
    seconds: float
    sessions: int
    events: int
    achieved_rate: float
    latencies_ms: list[float]
    consumed_ms: list[float]
    missing: int
    cpu: dict[str, float]
    backlog_at_start: int = 0


def _producer(bootstrap: str, *, linger_ms: int):
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=linger_ms, acks=1,
        max_batch_size=256 * 1024, max_request_size=4 * 1024 * 1024,
    )


async def _count(db, query: str, *args) -> int:
    return int(await db.fetchval(query, *args))


async def _progress(db) -> str:
    events = await _count(db, "SELECT count(*) FROM processed_events")
    records = await _count(db, "SELECT count(*) FROM sandbox_records")
    backlog = await _count(db, "SELECT count(*) FROM outbox WHERE status <> 'done'")
    return f"{events} events applied, {records} records, {backlog} outbox rows not done"


async def run_throughput(resources: Resources, db, topic: str, sessions: int, cpu: CpuWindow) -> ThroughputResult:
    traffic = generate_traffic(f"tp-{uuid.uuid4().hex[:6]}", sessions=sessions)
    total = len(traffic.messages)
    print(f"throughput: {sessions} sessions ({traffic.calls} calls, {traffic.chats} chats), {total} events",
          flush=True)
    producer = _producer(resources.bootstrap or "", linger_ms=5)
    await producer.start()
    # Generous limits: a slow service is a result to report, not an error, as long as it progresses.
    apply_limit = max(120.0, total / 200)
    drain_limit = apply_limit + max(120.0, sessions / 25)
    try:
        applied_at = records_at = drained_at = None
        reported = 0.0

        async def publish() -> float:
            for message in traffic.messages:
                await producer.send(topic, key=message.key, value=message.value)
            await producer.flush()
            return time.perf_counter() - started

        cpu.start()
        started = time.perf_counter()
        publishing = asyncio.create_task(publish())
        try:
            while True:
                await asyncio.sleep(POLL_SECONDS)
                now = time.perf_counter() - started
                if publishing.done():
                    publishing.result()  # raises a producer error
                if applied_at is None:
                    if await _count(db, "SELECT count(*) FROM processed_events") >= total:
                        applied_at = now
                if applied_at is not None and records_at is None:
                    if await _count(db, "SELECT count(*) FROM sandbox_records") >= sessions:
                        records_at = now
                if records_at is not None:
                    if await _count(db, "SELECT count(*) FROM outbox WHERE status <> 'done'") == 0:
                        drained_at = now
                        break
                if applied_at is None and now > apply_limit:
                    done = await _count(db, "SELECT count(*) FROM processed_events")
                    raise BenchError(f"throughput: only {done} of {total} events applied after {apply_limit:.0f} s")
                if now > drain_limit:
                    break  # events applied; records or outbox not finished: reported as such
                if now - reported >= 10:
                    reported = now
                    print(f"  ... {now:.0f} s: {await _progress(db)}", flush=True)
                _check_alive(resources)
        finally:
            if not publishing.done():
                publishing.cancel()
        publish_seconds = await publishing
        usage = cpu.stop()
    finally:
        await producer.stop()
    assert applied_at is not None
    return ThroughputResult(sessions, traffic.calls, traffic.chats, total, publish_seconds, applied_at,
                            records_at, drained_at, usage)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    # Nearest rank: the smallest value with at least `share` of all values at or below it.
    rank = max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))
    return ordered[rank]


async def run_latency(resources: Resources, db, topic: str, rate: float, seconds: float,
                      cpu: CpuWindow) -> LatencyResult:
    traffic = generate_traffic(f"lat-{uuid.uuid4().hex[:6]}", min_events=max(1, int(rate * seconds)), seed=11)
    total = len(traffic.messages)
    print(f"latency: {len(traffic.session_ids)} sessions, {total} events at {rate:g} events/s "
          f"(about {total / rate:.0f} s)", flush=True)
    backlog = await _count(db, "SELECT count(*) FROM outbox WHERE status <> 'done'")
    producer = _producer(resources.bootstrap or "", linger_ms=0)
    await producer.start()
    published_at: dict[str, float] = {}  # session id -> wall time its `assigned` event was sent
    assigned_event: dict[str, str] = {}
    try:
        cpu.start()
        started = time.perf_counter()
        sent = 0
        last_check = started
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            while sent < due:
                message = traffic.messages[sent]
                if message.assigned:
                    published_at[message.session_id] = time.time()
                    assigned_event[message.session_id] = orjson.loads(message.value)["event_id"]
                await producer.send(topic, key=message.key, value=message.value)
                sent += 1
            next_due = started + sent / rate
            await asyncio.sleep(max(0.0, next_due - time.perf_counter()))
            if time.perf_counter() - last_check > 1.0:
                _check_alive(resources)
                last_check = time.perf_counter()
        await producer.flush()
        achieved = total / (time.perf_counter() - started)
    finally:
        await producer.stop()

    # Every session was assigned, so every one is due a record (default settings).
    expected = len(published_at)
    deadline = time.perf_counter() + max(60.0, expected / 25)
    ids = list(published_at)
    reported = time.perf_counter()
    while True:
        made = await _count(db, "SELECT count(*) FROM sandbox_records WHERE external_id = ANY($1::text[])", ids)
        if made >= expected or time.perf_counter() > deadline:
            break
        if time.perf_counter() - reported >= 10:
            reported = time.perf_counter()
            print(f"  ... waiting for records: {made} of {expected}", flush=True)
        _check_alive(resources)
        await asyncio.sleep(POLL_SECONDS)
    usage = cpu.stop()
    rows = await db.fetch("SELECT external_id, created_at FROM sandbox_records WHERE external_id = ANY($1::text[])",
                          ids)
    latencies = [max(0.0, (row["created_at"].timestamp() - published_at[row["external_id"]]) * 1000) for row in rows]
    by_event = {event_id: session_id for session_id, event_id in assigned_event.items()}
    consumed_rows = await db.fetch(
        "SELECT event_id, first_seen_at FROM processed_events WHERE event_id = ANY($1::text[])", list(by_event)
    )
    consumed = [
        max(0.0, (row["first_seen_at"].timestamp() - published_at[by_event[row["event_id"]]]) * 1000)
        for row in consumed_rows
    ]
    return LatencyResult(rate, seconds, len(traffic.session_ids), total, achieved, latencies, consumed,
                         expected - len(rows), usage, backlog)


# --- the report ------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _cpu_text(usage: dict[str, float]) -> str:
    parts = [f"{name} {value:.0f}% of a core" for name, value in usage.items() if name != "machine"]
    if "machine" in usage:
        parts.append(f"whole machine {usage['machine']:.0f}% busy")
    return ", ".join(parts)


def _tuning_env() -> list[str]:
    return sorted(
        f"{k}={v}" for k, v in os.environ.items()
        if k.upper().startswith(_TUNING_PREFIXES) and k.upper() not in _OWN_VARIABLES
        and "PASSWORD" not in k.upper() and "URL" not in k.upper()
    )


def print_report(resources: Resources, throughput: ThroughputResult, latency: LatencyResult,
                 broker_kind: str, startup_seconds: float) -> None:
    line = "-" * 72
    print(line)
    print("crm-records bench")
    print(line)
    print(f"machine        : {os.cpu_count()} cores, {_cpu_model()}; Python {platform.python_version()}")
    print(f"broker         : {broker_kind}; {PARTITIONS} partitions; CRM: sandbox (SANDBOX_LATENCY_MS="
          f"{os.environ.get('SANDBOX_LATENCY_MS', '0')})")
    print(f"database       : fresh database on {_safe_location(resources.server_url or '')}")
    tuning = _tuning_env()
    if tuning:
        print(f"service env    : {' '.join(tuning)}")
    print(f"service ready  : {startup_seconds:.1f} s after start (migrations, topics, group join)")
    print()
    t = throughput
    print(f"throughput     : {t.sessions} sessions ({t.calls} calls, {t.chats} chats), {t.events} events")
    print(f"  published in : {t.publish_seconds:.2f} s ({t.events / t.publish_seconds:,.0f} events/s offered)")
    print(f"  all applied  : {t.applied_seconds:.2f} s after the first publish -> "
          f"{t.events_per_second:,.0f} events/s sustained")
    records = f"{t.records_seconds:.2f} s" if t.records_seconds is not None else "NOT within the time limit"
    drained = f"{t.drained_seconds:.2f} s" if t.drained_seconds is not None else "NOT within the time limit"
    print(f"  all {t.sessions} records in sandbox_records: {records} after the first publish")
    print(f"  outbox drained (records, end-of-session notes, outcome events): {drained}")
    print(f"  CPU          : {_cpu_text(t.cpu)}")
    print()
    lat = latency
    print(f"latency        : {lat.sessions} sessions, {lat.events} events at {lat.rate:g} events/s requested, "
          f"{lat.achieved_rate:,.0f} achieved")
    if lat.latencies_ms:
        print("  publish of `assigned` -> record created in sandbox_records (ms):")
        print(f"    p50 {_percentile(lat.latencies_ms, .50):7.1f}   p95 {_percentile(lat.latencies_ms, .95):7.1f}   "
              f"p99 {_percentile(lat.latencies_ms, .99):7.1f}   max {max(lat.latencies_ms):7.1f}   "
              f"mean {statistics.fmean(lat.latencies_ms):7.1f}")
    if lat.consumed_ms:
        print("  of which publish -> consumer transaction with the event (ms):")
        print(f"    p50 {_percentile(lat.consumed_ms, .50):7.1f}   p95 {_percentile(lat.consumed_ms, .95):7.1f}   "
              f"p99 {_percentile(lat.consumed_ms, .99):7.1f}   max {max(lat.consumed_ms):7.1f}")
    if lat.backlog_at_start:
        print(f"  note: {lat.backlog_at_start} outbox rows of the throughput phase were still not done at the start")
    if lat.missing:
        print(f"  {lat.missing} record(s) still missing at the deadline (counted as FAIL)")
    print(f"  CPU          : {_cpu_text(lat.cpu)}")
    print()
    rss = f"{resources.peak_rss_kb / 1024:.0f} MiB" if resources.peak_rss_kb else "unknown"
    print(f"service peak RSS (VmHWM): {rss}")
    print()
    p99 = _percentile(lat.latencies_ms, .99) if lat.latencies_ms else float("inf")
    tp_ok = t.events_per_second >= TARGET_EVENTS_PER_SECOND
    lat_ok = p99 < TARGET_P99_MS and not lat.missing
    note = "" if lat.rate >= TARGET_LATENCY_RATE else f" (measured at {lat.rate:g} events/s, below the target's rate)"
    if lat.rate < TARGET_LATENCY_RATE:
        lat_ok = False
    print("targets:")
    print(f"  sustained consumption >= {TARGET_EVENTS_PER_SECOND:,.0f} events/s : "
          f"{t.events_per_second:,.0f}  {_verdict(tp_ok)}")
    print(f"  p99 publish -> record < {TARGET_P99_MS:.0f} ms at {TARGET_LATENCY_RATE:g} events/s : "
          f"{p99:.1f} ms{note}  {_verdict(lat_ok)}")
    print(line, flush=True)


# --- main ------------------------------------------------------------------------------------------


async def _bench(settings: Settings, args, resources: Resources) -> int:
    import asyncpg

    sessions, rate, seconds = int(args.sessions), float(args.latency_rate), float(args.latency_seconds)
    if sessions < 1 or rate <= 0 or seconds <= 0:
        raise BenchError("--sessions, --latency-rate and --latency-seconds must be positive")

    if settings.kafka_bootstrap_servers:
        resources.bootstrap = settings.kafka_bootstrap_servers
        resources.external_broker = True
        broker_kind = f"Kafka at {resources.bootstrap} (KAFKA_BOOTSTRAP_SERVERS)"
    else:
        broker = EmbeddedBroker(free_port(), resources.work_dir / "broker.log")
        resources.broker = broker
        await asyncio.to_thread(broker.start)
        resources.bootstrap = broker.bootstrap_servers
        broker_kind = f"embedded Tansu broker at {resources.bootstrap}"
    print(f"broker: {broker_kind}", flush=True)

    resources.server_url = _server_url(settings)
    database_url = await _create_database(resources)
    print(f"database: {resources.database} on {_safe_location(resources.server_url)}", flush=True)

    suffix = uuid.uuid4().hex[:8]
    topics = {"events": f"bench-events-{suffix}", "dlq": f"bench-events-{suffix}.dlq",
              "output": f"bench-records-{suffix}"}
    resources.topics = list(topics.values())
    await _create_topics(resources.bootstrap, resources.topics)

    port = free_port()
    _start_service(resources, database_url, topics, port, secrets.token_urlsafe(24))
    print(f"service: pid {resources.service.pid}, HTTP on 127.0.0.1:{port}; waiting for /readyz", flush=True)
    startup = await _wait_ready(resources, port)

    pids = {"service": resources.service.pid, "bench": os.getpid(),
            "broker": resources.broker.process.pid if resources.broker and resources.broker.process else None}
    db = await asyncpg.connect(_database_url(resources.server_url, resources.database, driver="postgresql"))
    try:
        throughput = await run_throughput(resources, db, topics["events"], sessions,
                                          CpuWindow(pids, resources.database))
        print(f"throughput: {throughput.events_per_second:,.0f} events/s; records after "
              f"{throughput.records_seconds or float('nan'):.2f} s", flush=True)
        latency = await run_latency(resources, db, topics["events"], rate, seconds,
                                    CpuWindow(pids, resources.database))
    finally:
        await db.close()
    _check_alive(resources)
    resources.stop_service()  # reads VmHWM first
    print_report(resources, throughput, latency, broker_kind, startup)
    return 0


def main(settings: Settings, args) -> int:
    work_dir = Path(tempfile.mkdtemp(prefix="crm-records-bench-"))
    resources = Resources(work_dir)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    failed = True
    try:
        code = asyncio.run(_bench(settings, args, resources))
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
        if resources.service_log:
            print(_log_tail(resources.service_log), file=sys.stderr)
        return 1
    finally:
        resources.cleanup()
        signal.signal(signal.SIGTERM, previous)
        if failed:
            print(f"logs kept in {work_dir}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(work_dir, ignore_errors=True)
