"""The image and the venv carry no pip or setuptools with published advisories, and the
image's base is pinned by exact version (issue 9, item 8)."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
# The first releases without the advisories Python 3.11's bundled copies carry
# (setuptools 65.5: CVE-2022-40897, CVE-2024-6345, CVE-2025-47273; pip: CVE-2025-8869).
SETUPTOOLS_FIXED = (78, 1, 1)
PIP_FIXED = (25, 3)
EXACT_BASE = re.compile(r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?")


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def stages() -> list[str]:
    return re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]


def test_the_base_image_is_pinned_by_exact_version():
    default = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, flags=re.M)
    assert default and EXACT_BASE.fullmatch(default.group(1)), default
    for stage in stages():
        image = stage.split()[0]
        assert image == "${PYTHON_IMAGE}" or EXACT_BASE.fullmatch(image), image


def test_every_image_stage_upgrades_pip_and_setuptools():
    minimums = dict(re.findall(r"^ARG (PIP_MIN|SETUPTOOLS_MIN)=(\S+)$", DOCKERFILE, flags=re.M))
    assert version_tuple(minimums["PIP_MIN"]) >= PIP_FIXED
    assert version_tuple(minimums["SETUPTOOLS_MIN"]) >= SETUPTOOLS_FIXED
    assert len(stages()) == 2
    for stage in stages():
        upgrade = re.search(r"pip install --upgrade (.*)", stage)
        assert upgrade, stage.splitlines()[0]
        assert '"pip>=${PIP_MIN}"' in upgrade.group(1) and '"setuptools>=${SETUPTOOLS_MIN}"' in upgrade.group(1)


def test_make_set_up_upgrades_pip_and_setuptools_in_the_venv():
    upgrade = re.search(r"pip install --quiet --upgrade (.*)", MAKEFILE)
    assert upgrade and "'setuptools>=" in upgrade.group(1) and "'pip>=" in upgrade.group(1)
    found = re.search(r"'setuptools>=([\d.]+)'", upgrade.group(1))
    assert version_tuple(found.group(1)) >= SETUPTOOLS_FIXED


def test_this_venv_has_no_vulnerable_setuptools_or_pip():
    try:
        setuptools = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("no setuptools in this environment")
    assert version_tuple(setuptools) >= SETUPTOOLS_FIXED, setuptools
    assert version_tuple(importlib.metadata.version("pip")) >= PIP_FIXED
