"""The console's languages: English and Brazilian Portuguese, from gettext catalogs
(app/console/locale, compiled by `python -m app.console.catalogs compile`; the .mo files are
committed so `make run`, the tests and the image have them). Chosen by the `lang` cookie
(the switch on every page), else from Accept-Language."""

from __future__ import annotations

import gettext
from functools import cache
from pathlib import Path

from babel import Locale, negotiate_locale
from babel.dates import format_datetime
from babel.numbers import format_decimal

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"
LANGUAGES = {"en": "English", "pt_BR": "Português (Brasil)"}
DEFAULT_LANGUAGE = "en"
LANGUAGE_COOKIE = "lang"


@cache
def translations(language: str) -> gettext.NullTranslations:
    if language == DEFAULT_LANGUAGE:
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[language], fallback=True)


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return cookie
    preferred = []
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            preferred.append((quality, tag.replace("-", "_")))
    ordered = [tag for _, tag in sorted(preferred, key=lambda p: -p[0])]
    # "pt" alone, or "pt-PT", still reads Brazilian Portuguese better than English
    ordered += [tag.split("_")[0] + "_BR" for tag in ordered if tag.lower().startswith("pt")]
    return negotiate_locale(ordered, list(LANGUAGES), sep="_") or DEFAULT_LANGUAGE


def html_lang(language: str) -> str:
    return language.replace("_", "-")


def when(moment, language: str) -> str:
    """A moment as the reader's language writes it, in UTC (what the service and the trace use)."""
    if moment is None:
        return ""
    return format_datetime(moment, "medium", tzinfo=None, locale=Locale.parse(language)) + " UTC"


def number(value, language: str) -> str:
    return format_decimal(value, locale=Locale.parse(language))
