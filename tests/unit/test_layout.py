"""The image holds only production code: nothing in app/ imports the development tools
(tools/, tests/), and the Dockerfile copies app/ and what it needs at run time, nothing
else (issue 13.4)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_nothing_in_app_imports_tools_or_tests():
    offending = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "app").rglob("*.py")
        for name in _imported_modules(path)
        if name.split(".")[0] in ("tools", "tests")
    }
    assert offending == set()


def test_the_image_copies_only_the_service_and_what_it_runs_with():
    runtime_stage = (ROOT / "Dockerfile").read_text().split("AS runtime", 1)[1]
    copied = {line.split()[-2] for line in runtime_stage.splitlines() if re.match(r"COPY (?!--from)", line)}
    assert copied == {"alembic.ini", "migrations/", "examples/", "app/"}


def test_make_run_runs_the_development_entrypoint_outside_the_package():
    run = re.search(r"^run:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), flags=re.M)
    assert run and run.group(1).endswith("-m tools.dev")
    assert not (ROOT / "app" / "entrypoints" / "embedded.py").exists()
