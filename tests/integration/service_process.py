"""The service as a real subprocess (`python -m app run`), for tests that kill it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from pydantic import SecretStr

from app.settings import Settings
from tests.helpers import eventually

PROJECT = Path(__file__).resolve().parents[2]


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_", "CRM_", "OUTBOX_"))}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[name.upper()] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ServiceProcess:
    def __init__(self, settings: Settings, log_path: Path):
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "run"], cwd=PROJECT, env=settings_env(self.settings),
            stdout=log, stderr=subprocess.STDOUT,
        )
        return self

    async def wait_ready(self, timeout: float = 60.0) -> None:
        url = f"http://127.0.0.1:{self.settings.http_port}/readyz"
        async with httpx.AsyncClient(timeout=2.0) as client:

            async def ready() -> bool:
                assert self.process and self.process.poll() is None, self.log_path.read_text()[-3000:]
                with contextlib.suppress(httpx.HTTPError):
                    return (await client.get(url)).status_code == 200
                return False

            try:
                await eventually(ready, timeout=timeout, interval=0.2)
            except AssertionError as not_ready:
                if self.process and self.process.poll() is not None:
                    raise
                raise AssertionError("service process not ready: " + self.log_path.read_text()[-3000:]) from not_ready

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crashed container."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
