"""Wires the whole service in one process: migrations, topics, the consumer loop, the
outbox worker, the CRM credential check, and the HTTP API; stops them all on
SIGTERM/SIGINT. Every replica runs this same thing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from datetime import datetime, timezone
from typing import Any

from alembic import command
from alembic.config import Config

from app import metrics
from app.observability import tracing
from app.adapters.crm.base import CrmAdapter, CrmAuthError
from app.adapters.crm.factory import build_crm_adapter
from app.adapters.db.engine import build_engine
from app.adapters.kafka.producer import KafkaPublisher
from app.adapters.kafka.topics import ensure_topics
from app.entrypoints.consumer import ConsumerLoop
from app.entrypoints.http import Runtime, create_app
from app.entrypoints.http.server import build_http_server
from app.entrypoints.worker import OutboxWorker
from app.service.auth import TokenBook
from app.service.broker_identity import check_cluster
from app.service.gauges import refresh_gauges_periodically
from app.service.outbox import OutboxRunner
from app.service.readiness import CrmHealth
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
        health.checked_at = datetime.now(timezone.utc)
        metrics.crm_credentials_accepted.labels(crm.name).set(1 if health.ok else 0)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=30 if health.ok else 5)


async def run_service(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)

    tokens = TokenBook.from_settings(settings)  # a bad token list stops the start, naming the entry
    tracing.setup_tracing(settings.otel_exporter_otlp_endpoint, settings.otel_service_name)
    await asyncio.to_thread(migrate, settings)
    cluster_id = await ensure_topics(settings)
    engine = build_engine(settings)
    tracing.instrument_engine(engine)
    await check_cluster(engine, settings, cluster_id)
    crm = tracing.traced_crm(build_crm_adapter(settings, engine=engine))
    publisher = KafkaPublisher(settings)
    await publisher.start()
    consumer = ConsumerLoop(settings, engine, publisher, crm.name)
    worker = OutboxWorker(settings, engine, OutboxRunner(engine, crm, publisher.publish_outcome, settings))
    runtime = Runtime(settings, engine, crm, consumer_joined=lambda: consumer.joined, tokens=tokens)
    app = create_app(runtime)
    tracing.instrument_app(app)
    server = build_http_server(app, settings)
    log.info(
        "crm-records starting: CRM %s, topic %s, group %s, HTTP port %d",
        crm.name, settings.kafka_topic, settings.kafka_group_id, settings.http_port,
    )
    tasks = {
        asyncio.create_task(consumer.run(stop), name="consumer"),
        asyncio.create_task(worker.run(stop), name="outbox-worker"),
        asyncio.create_task(watch_crm_credentials(crm, runtime.crm_health, stop), name="crm-check"),
        asyncio.create_task(server.serve(), name="http"),
        asyncio.create_task(
            refresh_gauges_periodically(engine, settings.metrics_refresh_seconds, stop), name="db-gauges"
        ),
    }
    try:
        done, _ = await asyncio.wait({*tasks, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in tasks and task.exception() is not None:
                log.error("%s stopped: %r", task.get_name(), task.exception())
    finally:
        stop.set()
        server.should_exit = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results):
            if isinstance(result, Exception):
                log.error("%s ended with %r", task.get_name(), result)
        await publisher.stop()
        await crm.aclose()
        await engine.dispose()
        log.info("crm-records stopped")
