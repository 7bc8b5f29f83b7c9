"""What every CRM adapter offers the outbox worker, and the errors it may raise.

An adapter speaks one CRM's documented API and nothing else: it does not decide
whether a record is due or which record to use (the domain policy does). A vendor's
adapter reaches the service's database only through the stores it is given (the rate
budget shared by the replicas); the worker keeps the remembered end users. The
sandbox CRM is the exception: its records live in the service's own database.
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
    # The session was already over (ended or abandoned) when this was written.
    over: bool = False


@dataclass(frozen=True, slots=True)
class NewRecord:
    session_id: str  # stored as the record's external id
    title: str
    description: str
    # The CRM's id for the end user when it is known (remembered, or what
    # find_or_create_end_user returned); None when an adapter that `resolves_end_user`
    # is to find or create the end user itself from `end_user` (e.g. inline on the create).
    contact_id: str | None
    tags: list[str]
    medium: str  # "call" or "chat": some CRMs set the record's channel from it
    queue_id: str
    # Stable for the session's record: a retried create must not make a second record.
    idempotency_key: str
    # For adapters that find or create the end user in the same request as the record
    # (`resolves_end_user`), and log the session as an activity.
    end_user: EndUserInfo | None = None
    session: SessionActivity | None = None
    # True only when an earlier attempt may have made the record without us hearing back
    # (timeout, dropped connection, 5xx after sending, a claimer that died): only then is
    # the record looked up by session id first. A first attempt never looks.
    retrying_unknown_outcome: bool = False


@dataclass(frozen=True, slots=True)
class RecordRef:
    record_id: str
    url: str
    # The CRM's id for the end user the record belongs to, when the adapter knows it:
    # the worker remembers it (crm_end_users) so the next record of this end user costs
    # no look-up.
    contact_id: str | None = None


@dataclass(frozen=True, slots=True)
class NoteWrite:
    """An end-of-session note, written at most once where the CRM allows it.

    `body` already carries `marker` (the outbox row's key) as its last line, so a retry
    whose earlier attempt's outcome is unknown can look for it before writing again;
    `idempotency_key` goes in the vendor's idempotency header where one is documented."""

    record_id: str
    body: str
    marker: str
    idempotency_key: str
    retrying_unknown_outcome: bool = False


# --- errors: how the worker must react ----------------------------------------------------------


class CrmError(Exception):
    """Base class. `retryable` tells the worker whether to try again later."""

    retryable = True

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


class CrmTransientError(CrmError):
    """5xx, timeouts, dropped connections: retried with backoff.

    `outcome_unknown` says the request may have been carried out although no answer
    said so (a timeout or dropped connection after sending, a 5xx to a write): the
    retry must look for what the first attempt may have made before writing again."""

    def __init__(self, message: str, *, status: int | None = None, outcome_unknown: bool = False):
        super().__init__(message, status=status)
        self.outcome_unknown = outcome_unknown


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


class CrmEndUserGone(CrmError):
    """The CRM no longer knows the remembered end-user id (deleted: 404, or merged into
    another user). The worker forgets the mapping and finds the end user again."""


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


def crm_account(adapter: CrmAdapter) -> str:
    """The CRM account an adapter speaks to (e.g. `zendesk:https://acme.zendesk.com`): the
    key of the end-user mapping and of the shared rate budget. An adapter without an
    `account` attribute counts as one account per CRM."""
    return getattr(adapter, "account", None) or adapter.name


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
    """What the worker calls. Optional, detected with getattr so older adapters keep working:

    * `account: str`: see crm_account();
    * `resolves_end_user: bool`: True when create_record accepts `contact_id=None` with
      `end_user` set and finds or creates the end user itself (returning its id in
      RecordRef.contact_id); the worker then never calls find_or_create_end_user first;
    * `async write_note(note: NoteWrite)`: an end-of-session note written at most once
      (marker look-up on retries, vendor idempotency key); otherwise add_note is used.
    """

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
