"""Everything the bench starts, and takes down again (also on errors, Ctrl-C, SIGTERM):
a broker, a fresh database, its topics, and the service as N replica processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from app.settings import PROJECT_ROOT, Settings, normalize_database_url
from tools.bench.procstat import status_kb
from tools.dev.embedded import EmbeddedBroker, free_port

PARTITIONS = 6
DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# Settings the bench chooses for the service; every other service variable is passed on.
OWN_VARIABLES = {
    "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "KAFKA_OUTPUT_TOPIC", "KAFKA_DLQ_TOPIC",
    "KAFKA_GROUP_ID", "KAFKA_TOPIC_PARTITIONS", "CRM_PROVIDER", "HTTP_PORT", "HTTP_HOST", "ADMIN_API_TOKEN",
    "SERVICE_ROLE",
}
TUNING_PREFIXES = ("KAFKA_", "DATABASE_", "OUTBOX_", "SANDBOX_", "LOG_LEVEL", "CRM_TIMEOUT")


class BenchError(Exception):
    """The bench could not run (setup failed, the service died, a phase never finished)."""


def server_url(settings: Settings) -> str:
    url = settings.database_url or os.environ.get("TEST_DATABASE_URL") or DEFAULT_SERVER_URL
    return normalize_database_url(url)


def database_url(server: str, name: str, *, driver: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(server).set(drivername=driver)
    url = url.set(database=name or url.database or "postgres")
    return url.render_as_string(hide_password=False)


def safe_location(server: str) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(server)
    return f"{url.host or url.query.get('host') or 'local socket'}:{url.port or 5432}"


def tuning_env() -> list[str]:
    return sorted(
        f"{k}={v}" for k, v in os.environ.items()
        if k.upper().startswith(TUNING_PREFIXES) and k.upper() not in OWN_VARIABLES
        and "PASSWORD" not in k.upper() and "URL" not in k.upper()
    )


def log_tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join("    " + line for line in path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Replica:
    process: subprocess.Popen
    port: int
    log: Path
    peak_rss_kb: int | None = None


@dataclass
class Resources:
    work_dir: Path
    broker: EmbeddedBroker | None = None
    bootstrap: str = ""
    external_broker: bool = False
    server_url: str = ""
    database: str | None = None
    topics: list[str] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)

    # --- setup ---

    async def start_broker(self, settings: Settings) -> str:
        if settings.kafka_bootstrap_servers:
            self.bootstrap, self.external_broker = settings.kafka_bootstrap_servers, True
            return f"Kafka at {self.bootstrap} (KAFKA_BOOTSTRAP_SERVERS)"
        self.broker = EmbeddedBroker(free_port(), self.work_dir / "broker.log")
        await asyncio.to_thread(self.broker.start)
        self.bootstrap = self.broker.bootstrap_servers
        return "embedded Tansu broker"

    async def create_database(self, settings: Settings) -> str:
        import asyncpg

        self.server_url = server_url(settings)
        name = f"crm_records_bench_{uuid.uuid4().hex[:10]}"
        try:
            admin = await asyncpg.connect(database_url(self.server_url, "", driver="postgresql"), timeout=10)
        except Exception as exc:
            raise BenchError(
                f"cannot reach PostgreSQL at {safe_location(self.server_url)} ({type(exc).__name__}: {exc}); "
                "set DATABASE_URL or TEST_DATABASE_URL to a server where the bench may create a database"
            ) from None
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self.database = name
        return name

    def url(self, driver: str = "postgresql+asyncpg") -> str:
        return database_url(self.server_url, self.database or "", driver=driver)

    async def create_topics(self, names: list[str]) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        self.topics += names
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
        finally:
            await admin.close()

    def start_replica(self, topics: dict[str, str], group: str, crm_env: dict[str, str] | None = None,
                      *, role: str = "all") -> Replica:
        """One service process (`python -m app run`, sandbox CRM unless `crm_env` names
        another) in consumer group `group`, running `role` (SERVICE_ROLE)."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k.upper() not in OWN_VARIABLES}
        env.update(
            DATABASE_URL=self.url(), KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            KAFKA_TOPIC=topics["events"], KAFKA_DLQ_TOPIC=topics["dlq"], KAFKA_OUTPUT_TOPIC=topics["output"],
            KAFKA_GROUP_ID=group, KAFKA_TOPIC_PARTITIONS=str(PARTITIONS), CRM_PROVIDER="sandbox",
            HTTP_HOST="127.0.0.1", HTTP_PORT=str(port), ADMIN_API_TOKEN=uuid.uuid4().hex, SERVICE_ROLE=role,
        )
        env.update(crm_env or {})
        log = self.work_dir / f"service-{len(self.replicas) + 1}.log"
        with open(log, "ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "app", "run"], cwd=str(PROJECT_ROOT), env=env,
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            )
        replica = Replica(process, port, log)
        self.replicas.append(replica)
        return replica

    async def wait_ready(self, timeout: float = 120.0) -> float:
        """Until every replica answers /readyz (migrated, joined); seconds it took."""
        import httpx

        started = time.perf_counter()
        async with httpx.AsyncClient(timeout=2.0) as client:
            for replica in self.replicas:
                last = "no answer"
                while True:
                    self.check_alive()
                    with contextlib.suppress(httpx.HTTPError):
                        answer = await client.get(f"http://127.0.0.1:{replica.port}/readyz")
                        if answer.status_code == 200:
                            break
                        last = answer.text
                    if time.perf_counter() - started > timeout:
                        raise BenchError(f"the service was not ready after {timeout:.0f} s: {last}\n"
                                         + log_tail(replica.log))
                    await asyncio.sleep(0.2)
        return time.perf_counter() - started

    def check_alive(self) -> None:
        for replica in self.replicas:
            if replica.process.poll() is not None:
                raise BenchError("a service process exited during the bench:\n" + log_tail(replica.log))

    @property
    def broker_pids(self) -> list[int]:
        return [self.broker.process.pid] if self.broker and self.broker.process else []

    @property
    def service_pids(self) -> list[int]:
        return [r.process.pid for r in self.replicas]

    # --- teardown ---

    def stop_services(self) -> None:
        for replica in self.replicas:
            if replica.process.poll() is None:
                replica.peak_rss_kb = status_kb(replica.process.pid, "VmHWM")
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            try:
                replica.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait(timeout=5)

    def cleanup(self) -> None:
        errors = []
        for step in (self.stop_services, self._delete_topics, self._stop_broker, self._drop_database):
            try:
                step()
            except BaseException as exc:  # keep going: every other part must still be removed
                errors.append(f"{step.__name__}: {exc!r}")
        for problem in errors:
            print(f"cleanup: {problem}", file=sys.stderr)

    def _delete_topics(self) -> None:
        # An embedded broker forgets everything when it stops; a real one keeps topics.
        if not (self.external_broker and self.topics):
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
            admin = await asyncpg.connect(database_url(self.server_url, "", driver="postgresql"), timeout=10)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            finally:
                await admin.close()

        asyncio.run(drop())
        self.database = None
