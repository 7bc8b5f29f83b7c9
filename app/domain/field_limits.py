"""How long a record's title and each tag may be in each CRM, and cutting text to fit.

A title is cut with an ellipsis rather than refused: a 100,000-element menu path (the
event schema allows it) must still make a record. The numbers, and where they come from,
are in docs/crm/field-limits.md."""

from __future__ import annotations

from dataclasses import dataclass

ELLIPSIS = "\u2026"


@dataclass(frozen=True, slots=True)
class FieldLimits:
    title: int  # characters
    tag: int | None  # characters; None: the CRM has no tags


FIELD_LIMITS: dict[str, FieldLimits] = {
    "salesforce": FieldLimits(title=255, tag=None),  # Case.Subject is a string(255); Cases have no tags
    "zendesk": FieldLimits(title=255, tag=255),
    "kustomer": FieldLimits(title=255, tag=255),
    "freshdesk": FieldLimits(title=255, tag=32),
    "sandbox": FieldLimits(title=255, tag=255),
}
# A CRM not listed gets the strictest of the known limits.
DEFAULT_LIMITS = FieldLimits(title=255, tag=32)


def limits_for(crm: str) -> FieldLimits:
    return FIELD_LIMITS.get(crm, DEFAULT_LIMITS)


def cut(text: str, max_chars: int | None) -> str:
    """`text` if it fits, else its start and an ellipsis, `max_chars` long in all."""
    if max_chars is None or len(text) <= max_chars:
        return text
    return text[: max_chars - 1].rstrip() + ELLIPSIS
