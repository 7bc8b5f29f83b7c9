"""Inbound session lifecycle events (schema_version 1), validated with pydantic.

`parse_event` turns one Kafka message value into a `SessionEvent` or raises
`InvalidEvent` with a reason a person can act on; the consumer dead-letters those.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from app.domain.session_types import Medium

EventType = Literal["queued", "assigned", "connected", "message", "abandoned", "ended"]
Sender = Literal["end_user", "agent", "virtual_agent", "system"]
SessionTypeCode = Literal[
    "voice_inbound_ivr", "voice_inbound_ivr_mobile", "voice_inbound_app", "voice_inbound_web",
    "voice_inbound_api", "voice_callback_web", "voice_scheduled_app", "voice_scheduled_web",
    "voice_outbound", "voice_outbound_api", "voice_campaign",
    "messaging_inbound_web", "messaging_inbound_app", "messaging_inbound_sms",
    "messaging_inbound_whatsapp", "messaging_outbound_sms", "messaging_outbound_sms_api",
]

SUPPORTED_SCHEMA_VERSIONS = (1,)


class _Model(BaseModel):
    # strict: a number is not a string and "true" is not a boolean, as in the JSON Schema;
    # extra fields are allowed there, so they are ignored here.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


NonEmpty = Annotated[str, Field(min_length=1)]


class Queue(_Model):
    id: NonEmpty
    path: list[str]


class EndUser(_Model):
    id: NonEmpty
    name: str | None = None
    phone: str | None = None
    email: str | None = None


class SessionHeader(_Model):
    id: Annotated[str, Field(min_length=1, max_length=128)]
    medium: Medium
    session_type: SessionTypeCode
    queue: Queue
    language: str | None = None
    phone_number: str | None = None
    end_user: EndUser
    started_at: AwareDatetime | None = None


class Agent(_Model):
    id: str
    name: str | None = None
    email: str | None = None


class Message(_Model):
    id: str
    sender: Sender
    text: Annotated[str, Field(max_length=20000)] | None = None


class Summary(_Model):
    duration_seconds: Annotated[float, Field(ge=0)] | None = None
    disposition: str | None = None
    recording_url: str | None = None


class SessionEvent(_Model):
    schema_version: Literal[1]
    event_id: Annotated[str, Field(min_length=1, max_length=128)]
    event_type: EventType
    occurred_at: AwareDatetime
    session: SessionHeader
    agent: Agent | None = None
    message: Message | None = None
    summary: Summary | None = None


class InvalidEvent(ValueError):
    """A message that cannot be applied; `reason` goes into the dead-letter `error` header."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:5]:
        location = ".".join(str(p) for p in item["loc"]) or "(root)"
        parts.append(f"{location}: {item['msg']}")
    return "schema: " + "; ".join(parts)


def parse_event(value: bytes | None) -> SessionEvent:
    if not value:
        raise InvalidEvent("invalid JSON: empty message value")
    try:
        # One pass over the bytes: parsing and validation together.
        event = SessionEvent.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidEvent(_explain(value, exc)) from None
    # The JSON Schema's conditional requirements.
    if event.event_type == "message" and event.message is None:
        raise InvalidEvent("schema: message: required for event_type message")
    if event.event_type in ("assigned", "connected") and event.agent is None:
        raise InvalidEvent(f"schema: agent: required for event_type {event.event_type}")
    return event


def _explain(value: bytes, error: ValidationError) -> str:
    """The most useful reason first: bad JSON, then an unknown version, then schema details."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"invalid JSON: {exc}"
    if not isinstance(document, dict):
        return "schema: the message is not a JSON object"
    if "schema_version" in document and document["schema_version"] not in SUPPORTED_SCHEMA_VERSIONS:
        return f"unknown schema_version: {orjson.dumps(document['schema_version']).decode()}"
    return _describe(error)


def to_utc(moment: datetime) -> datetime:
    from datetime import timezone

    return moment.astimezone(timezone.utc)
