"""What the outbox runner's work needs besides the CRM port: its own reasons for not
doing a row now (not CRM errors), the end user and session as the CRM port takes them,
the note marker, how a run's CRM requests are described and judged, and when a failed
row is tried again."""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.crm.base import CallLog, EndUserInfo, NewRecord, SessionActivity
from app.adapters.db import settings_repo
from app.domain.record_settings import RecordSettings
from app.domain.session import SessionState
from app.settings import Settings


class RowBlocked(Exception):
    """The row's work cannot be done now, for a reason of this service's own rather than
    the CRM's. `retryable` as for CrmError: whether the row is tried again."""

    retryable = True


class WaitForRecord(RowBlocked):
    """The session's record is still being made: try the note again shortly."""


class NoRecord(RowBlocked):
    """There is nothing to write to (the session, or its record, does not exist): parked."""

    retryable = False


def note_marker(idempotency_key: str) -> str:
    """The line that ends every end-of-session note: the outbox row's key, by which a
    retry finds a note an earlier attempt wrote without hearing back."""
    return f"[ref {idempotency_key}]"


def end_user(state: SessionState) -> EndUserInfo:
    return EndUserInfo(state.end_user_id, state.end_user_name, state.end_user_phone, state.end_user_email)


def activity(state: SessionState, title: str, contact: str | None) -> SessionActivity:
    return SessionActivity(
        session_id=state.session_id, title=title, medium=state.medium, session_type=state.session_type,
        started_at=state.timestamp, contact_id=contact or None, duration_seconds=state.duration_seconds,
        disposition=state.disposition, over=state.ended_at is not None or state.abandoned_at is not None,
    )


def with_contact(record: NewRecord, contact_id: str | None) -> NewRecord:
    fields: dict[str, Any] = {name: getattr(record, name) for name in NewRecord.__dataclass_fields__}
    return NewRecord(**{**fields, "contact_id": contact_id})


def wrote(calls: CallLog) -> bool:
    """Whether a failed attempt made a write that may have taken effect (answered 2xx, a
    5xx, or no answer): e.g. the conversation was created and its tags were refused. The
    retry must then look for what it made before writing again."""
    return any(
        c.method not in ("GET", "HEAD") and (c.status is None or c.status < 300 or c.status >= 500)
        for c in calls.calls
    )


def retry_delay(settings: Settings, attempts: int, calls: CallLog) -> float:
    """Exponential backoff with jitter. The retry looks for what this attempt wrote before
    writing again, so a write the CRM was still carrying out when the attempt gave up
    (no answer) gets as long again as the CRM timeout to land first."""
    base = settings.outbox_backoff_base_seconds * (2 ** max(0, attempts - 1))
    delay = min(settings.outbox_backoff_max_seconds, base) * random.uniform(0.5, 1.0)
    return max(delay, settings.crm_timeout_seconds) if write_unanswered(calls) else delay


def write_unanswered(calls: CallLog) -> bool:
    """Whether a write got no answer at all (it timed out, the connection dropped): the
    CRM may still be carrying it out, and a look for it now may miss it."""
    return any(c.method not in ("GET", "HEAD") and c.status is None for c in calls.calls)


def describe_cost(calls: CallLog) -> str:
    """`2 CRM requests: find_or_create_end_user GET /users/search, create_record POST /tickets`."""
    count = len(calls.calls)
    if not count:
        return "no CRM request"
    listed = ", ".join(f"{c.operation} {c.method} {c.path}" for c in calls.calls[:8])
    more = f", +{count - 8} more" if count > 8 else ""
    return f"{count} CRM request{'s' if count != 1 else ''}: {listed}{more}"


async def settings_of_row(reads: AsyncEngine, payload: dict[str, Any]) -> RecordSettings:
    """The settings a record row was made under: its version, read once per process."""
    if "settings" in payload:  # a row written before payloads named only the version
        return RecordSettings.model_validate(payload["settings"])
    version, digest = payload.get("settings_version"), payload.get("settings_digest")
    if (known := settings_repo.known_version(version, digest)) is not None:
        return known
    async with reads.connect() as conn:
        return await settings_repo.of_version(conn, version, digest)
