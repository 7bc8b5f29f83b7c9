"""`python -m tools.check_size` (run by `make lint`): no module in app/ over 400 lines, no
function or method over 60, so a newcomer can read any unit of the service in one sitting.

A function's length runs from its `def` line (decorators excluded) to its last line,
nested functions included. Exceptions are listed in ALLOWED below with the reason and who
is shrinking them; an entry that is no longer over its limit fails too, so the list only
shrinks.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# "path" for a module, "path::qualified.name" for a function: each one still too long.
ALLOWED: dict[str, str] = {}


@dataclass(frozen=True)
class Oversize:
    key: str  # path, or path::qualified.name
    lines: int
    limit: int

    def __str__(self) -> str:
        return f"{self.key}: {self.lines} lines (limit {self.limit})"


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from _functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def oversized(path: Path, shown_as: str) -> list[Oversize]:
    source = path.read_text()
    found = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(Oversize(shown_as, lines, MAX_MODULE_LINES))
    for name, node in _functions(ast.parse(source, filename=str(path))):
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > MAX_FUNCTION_LINES:
            found.append(Oversize(f"{shown_as}::{name}", length, MAX_FUNCTION_LINES))
    return found


def check(root: Path, package: str = "app", allowed: dict[str, str] | None = None) -> list[str]:
    """The problems found under root/package: what is over and not allowed, and allowances
    that are no longer needed."""
    allowed = ALLOWED if allowed is None else allowed
    over = [o for path in sorted((root / package).rglob("*.py"))
            for o in oversized(path, path.relative_to(root).as_posix())]
    problems = [f"{o} (split it)" for o in over if o.key not in allowed]
    still_over = {o.key for o in over}
    problems += [f"{key}: no longer over its limit, remove it from ALLOWED in tools/check_size.py"
                 for key in allowed if key not in still_over]
    return problems


def main() -> int:
    problems = check(Path(__file__).resolve().parents[1])
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
