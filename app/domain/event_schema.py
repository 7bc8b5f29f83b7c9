"""The event's schema (schema_version 1) as pydantic models: the reference of what is
valid, and the words of a refusal. The consumer decodes events with msgspec (events.py),
in about half the instructions; only a message msgspec refuses is validated here, so
the dead-letter reason says what pydantic says of it (tests/unit/test_event_decoders.py
holds the two to the same verdicts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

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
Id128 = Annotated[str, Field(min_length=1, max_length=128)]  # the schema's ids: events.Id128

# The schema's `date-time` (RFC 3339, with an offset). pydantic alone would also take a unix
# time written as text ("1795438800") or a date without a time.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("expected an RFC 3339 date-time with a timezone offset, like 2026-11-23T13:00:00Z")
    return value


# Not strict: after the check above, the text is parsed as in JSON mode.
Timestamp = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_rfc3339)]


class Queue(_Model):
    id: NonEmpty
    path: list[str]


class EndUser(_Model):
    id: NonEmpty
    name: str | None = None
    phone: str | None = None
    email: str | None = None


class SessionHeader(_Model):
    id: Id128
    medium: Medium
    session_type: SessionTypeCode
    queue: Queue
    language: str | None = None
    phone_number: str | None = None
    end_user: EndUser
    started_at: Timestamp | None = None


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
    event_id: Id128
    event_type: EventType
    occurred_at: Timestamp
    session: SessionHeader
    agent: Agent | None = None
    message: Message | None = None
    summary: Summary | None = None

    @field_validator("schema_version", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # JSON `true` is not the number 1 in the schema, but Python's True == 1.
        if isinstance(value, bool):
            raise ValueError("schema_version must be the number 1")
        return value

    @field_validator("agent", "message", "summary", mode="before")
    @classmethod
    def _object_when_present(cls, value: Any) -> Any:
        # The schema allows these to be absent, not null (absent ones are never validated).
        if value is None:
            raise ValueError("must be an object when present, not null")
        return value


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:5]:
        location = ".".join(str(p) for p in item["loc"]) or "(root)"
        parts.append(f"{location}: {item['msg']}")
    return "schema: " + "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: str | None  # why the schema refuses the message (the dead-letter reason)
    taken: bytes | None  # else the event as the schema reads it, written out again as JSON


def validate(value: bytes) -> Verdict:
    try:
        event = SessionEvent.model_validate_json(value)
    except ValidationError as exc:
        return Verdict(_explain(value, exc), None)
    return Verdict(None, event.model_dump_json(exclude_unset=True).encode())


def _explain(value: bytes, error: ValidationError) -> str:
    """The most useful reason first: bad JSON, then an unknown version, then schema details."""
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"invalid JSON: {exc}"
    if not isinstance(document, dict):
        return "schema: the message is not a JSON object"
    version = document.get("schema_version", SUPPORTED_SCHEMA_VERSIONS[0])
    if isinstance(version, bool) or version not in SUPPORTED_SCHEMA_VERSIONS:
        return f"unknown schema_version: {orjson.dumps(document['schema_version']).decode()}"
    return _describe(error)
