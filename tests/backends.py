"""Which PostgreSQL and Kafka the tests run against.

- `TEST_BACKEND=local` (the default): the PostgreSQL at 127.0.0.1:5432 (or
  TEST_DATABASE_URL) and an embedded Tansu broker (or KAFKA_BOOTSTRAP_SERVERS).
- `TEST_BACKEND=containers`: testcontainers' PostgreSQL 15 (`postgres:15`) and Apache
  Kafka (`apache/kafka`) containers, when a Docker engine answers; when none does, the
  tests say so and run on the local backend as above.

Explicit TEST_DATABASE_URL or KAFKA_BOOTSTRAP_SERVERS always win for their part."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

POSTGRES_IMAGE = "postgres:15"
KAFKA_IMAGE = "apache/kafka:3.9.0"


@dataclass(frozen=True)
class BackendChoice:
    postgres: str  # "containers", "env" (TEST_DATABASE_URL) or "local"
    kafka: str  # "containers", "env" (KAFKA_BOOTSTRAP_SERVERS) or "embedded"
    note: str  # one line for the test report header


def docker_reachable(env: Mapping[str, str], timeout: float = 1.0) -> bool:
    """Whether a Docker engine answers at DOCKER_HOST (or the default socket)."""
    host = env.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parsed = urlparse(host)
    try:
        if parsed.scheme == "unix":
            with socket.socket(socket.AF_UNIX) as probe:
                probe.settimeout(timeout)
                probe.connect(parsed.path)
                probe.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return b"OK" in probe.recv(1024)
        if parsed.scheme in ("tcp", "http", "https"):
            with socket.create_connection((parsed.hostname, parsed.port or 2375), timeout=timeout):
                return True
    except OSError:
        return False
    return False


def select_backend(env: Mapping[str, str], docker_ok: bool) -> BackendChoice:
    wanted = env.get("TEST_BACKEND", "local").strip().lower() or "local"
    if wanted not in ("local", "containers"):
        raise ValueError(f"TEST_BACKEND must be 'local' or 'containers', not {wanted!r}")
    containers = wanted == "containers" and docker_ok
    postgres = "env" if env.get("TEST_DATABASE_URL") else ("containers" if containers else "local")
    kafka = "env" if env.get("KAFKA_BOOTSTRAP_SERVERS") else ("containers" if containers else "embedded")
    if wanted == "containers" and not docker_ok:
        note = "TEST_BACKEND=containers, but no Docker engine answers: local PostgreSQL and the embedded broker"
    else:
        note = f"PostgreSQL: {postgres}, Kafka: {kafka}"
    return BackendChoice(postgres, kafka, note)


@dataclass
class RunningBackend:
    choice: BackendChoice
    postgres_url: str | None = None  # a server URL (database "postgres") when containers run
    kafka_bootstrap: str | None = None


@contextlib.contextmanager
def start_backend(env: Mapping[str, str] | None = None) -> Iterator[RunningBackend]:
    env = os.environ if env is None else env
    choice = select_backend(env, docker_reachable(env) if env.get("TEST_BACKEND") == "containers" else False)
    running = RunningBackend(choice)
    with contextlib.ExitStack() as stack:
        if choice.postgres == "containers":
            from testcontainers.postgres import PostgresContainer

            postgres = stack.enter_context(PostgresContainer(POSTGRES_IMAGE, username="postgres", password="postgres",
                                                             dbname="postgres", driver="asyncpg"))
            running.postgres_url = postgres.get_connection_url()
        if choice.kafka == "containers":
            running.kafka_bootstrap = stack.enter_context(apache_kafka_container())
        yield running


@contextlib.contextmanager
def apache_kafka_container() -> Iterator[str]:
    """A one-node KRaft Kafka from the `apache/kafka` image (testcontainers' KafkaContainer
    drives Confluent's image only). The host port is chosen first so the broker can
    advertise it; configured like docker-compose.yml's Kafka. Yields the bootstrap address."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9094, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093,EXTERNAL://:9094")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://localhost:9092,EXTERNAL://127.0.0.1:{port}")
        .with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT")
        .with_env("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    )
    with container:
        wait_for_logs(container, "Kafka Server started", timeout=120)
        yield f"127.0.0.1:{port}"
