"""One chaos run: a private PostgreSQL cluster, an embedded broker, a CRM (the sandbox or
the Zendesk fake), N replicas in one consumer group; seeded traffic published while the
faults run; then wait until everything is done and let the oracle judge it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app.adapters.crm.sandbox import SANDBOX_CONNECTIONS
from app.adapters.db.engine import build_engine
from app.adapters.kafka.topics import ensure_topics
from app.domain.record_settings import RecordSettings
from app.settings import Settings
from tests.integration.crm_backends import Backend, SandboxBackend, ZendeskBackend
from tools.chaos.cluster import PrivatePostgres
from tools.chaos.faults import (
    FaultLog,
    Replicas,
    crm_storms,
    kill_replicas,
    restart_postgres,
    watch_exits,
    watch_ready,
)
from tools.chaos.oracle import Observed, Report, SessionRecord, judge, render
from tools.chaos.traffic import Traffic, build_traffic
from tools.dev.embedded import EmbeddedBroker, free_port

log = logging.getLogger("chaos")
ADMIN_TOKEN = "chaos-admin-token"
# The record settings the run saves before publishing; the oracle decides with the same.
RECORD_SETTINGS = RecordSettings(
    delay_chat_record_until_consumer_messages=2,
    create_records_for_abandoned_chats="min_messages",
    abandoned_chat_min_messages=1,
)


@dataclass(frozen=True)
class Profile:
    sessions: int
    window: float  # seconds over which the traffic is published
    kills: int
    pg_restarts: int
    chaos_seconds: float  # how long the faults go on (from the first publish)
    settle_timeout: float  # bound on the wait for everything to be done after the last fault
    replicas: int = 2
    # The processes of a replica, one per SERVICE_ROLE: ("all",), or ("consumer", "worker").
    roles: tuple[str, ...] = ("all",)


PROFILES = {
    "full": Profile(sessions=400, window=120, kills=50, pg_restarts=3, chaos_seconds=150, settle_timeout=300),
    "short": Profile(sessions=60, window=15, kills=6, pg_restarts=1, chaos_seconds=20, settle_timeout=120),
}


@dataclass
class Outcome:
    crm: str
    seed: int
    report: Report
    faults: FaultLog
    finished: bool
    settle_seconds: float | None
    total_seconds: float
    traffic_messages: int
    duplicates: int
    invalid: int
    peak_rss_kb: int

    @property
    def passed(self) -> bool:
        return self.finished and self.report.passed

    def text(self) -> str:
        body = render(self.report, seed=self.seed, crm=self.crm, settle_seconds=self.settle_seconds,
                      finished=self.finished)
        storms = ", ".join(self.faults.storms) or "none (the sandbox is in the database: its latency varied per start)"
        head = (f"faults: {self.faults.kills} SIGKILLs, {self.faults.pg_restarts} PostgreSQL hard restarts; "
                f"CRM storms: {storms}\n"
                f"traffic: {self.traffic_messages} messages ({self.duplicates} re-sent, {self.invalid} invalid); "
                f"run took {self.total_seconds:.0f} s; replica peak RSS {self.peak_rss_kb / 1024:.0f} MiB")
        return head + "\n" + body


class TopicCollector:
    """Reads the dead-letter and output topics from the start, all through the run."""

    def __init__(self, bootstrap: str, dlq: str, output: str):
        self.consumer = AIOKafkaConsumer(dlq, output, bootstrap_servers=bootstrap, group_id=None,
                                         auto_offset_reset="earliest", enable_auto_commit=False)
        self.dlq, self.output = dlq, output
        self.dead_letters: list[tuple[bytes | None, bytes]] = []
        self.outputs: list[dict] = []

    async def run(self, stop: asyncio.Event) -> None:
        await self.consumer.start()
        try:
            while not stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=300)
                for tp, messages in batches.items():
                    for message in messages:
                        if tp.topic == self.dlq:
                            self.dead_letters.append((message.key, message.value or b""))
                        else:
                            self.outputs.append(orjson.loads(message.value))
        finally:
            await self.consumer.stop()


async def publish(bootstrap: str, topic: str, traffic: Traffic) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    await producer.start()
    try:
        started = time.monotonic()
        for message in traffic.messages:
            delay = started + message.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(topic, key=message.key, value=message.value)
        await producer.flush()
    finally:
        await producer.stop()


def replica_settings(crm: Backend, cluster: PrivatePostgres, database: str, bootstrap: str, suffix: str,
                     count: int, roles: tuple[str, ...] = ("all",)) -> list[Settings]:
    common = dict(
        database_url=cluster.url(database), kafka_bootstrap_servers=bootstrap,
        kafka_topic=f"chaos-events-{suffix}", kafka_dlq_topic=f"chaos-events-{suffix}.dlq",
        kafka_output_topic=f"chaos-records-{suffix}", kafka_group_id=f"chaos-{suffix}", kafka_topic_partitions=6,
        # A dead replica's partitions move after 6 s instead of 10.
        kafka_session_timeout_ms=6000, kafka_heartbeat_interval_ms=1000,
        admin_api_token=ADMIN_TOKEN, http_host="127.0.0.1",
        # Shorter than the defaults so that the run settles in minutes: a killed replica's
        # rows come back after 20 s (not 60), backoff tops out at 5 s (not 300).
        outbox_lease_seconds=20.0, outbox_backoff_base_seconds=0.5, outbox_backoff_max_seconds=5.0,
        # With that backoff, 100 attempts span about as long as the default 12 do (some 18
        # minutes of failures) before a row is parked: a storm is retried, not given up on.
        outbox_max_attempts=100, outbox_poll_seconds=0.5, crm_timeout_seconds=4.0,
        # The budget is shared by the replicas; the fake allows as much, and its storms bring the 429s.
        zendesk_requests_per_minute=6000, log_level="INFO",
        **crm.settings(),
    )
    return [Settings(_env_file=None, http_port=free_port(), service_role=role, **common)
            for _ in range(count) for role in roles]


async def save_record_settings(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
        answer = await client.put("/api/settings", content=RECORD_SETTINGS.model_dump_json(),
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Actor": "chaos",
                                           "Content-Type": "application/json"})
        answer.raise_for_status()


async def observe(crm: Backend, db: asyncpg.Connection, collector: TopicCollector, replicas: Replicas) -> Observed:
    records: dict[str, list[SessionRecord]] = {}
    for view in await crm.records():
        if view.session_id:
            records.setdefault(view.session_id, []).append(SessionRecord(view.record_id, tuple(view.notes)))
    applied = {row["event_id"] for row in await db.fetch("SELECT event_id FROM processed_events")}
    parked = await db.fetchval("SELECT count(*) FROM outbox WHERE status = 'parked'")
    return Observed(records, list(collector.outputs), list(collector.dead_letters), applied, int(parked),
                    len(replicas.unexpected_exits))


async def wait_until_done(db_dsn: str, traffic: Traffic, collector: TopicCollector, timeout: float) -> bool:
    """Every valid event applied (or, wrongly, dead-lettered), every invalid one
    dead-lettered, and no outbox row left to do. The wait is bounded: False on timeout."""
    valid_ids = traffic.valid_event_ids
    deadline = time.monotonic() + timeout
    reported = time.monotonic()
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            db = await asyncpg.connect(db_dsn, timeout=5)
            try:
                applied = await db.fetchval("SELECT count(*) FROM processed_events")
                open_rows = await db.fetchval("SELECT count(*) FROM outbox WHERE status IN ('pending', 'in_progress')")
            finally:
                await db.close()
            lettered = set(collector.dead_letters)
            invalid_done = traffic.invalid <= lettered
            wrongly = 0
            for _, value in lettered - traffic.invalid:
                with contextlib.suppress(Exception):
                    wrongly += orjson.loads(value).get("event_id") in valid_ids
            if applied + wrongly >= len(valid_ids) and open_rows == 0 and invalid_done:
                return True
            if time.monotonic() - reported > 10:
                reported = time.monotonic()
                print(f"  ... {applied}/{len(valid_ids)} events applied, {open_rows} outbox rows to do, "
                      f"{len(lettered)} dead letters", flush=True)
        await asyncio.sleep(1.0)
    return False


async def run_chaos(crm_name: str, seed: int, profile: Profile, work_dir: Path) -> Outcome:
    began = time.monotonic()
    traffic = build_traffic(seed, sessions=profile.sessions, window=profile.window)
    # Per process: the service's pool and overflow (40) and the sandbox CRM's own pool.
    processes = profile.replicas * len(profile.roles)
    cluster = PrivatePostgres(work_dir, max_connections=(40 + SANDBOX_CONNECTIONS) * processes + 40).init()
    broker = EmbeddedBroker(free_port(), work_dir / "broker.log")
    crm: Backend | None = None
    replicas: Replicas | None = None
    stop = asyncio.Event()
    tasks: list[asyncio.Task] = []
    try:
        await asyncio.to_thread(cluster.start)
        admin = await asyncpg.connect(cluster.dsn(), timeout=10)
        await admin.execute('CREATE DATABASE "chaos"')
        await admin.close()
        await asyncio.to_thread(broker.start)
        suffix = uuid.uuid4().hex[:8]
        if crm_name == "zendesk":
            crm = ZendeskBackend()
            crm.start()
            # A replica killed mid-request leaves the fake writing to a closed socket: expected here.
            crm.fake._server.handle_error = lambda request, address: None
            # The fake's own per-minute limit stays out of the way; the storms bring the 429s.
            crm.fake.rate_limit_per_minute = 6000
        else:
            crm = SandboxBackend(build_engine(Settings(_env_file=None, database_url=cluster.url("chaos"),
                                                       database_pool_size=2)))
        settings = replica_settings(crm, cluster, "chaos", broker.bootstrap_servers, suffix, profile.replicas,
                                    profile.roles)
        await ensure_topics(settings[0])
        replicas = Replicas(settings, work_dir, random.Random(f"{seed}-latency"),
                            vary_sandbox_latency=crm_name == "sandbox")
        replicas.start_all()
        await replicas.wait_ready(timeout=180)
        await save_record_settings(settings[0].http_port)

        collector = TopicCollector(broker.bootstrap_servers, settings[0].kafka_dlq_topic,
                                   settings[0].kafka_output_topic)
        tasks.append(asyncio.create_task(collector.run(stop)))
        tasks.append(asyncio.create_task(watch_exits(replicas, stop)))
        tasks.append(asyncio.create_task(watch_ready(replicas, stop)))
        faults = FaultLog()
        print(f"chaos ({crm_name}, seed {seed}): {len(traffic.messages)} messages over {profile.window:g} s, "
              f"{profile.kills} kills, {profile.pg_restarts} PostgreSQL restarts; logs in {work_dir}", flush=True)
        injectors = [
            publish(broker.bootstrap_servers, settings[0].kafka_topic, traffic),
            kill_replicas(
                replicas, faults, random.Random(f"{seed}-kills"), kills=profile.kills, span=profile.chaos_seconds
            ),
            restart_postgres(
                cluster,
                faults,
                random.Random(f"{seed}-postgres"),
                restarts=profile.pg_restarts,
                span=profile.chaos_seconds,
            ),
        ]
        if isinstance(crm, ZendeskBackend):
            injectors.append(crm_storms(crm.fake, faults, random.Random(f"{seed}-storms"), span=profile.chaos_seconds))
        await asyncio.gather(*injectors)
        print(f"faults over after {time.monotonic() - began:.0f} s; waiting for the service to finish", flush=True)
        finished = await wait_until_done(cluster.dsn("chaos"), traffic, collector, profile.settle_timeout)
        settle = time.monotonic() - faults.last_fault_at if finished else None
        await asyncio.sleep(1.0)  # the last outputs reach the collector
        db = await asyncpg.connect(cluster.dsn("chaos"), timeout=10)
        try:
            observed = await observe(crm, db, collector, replicas)
        finally:
            await db.close()
        report = judge(traffic.sessions, traffic.invalid, RECORD_SETTINGS, observed)
        return Outcome(crm_name, seed, report, faults, finished, settle, time.monotonic() - began,
                       len(traffic.messages), traffic.duplicates, len(traffic.invalid), replicas.peak_rss_kb())
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=10)
        if replicas is not None:
            replicas.stop_all()
        if isinstance(crm, SandboxBackend) and crm.engine is not None:
            await crm.engine.dispose()
        elif crm is not None:
            crm.stop()
        broker.stop()
        cluster.remove()


def run(crm_names: list[str], seed: int, profile: Profile, keep_logs: bool = False) -> list[Outcome]:
    outcomes = []
    for crm_name in crm_names:
        work_dir = Path(tempfile.mkdtemp(prefix=f"crm-records-chaos-{crm_name}-"))
        outcome = asyncio.run(run_chaos(crm_name, seed, profile, work_dir))
        print(outcome.text(), flush=True)
        if outcome.passed and not keep_logs:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"logs kept in {work_dir}", flush=True)
        outcomes.append(outcome)
    return outcomes
