"""Builders of valid session events (schema_version 1) for tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from app.domain.events import SessionEvent, decode_event

BASE_TIME = datetime(2026, 11, 23, 13, 0, 0, tzinfo=UTC)
_ids = itertools.count(1)


def at(seconds: float) -> datetime:
    return BASE_TIME + timedelta(seconds=seconds)


def header(
    session_id: str,
    *,
    medium: str = "call",
    session_type: str | None = None,
    queue_id: str = "q-billing",
    queue_path: list[str] | None = None,
    end_user_id: str = "eu-1",
    end_user_phone: str | None = "+5511987654321",
    end_user_email: str | None = None,
    end_user_name: str | None = "Maria Souza",
    language: str | None = "pt-BR",
    phone_number: str | None = "+551130000000",
    started_at: datetime | None = BASE_TIME,
) -> dict[str, Any]:
    return {
        "id": session_id,
        "medium": medium,
        "session_type": session_type or ("voice_inbound_ivr" if medium == "call" else "messaging_inbound_web"),
        "queue": {"id": queue_id, "path": queue_path if queue_path is not None else ["Billing", "Refunds"]},
        "language": language,
        "phone_number": phone_number,
        "end_user": {"id": end_user_id, "name": end_user_name, "phone": end_user_phone, "email": end_user_email},
        "started_at": started_at.isoformat() if started_at else None,
    }


def event_doc(
    session: dict[str, Any],
    event_type: str,
    seconds: float,
    *,
    event_id: str | None = None,
    sender: str = "end_user",
    text: str | None = "hello",
    summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "schema_version": 1,
        "event_id": event_id or f"{session['id']}-{event_type}-{next(_ids)}",
        "event_type": event_type,
        "occurred_at": at(seconds).isoformat(),
        "session": session,
    }
    if event_type in ("assigned", "connected", "ended"):
        document["agent"] = {"id": "ag-7", "name": "Ana Lima", "email": "ana@example.com"}
    if event_type == "message":
        document["message"] = {"id": f"m-{next(_ids)}", "sender": sender, "text": text}
    if event_type == "ended":
        document["summary"] = summary or {
            "duration_seconds": 120, "disposition": "resolved", "recording_url": "https://rec.example.com/1.mp3"
        }
    return document


def to_event(document: dict[str, Any]) -> SessionEvent:
    return decode_event(orjson.dumps(document))


def call_events(session_id: str, *, connected: bool = True, **header_args: Any) -> list[dict[str, Any]]:
    """queued, assigned, (connected), ended."""
    session = header(session_id, medium="call", **header_args)
    events = [event_doc(session, "queued", 0), event_doc(session, "assigned", 20)]
    if connected:
        events.append(event_doc(session, "connected", 26))
    events.append(event_doc(session, "ended", 300))
    return events


def chat_events(session_id: str, *, end_user_messages: int = 2, **header_args: Any) -> list[dict[str, Any]]:
    """queued, a first end-user message, assigned, connected, more messages, ended."""
    session = header(session_id, medium="chat", **header_args)
    events = [event_doc(session, "queued", 0)]
    if end_user_messages:
        events.append(event_doc(session, "message", 3, text="my order did not arrive"))
    events += [event_doc(session, "assigned", 30), event_doc(session, "connected", 31)]
    events.append(event_doc(session, "message", 40, sender="agent", text="what is the order number?"))
    for n in range(1, end_user_messages):
        events.append(event_doc(session, "message", 50 + n, text=f"order {n}"))
    events.append(event_doc(session, "ended", 300))
    return events
