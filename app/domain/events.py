"""Inbound session lifecycle events (schema_version 1), as the domain reads them.

`parse_event` turns one Kafka message value into a `SessionEvent` or raises
`InvalidEvent` with a reason a person can act on; the consumer dead-letters those.

The types are msgspec structs, decoded and validated in one pass, in about half the
instructions of the pydantic models (36,700 against 69,500 an event, time stamps parsed
included; those models were a fifth of the consumer's CPU: docs/bench.md). The pydantic
models (event_schema.py) remain the reference: a message the structs refuse is
validated there too, and its reason is pydantic's. tests/unit/test_event_decoders.py
holds the two to the same verdicts and values.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType
from msgspec.structs import force_setattr

from app.domain.event_schema import EventType, Sender, SessionTypeCode, validate
from app.domain.session_types import Medium

__all__ = ["Agent", "EndUser", "EventType", "InvalidEvent", "Message", "Queue", "Sender", "SessionEvent",
           "SessionHeader", "SessionTypeCode", "Summary", "parse_event"]

NonEmpty = Annotated[str, Meta(min_length=1)]
Id128 = Annotated[str, Meta(min_length=1, max_length=128)]
# The schema's `date-time` (RFC 3339, with an offset), the pattern event_schema checks.
# Decoded as text and parsed by __post_init__: msgspec's own parser also takes a space
# for the T and an offset without its colon, and rounds a seventh decimal (pydantic cuts
# it); fromisoformat would take an offset's minute 60.
Rfc3339Text = Annotated[
    str, Meta(pattern=r"\A\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:[0-5]\d)\Z")
]


def _instant(text: str) -> datetime:
    # fromisoformat cuts the decimals beyond the sixth, as pydantic does, but wants capitals.
    return datetime.fromisoformat(text.upper())


class Queue(Struct, frozen=True):
    id: NonEmpty
    path: list[str]


class EndUser(Struct, frozen=True):
    id: NonEmpty
    name: str | None = None
    phone: str | None = None
    email: str | None = None


class SessionHeader(Struct, frozen=True):
    id: Id128
    medium: Medium
    session_type: SessionTypeCode
    queue: Queue
    end_user: EndUser
    language: str | None = None
    phone_number: str | None = None
    if TYPE_CHECKING:
        started_at: datetime | None = None
    else:
        started_at: Rfc3339Text | None = None

    def __post_init__(self) -> None:
        if self.started_at is not None:
            force_setattr(self, "started_at", _instant(self.started_at))  # type: ignore[arg-type]


class Agent(Struct, frozen=True):
    id: str
    name: str | None = None
    email: str | None = None


class Message(Struct, frozen=True):
    id: str
    sender: Sender
    text: Annotated[str, Meta(max_length=20000)] | None = None


class Summary(Struct, frozen=True):
    duration_seconds: Annotated[float, Meta(ge=0)] | None = None
    disposition: str | None = None
    recording_url: str | None = None


class SessionEvent(Struct, frozen=True):
    schema_version: Literal[1]  # JSON `true` is not 1 here, as in the schema
    event_id: Id128
    event_type: EventType
    # What the domain sees (TYPE_CHECKING) is what __post_init__ leaves: a datetime, and
    # None for an absent object. What msgspec decodes: the text, and UNSET for an absent
    # object, so that a present `null` is refused, as the schema does.
    if TYPE_CHECKING:
        occurred_at: datetime
    else:
        occurred_at: Rfc3339Text
    session: SessionHeader
    if TYPE_CHECKING:
        agent: Agent | None = None
        message: Message | None = None
        summary: Summary | None = None
    else:
        agent: Agent | UnsetType = UNSET
        message: Message | UnsetType = UNSET
        summary: Summary | UnsetType = UNSET

    def __post_init__(self) -> None:
        force_setattr(self, "occurred_at", _instant(self.occurred_at))  # type: ignore[arg-type]
        if self.agent is UNSET:
            force_setattr(self, "agent", None)
        if self.message is UNSET:
            force_setattr(self, "message", None)
        if self.summary is UNSET:
            force_setattr(self, "summary", None)


_DECODER = msgspec.json.Decoder(SessionEvent)


class InvalidEvent(ValueError):
    """A message that cannot be applied; `reason` goes into the dead-letter `error` header."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode_event(value: bytes) -> SessionEvent:
    """The event `value` holds, without the conditional requirements parse_event adds
    (tests build events with it); raises InvalidEvent as parse_event does."""
    try:
        return _DECODER.decode(value)
    except (msgspec.DecodeError, ValueError):
        pass
    # Refused here: the reference words the refusal, or takes what msgspec is stricter on
    # (`"schema_version": 1.0`, a key given twice) and says how it reads it.
    verdict = validate(value)
    if verdict.reason is not None or verdict.taken is None:
        raise InvalidEvent(verdict.reason or "schema: refused")
    try:
        return _DECODER.decode(verdict.taken)
    except (msgspec.DecodeError, ValueError) as exc:
        raise InvalidEvent(f"schema: {exc}") from None


def parse_event(value: bytes | None) -> SessionEvent:
    if not value:
        raise InvalidEvent("invalid JSON: empty message value")
    event = decode_event(value)
    # The JSON Schema's conditional requirements.
    if event.event_type == "message" and event.message is None:
        raise InvalidEvent("schema: message: required for event_type message")
    if event.event_type in ("assigned", "connected") and event.agent is None:
        raise InvalidEvent(f"schema: agent: required for event_type {event.event_type}")
    return event
