"""Wires the whole service in one process: migrations, topics, the consumer loop, the
outbox worker, the CRM credential check, and the HTTP API; stops them all on
SIGTERM/SIGINT. Every replica runs this same thing."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from alembic import command
from alembic.config import Config

from app import metrics
from app.adapters.crm.base import CrmAdapter, CrmAuthError
from app.adapters.crm.factory import build_crm_adapter
from app.adapters.db.engine import build_engine
from app.adapters.kafka.producer import KafkaPublisher
from app.adapters.kafka.topics import ensure_topics
from app.entrypoints.consumer import ConsumerLoop
from app.entrypoints.http import Runtime, create_app
from app.entrypoints.http.server import build_http_server
from app.entrypoints.worker import OutboxWorker
from app.observability import tracing
from app.service.auth import TokenBook
from app.service.broker_identity import check_cluster
from app.service.consumer_health import ConsumerHealth
from app.service.gauges import refresh_gauges_periodically
from app.service.outbox import OutboxRunner
from app.service.readiness import CrmHealth
from app.service.replicas import beat_periodically
from app.service.startup import StartupProgress, keep_trying
from app.service.whatif import refresh_periodically
from app.settings import PROJECT_ROOT, Settings

log = logging.getLogger("app")


def configure_logging(settings: Settings) -> None:
    from app.observability.logs import configure_logging as configure

    configure(settings.log_level, settings.log_format)


def migrate(settings: Settings) -> None:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["database_url"] = settings.resolved_database_url()
    command.upgrade(config, "head")


def tune_garbage_collector() -> None:
    """For the service process, once everything is imported: what exists now (modules,
    pydantic schemas, SQLAlchemy's tables and caches) lives as long as the process, so it
    is frozen out of the collector's sight and a full collection no longer walks it; and
    the youngest generation is collected every 10,000 net allocations instead of 700.

    At the defaults the collector took 15-25 µs of CPU per event consumed, almost all of it
    full collections walking the start-up heap, about a third of the consumer's CPU
    (docs/bench.md). Objects still die by reference count as before; only cycles wait a
    little longer. Not done in the tests, which run the service inside pytest's process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def run_until_complete(main: Coroutine[Any, Any, Any]) -> Any:
    """Run `main` on uvloop where it is installed, else on asyncio's own loop.

    The service's work is many small socket reads and writes (Kafka, PostgreSQL, CRMs),
    where the loop's own overhead shows: in `make bench` it saves a few percent of a core
    at 500 events/s (see docs/bench.md)."""
    try:
        import uvloop
    except ImportError:  # Windows: no uvloop
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


async def watch_crm_credentials(crm: CrmAdapter, health: CrmHealth, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await crm.check_credentials()
            health.ok, health.detail = True, "credentials accepted"
        except CrmAuthError as exc:
            health.ok, health.detail = False, f"{crm.name} refused the credentials: {exc.message}"
        except Exception as exc:
            health.ok, health.detail = False, f"{crm.name} could not be reached: {exc}"
        metrics.crm_credentials_accepted.labels(crm.name).set(1 if health.ok else 0)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=30 if health.ok else 5)


async def watch_broker(publisher: KafkaPublisher, health: ConsumerHealth, stop: asyncio.Event) -> None:
    """Ask the broker for metadata every few seconds: /readyz says when it is away. The
    clients themselves reconnect on their own; this only watches."""
    while not stop.is_set():
        problem = await publisher.broker_problem()
        if problem != health.broker_error:
            if problem is None:
                log.info("the broker answers again")
            else:
                log.error("the broker cannot be reached (%s); the clients keep reconnecting", problem)
        health.broker_error = problem
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=2 if problem else 5)


class ShutdownDeadline:
    """SHUTDOWN_TIMEOUT_SECONDS, counted from the moment the service starts stopping."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at: float | None = None

    def start(self) -> None:
        if self.at is None:
            self.at = time.monotonic() + self.seconds

    def left(self, reserve: float = 0.0) -> float:
        self.start()
        assert self.at is not None  # start() set it
        return max(0.1, self.at - time.monotonic() - reserve)


_ROLE_DESCRIPTION = {"all": "consumer and outbox worker", "consumer": "consumer only", "worker": "outbox worker only"}


async def run_service(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)

    tokens = TokenBook.from_settings(settings)  # a bad token list stops the start, naming the entry
    tracing.setup_tracing(settings.otel_exporter_otlp_endpoint, settings.otel_service_name)
    engine = build_engine(settings)
    tracing.instrument_engine(engine)
    crm = tracing.traced_crm(build_crm_adapter(settings, engine=engine))
    startup = StartupProgress()
    health = ConsumerHealth(stuck_after_seconds=settings.consumer_stuck_partition_seconds)
    runtime = Runtime(settings, engine, crm, consumer=health, startup=startup, tokens=tokens)
    app = create_app(runtime)
    tracing.instrument_app(app)
    server = build_http_server(app, settings)
    # HTTP first: /healthz answers and /readyz says what is missing while we wait.
    http = asyncio.create_task(server.serve(), name="http")
    publisher: KafkaPublisher | None = None
    deadline = ShutdownDeadline(settings.shutdown_timeout_seconds)
    try:
        publisher = await _start_dependencies(settings, engine, startup, stop)
        if publisher is not None:
            await _run_components(settings, engine, crm, publisher, runtime, stop, http, deadline)
    finally:
        deadline.start()
        startup.stopping = True
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(http, timeout=min(2.0, deadline.left()))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(deadline.left()):
                if publisher is not None:
                    await publisher.stop()  # sends what is still queued
                await crm.aclose()
                await engine.dispose()
        log.info("crm-records stopped")


async def _start_dependencies(settings: Settings, engine, startup: StartupProgress,
                              stop: asyncio.Event) -> KafkaPublisher | None:
    """Migrations, topics and the producer, each retried with backoff until it works."""
    await keep_trying("the database (to apply migrations)", lambda: asyncio.to_thread(migrate, settings),
                      startup, stop)
    if stop.is_set():
        return None
    broker = await keep_trying(f"the broker at {settings.resolved_bootstrap_servers()} (to check the topics)",
                               lambda: ensure_topics(settings), startup, stop)
    if broker is None:
        return None
    await keep_trying("the database (to record the Kafka cluster)",
                      lambda: check_cluster(engine, settings, broker.cluster_id), startup, stop)
    if stop.is_set():
        return None
    publisher = await keep_trying("the broker (to start the producer)",
                                  lambda: _started_publisher(settings, broker.dlq_max_message_bytes), startup, stop)
    if publisher is not None:
        startup.waiting_for = None
    return publisher


async def _started_publisher(settings: Settings, max_message_bytes: int | None) -> KafkaPublisher:
    publisher = KafkaPublisher(settings, max_message_bytes=max_message_bytes)
    try:
        await publisher.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await publisher.stop()
        raise
    return publisher


async def _run_components(settings: Settings, engine, crm: CrmAdapter, publisher: KafkaPublisher,
                          runtime: Runtime, stop: asyncio.Event, http: asyncio.Task,
                          deadline: ShutdownDeadline) -> None:
    log.info(
        "crm-records starting (%s): CRM %s, topic %s, group %s, HTTP port %d", _ROLE_DESCRIPTION[settings.service_role],
        crm.name, settings.kafka_topic, settings.kafka_group_id, settings.http_port,
    )
    tasks = {
        asyncio.create_task(watch_broker(publisher, runtime.consumer, stop), name="broker-check"),
        asyncio.create_task(refresh_gauges_periodically(engine, settings.metrics_refresh_seconds, stop),
                            name="db-gauges"),
        asyncio.create_task(beat_periodically(engine, crm.name, runtime.crm_health, stop), name="heartbeat"),
        asyncio.create_task(
            refresh_periodically(engine, stop, what_if=runtime.what_if if settings.whatif_keep_warm else None,
                                 max_sessions=settings.whatif_keep_warm_max_sessions),
            name="what-if-inputs",
        ),
    }
    worker: OutboxWorker | None = None
    # This process's consumer wakes its worker directly; its notifications say so.
    wake_token = uuid.uuid4().hex if settings.runs_worker and settings.runs_consumer else ""
    if settings.runs_worker:
        worker = OutboxWorker(settings, engine, OutboxRunner(engine, crm, publisher.publish_outcome, settings,
                                                            published_since=publisher.already_published),
                              direct_wake_token=wake_token or None)
        tasks.add(asyncio.create_task(worker.run(stop), name="outbox-worker"))
        tasks.add(asyncio.create_task(watch_crm_credentials(crm, runtime.crm_health, stop), name="crm-check"))
    else:  # what its heartbeat tells the operations view
        runtime.crm_health.ok, runtime.crm_health.detail = True, "not checked here: SERVICE_ROLE=consumer calls no CRM"
    if settings.runs_consumer:
        # Alone, the consumer's rows reach the workers through PostgreSQL's notification.
        wake = worker.wake if worker is not None else None
        consumer = ConsumerLoop(settings, engine, publisher, crm.name, health=runtime.consumer, on_outbox_rows=wake,
                                wake_token=wake_token)
        tasks.add(asyncio.create_task(consumer.run(stop), name="consumer"))
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({*tasks, http, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopping and task.exception() is not None:
                log.error("%s stopped: %r", task.get_name(), task.exception())
    finally:
        stop.set()
        deadline.start()
        runtime.startup.stopping = True
        log.info("stopping: no more fetching; finishing work in flight (at most %.0f s)", deadline.seconds)
        # Everything stops together within the deadline: the consumer finishes its batch
        # and commits, the worker finishes or releases its rows (see OutboxWorker).
        _, late = await asyncio.wait(tasks, timeout=deadline.left(reserve=1.5))
        for task in late:
            log.error("%s did not stop within the shutdown deadline; cancelled", task.get_name())
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, Exception):
                log.error("%s ended with %r", task.get_name(), result)
