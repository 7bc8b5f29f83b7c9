"""The size gate of `make lint` (tools/check_size.py), on a small package of its own."""

from __future__ import annotations

from pathlib import Path

from tools.check_size import MAX_FUNCTION_LINES, MAX_MODULE_LINES, check


def _package(root: Path, **modules: str) -> Path:
    package = root / "pkg"
    package.mkdir()
    for name, source in modules.items():
        (package / f"{name}.py").write_text(source)
    return root


def _function(name: str, body_lines: int, indent: str = "") -> str:
    return f"{indent}def {name}():\n" + "".join(f"{indent}    x = {n}\n" for n in range(body_lines - 1))


def test_a_function_over_the_limit_is_named_with_its_class(tmp_path):
    source = "class Runner:\n" + _function("fits", MAX_FUNCTION_LINES, "    ") + _function(
        "long", MAX_FUNCTION_LINES + 1, "    ")
    root = _package(tmp_path, work=source)
    assert check(root, "pkg", allowed={}) == [
        f"pkg/work.py::Runner.long: {MAX_FUNCTION_LINES + 1} lines (limit {MAX_FUNCTION_LINES}) (split it)"
    ]


def test_a_module_over_the_limit_fails_and_one_at_the_limit_passes(tmp_path):
    root = _package(tmp_path, big="x = 1\n" * (MAX_MODULE_LINES + 1), fits="x = 1\n" * MAX_MODULE_LINES)
    assert check(root, "pkg", allowed={}) == [
        f"pkg/big.py: {MAX_MODULE_LINES + 1} lines (limit {MAX_MODULE_LINES}) (split it)"
    ]


def test_an_allowance_covers_its_entry_and_a_stale_one_fails(tmp_path):
    root = _package(tmp_path, work=_function("long", MAX_FUNCTION_LINES + 5))
    assert check(root, "pkg", allowed={"pkg/work.py::long": "being split"}) == []
    assert check(root, "pkg", allowed={"pkg/work.py::long": "", "pkg/gone.py": ""}) == [
        "pkg/gone.py: no longer over its limit, remove it from ALLOWED in tools/check_size.py"
    ]


def test_the_service_package_passes():
    assert check(Path(__file__).resolve().parents[2]) == []
