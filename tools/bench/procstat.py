"""CPU and memory of processes, from /proc (Linux)."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, name: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmHWM, VmRSS), in kB."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of one process (utime + stime of /proc/<pid>/stat)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    return None


def machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with contextlib.suppress(OSError, ValueError):
        numbers = [int(n) for n in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)
        return sum(numbers) - idle, sum(numbers)
    return None


def load_average() -> float | None:
    with contextlib.suppress(OSError):
        return os.getloadavg()[0]
    return None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def postgres_backends(database: str, exclude: Iterable[int] = ()) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends serving `database` (PostgreSQL on this machine)."""
    skip = set(exclude)
    found: dict[int, float] = {}
    needle = f" {database} ".encode()
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in skip:
                continue
            with contextlib.suppress(OSError):
                command = Path(entry.path, "cmdline").read_bytes()
                if command.startswith(b"postgres:") and needle in command:
                    seconds = cpu_seconds(int(entry.name))
                    if seconds is not None:
                        found[int(entry.name)] = seconds
    return found


@dataclass
class CpuWindow:
    """CPU seconds used over one phase by named groups of processes, by the PostgreSQL
    backends of one database (minus the bench's own probe connection), and how busy the
    whole machine was (the other work sharing it)."""

    groups: dict[str, list[int]]
    database: str
    exclude_backends: set[int] = field(default_factory=set)
    started: float = 0.0
    elapsed: float = 0.0
    _machine: tuple[int, int] | None = None
    _before: dict[str, float] = field(default_factory=dict)
    _backends: dict[int, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)  # seconds, after stop()
    machine_busy: float | None = None  # percent of all cores

    def _group_seconds(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(pid) or 0.0 for pid in pids) for name, pids in self.groups.items()}

    def start(self) -> CpuWindow:
        self.started = time.perf_counter()
        self._machine = machine_jiffies()
        self._before = self._group_seconds()
        self._backends = postgres_backends(self.database, self.exclude_backends)
        return self

    def stop(self) -> CpuWindow:
        self.elapsed = max(time.perf_counter() - self.started, 1e-9)
        after = self._group_seconds()
        self.used = {name: after[name] - self._before.get(name, 0.0) for name in self.groups}
        now = postgres_backends(self.database, self.exclude_backends)
        # A backend that exited during the window is missed: the service's pool keeps its
        # connections, so this undercounts only when the pool is smaller than the work.
        self.used["postgres"] = sum(seconds - self._backends.get(pid, 0.0) for pid, seconds in now.items())
        machine = machine_jiffies()
        if self._machine and machine and machine[1] > self._machine[1]:
            self.machine_busy = 100 * (machine[0] - self._machine[0]) / (machine[1] - self._machine[1])
        return self

    def per_event_us(self, name: str, events: int) -> float:
        return 1e6 * self.used.get(name, 0.0) / max(events, 1)

    def percent(self, name: str) -> float:
        return 100 * self.used.get(name, 0.0) / self.elapsed
