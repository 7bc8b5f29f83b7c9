"""What every CRM adapter offers the outbox worker, and the errors it may raise.

An adapter speaks one CRM's documented API and nothing else: it does not decide
whether a record is due or which record to use (the domain policy does), and it
does not touch the service's database.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from app.domain.policy import ExistingRecord


@dataclass(frozen=True, slots=True)
class EndUserInfo:
    id: str  # the platform's end-user id
    name: str | None
    phone: str | None
    email: str | None


@dataclass(frozen=True, slots=True)
class SessionActivity:
    """One session as a CRM that logs each session as an activity on the record
    (Salesforce Tasks) needs it."""

    session_id: str
    title: str  # the rendered record title
    medium: str  # "call" or "chat"
    session_type: str  # e.g. "voice_outbound": gives a call's direction
    started_at: datetime | None
    contact_id: str | None  # the end user's CRM contact, when known
    duration_seconds: float | None = None
    disposition: str | None = None


@dataclass(frozen=True, slots=True)
class NewRecord:
    session_id: str  # stored as the record's external id
    title: str
    description: str
    contact_id: str  # what find_or_create_end_user returned ("" when the adapter makes it itself)
    tags: list[str]
    medium: str  # "call" or "chat": some CRMs set the record's channel from it
    queue_id: str
    # Stable for the session's record: a retried create must not make a second record.
    idempotency_key: str
    # For adapters that find or create the end user in the same request as the record
    # (`creates_end_user_with_record`), and log the session as an activity.
    end_user: EndUserInfo | None = None
    session: SessionActivity | None = None


@dataclass(frozen=True, slots=True)
class RecordRef:
    record_id: str
    url: str
    # The end user's CRM contact, when the adapter found or made it with the record.
    contact_id: str | None = None


# --- errors: how the worker must react ----------------------------------------------------------


class CrmError(Exception):
    """Base class. `retryable` tells the worker whether to try again later."""

    retryable = True

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


class CrmTransientError(CrmError):
    """5xx, timeouts, dropped connections: retried with backoff."""


class CrmRateLimited(CrmTransientError):
    """429 (or Salesforce's REQUEST_LIMIT_EXCEEDED): wait `retry_after` seconds; not a failure."""

    def __init__(self, message: str, *, retry_after: float, status: int | None = 429):
        super().__init__(message, status=status)
        self.retry_after = retry_after


class CrmAuthError(CrmError):
    """Credentials refused. Retried (an operator may fix them) and reported by /readyz."""


class CrmPermanentError(CrmError):
    """The CRM refused the request itself (validation error, missing field, unknown id):
    retrying cannot help, so the outbox row is parked with the CRM's own message."""

    retryable = False


class CrmNotConfigured(CrmPermanentError):
    """A required variable (URL, credential) is missing."""


def required_setting(settings: object, field: str) -> str:
    """The value of a CRM setting that must be set (secrets unwrapped), or CrmNotConfigured
    naming the environment variable."""
    value = getattr(settings, field)
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    if not value:
        raise CrmNotConfigured(f"{field.upper()} is not set")
    return value


# --- the per-call log: every HTTP call an adapter makes, for the decision trace --------------


@dataclass(slots=True)
class CrmCall:
    operation: str  # e.g. "create_record"
    method: str
    path: str  # never a query string with secrets, never a credential
    status: int | None  # None: no answer (timeout, connection error)
    latency_ms: float
    error: str | None = None


@dataclass(slots=True)
class CallLog:
    calls: list[CrmCall] = field(default_factory=list)


# The worker sets a fresh CallLog around each outbox item; adapters append to it.
current_call_log: ContextVar[CallLog | None] = ContextVar("current_call_log", default=None)


def log_call(call: CrmCall) -> None:
    log = current_call_log.get()
    if log is not None:
        log.calls.append(call)


@runtime_checkable
class LogsSessionActivities(Protocol):
    """A CRM where every session is an activity on its record (Salesforce Tasks): attaching
    and the end-of-session note need the session itself, not only a note's text."""

    async def attach_session_activity(
        self, record_id: str, session: SessionActivity, note: str, *, reopen: bool
    ) -> None:
        """Log the session on the record (reopening it first when `reopen`)."""

    async def complete_session_activity(
        self, record_id: str, session: SessionActivity, note: str, *, key: str, outcome_unknown: bool
    ) -> None:
        """The session ended: write its end-of-session note exactly once. `key` is stable
        for the note; `outcome_unknown` says an earlier attempt may have written it."""


class CrmAdapter(Protocol):
    name: str  # "salesforce", "zendesk", "kustomer", "freshdesk", "sandbox"

    async def check_credentials(self) -> None:
        """Raise CrmAuthError when the CRM refuses the credentials, CrmError when unreachable."""

    async def find_or_create_end_user(self, user: EndUserInfo) -> str:
        """The CRM's id for the end user: found by phone, then email, else created."""

    async def find_record_by_session(self, session_id: str) -> RecordRef | None:
        """The record whose external id is this session, if one exists (a direct look-up,
        not a lagging search index): the guard against a create that timed out but happened."""

    async def create_record(self, record: NewRecord) -> RecordRef:
        """Create the record, idempotently: calling again with the same record returns the same one."""

    async def get_record(self, record_id: str) -> ExistingRecord | None:
        """The record's status as the CRM sees it now (open or closed, closing time,
        whether it can be reopened); None when it no longer exists."""

    async def reopen_record(self, record_id: str) -> None:
        """Set the record to the CRM's default open status."""

    async def attach_session(self, record_id: str, note: str, tags: list[str]) -> None:
        """Add a private note naming the session, and the tags (added, never replacing)."""

    async def add_note(self, record_id: str, note: str) -> None:
        """Add a private (internal) note."""

    async def aclose(self) -> None:
        """Release connections."""
