"""External tools the ops checks use (promtool, kubectl): found on PATH, or a clear skip,
or a failure where CI requires them (`CI` or `REQUIRE_OPS_TOOLS` set)."""

from __future__ import annotations

import os
import shutil

import pytest

INSTALL_HINT = {
    "promtool": "install Debian's `prometheus` package (apt-get install -y prometheus); .ci/run does",
}


def required() -> bool:
    return any(os.environ.get(name, "").lower() not in ("", "0", "false") for name in ("CI", "REQUIRE_OPS_TOOLS"))


def tool(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed: {INSTALL_HINT.get(name, 'install it')}"
    if required():
        pytest.fail(message + " (required: CI or REQUIRE_OPS_TOOLS is set)")
    pytest.skip(message)
