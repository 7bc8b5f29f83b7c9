"""A private PostgreSQL 15 cluster the harness may crash: initdb into a temporary
directory, pg_ctl on a free port, `pg_ctl stop -m immediate` for a hard restart.

PostgreSQL refuses to run as root; when the harness is root (a CI container), the
cluster's files belong to the `postgres` user and its commands run as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tools.dev.embedded import free_port

DEFAULT_BIN_DIR = Path("/usr/lib/postgresql/15/bin")


def _bin_dir() -> Path:
    configured = os.environ.get("PG_BIN_DIR")
    if configured:
        return Path(configured)
    if DEFAULT_BIN_DIR.is_dir():
        return DEFAULT_BIN_DIR
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise RuntimeError("no PostgreSQL binaries: install PostgreSQL 15 or set PG_BIN_DIR to its bin directory")


def _run_as(user: pwd.struct_passwd | None):
    if user is None:
        return None

    def switch() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return switch


class PrivatePostgres:
    """One throw-away cluster; `url(database)` gives an asyncpg SQLAlchemy URL for it."""

    def __init__(self, log_dir: Path | None = None, *, max_connections: int = 200):
        self.bin_dir = _bin_dir()
        # Its own directory in the system's temporary space: the server's user must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="crm-records-pg-"))
        self.log_dir = log_dir
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self.port = free_port()
        self.max_connections = max_connections
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.restarts = 0
        self.ballasts = 0
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        result = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]], preexec_fn=_run_as(self.user),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, cwd=self.root,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stdout.decode(errors='replace')}")

    def init(self) -> PrivatePostgres:
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> None:
        # fsync off: the faults here are process crashes, never an operating-system crash,
        # so committed data survives them (WAL written to the OS) without paying for flushes.
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   f"-c max_connections={self.max_connections} -c fsync=off -c full_page_writes=off "
                   # No checkpoint between restarts: recovery replays everything written since.
                   "-c checkpoint_timeout=1h -c max_wal_size=8GB")
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(self.log_file), "-w", "-t", "120",
                  "start", timeout=150)

    async def write_ballast(self, rows: int) -> None:
        """Write about 150 bytes of WAL per row, so that the next crash recovery takes a
        while (a second per million rows or so), as on a busy server: meanwhile the server
        answers every connection with 57P03 "the database system is starting up"."""
        import asyncpg

        self.ballasts += 1
        connection = await asyncpg.connect(self.dsn(), timeout=10)
        try:
            await connection.execute(
                f"CREATE TABLE ballast_{self.ballasts} AS "
                f"SELECT g AS n, repeat('x', 100) AS filler FROM generate_series(1, {int(rows)}) AS g"
            )
        finally:
            await connection.close()

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: every backend dies at once, the next start recovers."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "stop")
        self.restarts += 1

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            if self.log_dir is not None and self.log_file.exists():
                shutil.copy(self.log_file, self.log_dir / "postgres.log")
            shutil.rmtree(self.root, ignore_errors=True)
