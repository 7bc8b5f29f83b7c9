"""Every string the console shows comes from a catalog, and Brazilian Portuguese has them all."""

from __future__ import annotations

import gettext
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "app" / "console"
PO = CONSOLE / "locale" / "pt_BR" / "LC_MESSAGES" / "messages.po"
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2")]
OPTIONS = {"templates/**.html": {"extensions": "jinja2.ext.i18n", "trim_blocks": "true", "lstrip_blocks": "true"}}


def source_messages() -> set[str]:
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        CONSOLE, METHODS, options_map=OPTIONS, keywords={"_": None, "N_": None, "ngettext": (1, 2)}
    ):
        found.add(message[0] if isinstance(message, tuple) else message)
    return found


def test_every_console_string_has_a_portuguese_translation():
    catalog = read_po(PO.open("rb"))
    assert not catalog.fuzzy
    translated = {m.id[0] if isinstance(m.id, tuple) else m.id: m for m in catalog if m.id}
    messages = source_messages()
    assert len(messages) > 150
    missing = sorted(
        m
        for m in messages
        if m not in translated
        or not translated[m].string
        or translated[m].fuzzy
        or (isinstance(translated[m].string, tuple) and not all(translated[m].string))
    )
    assert missing == [], "run `make catalogs` and translate these"


def test_the_compiled_catalog_is_up_to_date():
    compiled = gettext.GNUTranslations((PO.with_suffix(".mo")).open("rb"))
    for message in read_po(PO.open("rb")):
        if message.id and not message.pluralizable:
            assert compiled.gettext(message.id) == message.string, "run `make catalogs`"
