"""Every setting the service reads from its environment has a row in the README's
Environment table: a platform engineer finds each variable, its default and what it is
for in one place."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _environment_table(readme: str) -> list[str]:
    section = readme.split("### Environment\n", 1)[1].split("\n#", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def documented_variables(readme: str) -> set[str]:
    """The variables named in the table's rows; a row's `VENDOR_…` stands for that
    vendor's variable of the same name as the row's first full one."""
    names: set[str] = set()
    for row in _environment_table(readme):
        full = re.findall(r"`([A-Z][A-Z0-9]+)(_[A-Z0-9_]+)`", row)
        names.update(prefix + rest for prefix, rest in full)
        for vendor in re.findall(r"`([A-Z][A-Z0-9]+)_…`", row):
            names.update(vendor + rest for _, rest in full[:1])
    return names


def test_every_setting_has_a_row_in_the_readmes_environment_table():
    documented = documented_variables(README.read_text())
    missing = sorted(name.upper() for name in Settings.model_fields if name.upper() not in documented)
    assert missing == []


def test_the_vendor_shorthand_names_each_vendors_variable():
    row = "| `ZENDESK_REQUESTS_PER_MINUTE`, `FRESHDESK_…`, `KUSTOMER_…` | none | a ceiling |"
    assert documented_variables("### Environment\n" + row) == {
        "ZENDESK_REQUESTS_PER_MINUTE", "FRESHDESK_REQUESTS_PER_MINUTE", "KUSTOMER_REQUESTS_PER_MINUTE"}
