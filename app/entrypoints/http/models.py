"""What the HTTP API answers, as pydantic models: the OpenAPI document is built from
these, and every answer is checked against them before it leaves."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

# RFC 3339 with the offset as +00:00, as the API has always written its timestamps.
Timestamp = Annotated[datetime, PlainSerializer(lambda value: value.isoformat(), return_type=str, when_used="json")]


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorMessage(_View):
    detail: str


class FieldError(_View):
    field: str = Field(description="the field, parameter or header at fault; `(body)` for the body as a whole")
    reason: str
    loc: list[str]
    msg: str


class ValidationErrors(_View):
    detail: list[FieldError]


class Health(_View):
    status: Literal["ok"]


class StuckPartitionView(_View):
    topic: str
    partition: int
    offset: int | None = Field(description="the first offset not yet applied, when known")
    seconds: float = Field(description="how long it has not advanced (0.1 s)")
    error: str


class QuotaView(_View):
    """A CRM account's rate budget (app.adapters.crm.budget.BudgetState)."""

    crm: str
    account: str
    per_minute: float | None = Field(description="the pace in force (null: not known yet)")
    ceiling_per_minute: int | None
    vendor_limit: int | None
    vendor_remaining: int | None
    window_seconds: float
    usable_remaining: int | None = Field(description="for a daily allocation: what is left above the reserved share")
    paused_for_seconds: float


class CheckView(_View):
    """A check's result; the facts after `degraded` appear only on the checks that have them."""

    ready: bool
    detail: str | None = None
    degraded: bool | None = None
    stuck_partitions: list[StuckPartitionView] | None = None  # consumer
    crm: str | None = None  # crm
    quota: QuotaView | None = None  # crm


class ReadinessView(_View):
    status: Literal["ready", "degraded", "not ready"]
    not_ready: list[str]
    checks: dict[str, CheckView]


class SettingsChange(_View):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    from_: Any = Field(alias="from")
    to: Any


class SettingsVersionView(_View):
    version: int
    saved_at: Timestamp
    actor: str | None = Field(description="the name of the token that saved this version")
    note: str | None = Field(description="the caller's own note (X-Actor), sanitized")
    changes: dict[str, SettingsChange]
    settings: dict[str, Any]


class TraceRecord(_View):
    progress: str
    reason: str | None
    crm: str | None
    record_id: str | None
    record_url: str | None
    action: str | None


class TraceDecision(_View):
    kind: str
    reason: str
    event_at: Timestamp | None
    settings_version: int | None
    record_id: str | None
    decided_at: Timestamp


class OutboxRowView(_View):
    id: int
    kind: str
    idempotency_key: str
    status: str
    attempts: int
    due_at: Timestamp
    last_error: str | None
    created_at: Timestamp
    done_at: Timestamp | None


class CrmCallView(_View):
    outbox_id: int
    attempt: int
    crm: str
    operation: str
    method: str | None
    path: str | None
    status_code: int | None
    latency_ms: float | None
    outcome: Literal["ok", "failed"]
    error: str | None
    at: Timestamp


class SessionStateView(_View):
    """The session's state as the service folded it from its events
    (app.domain.session.SessionState, field for field)."""

    session_id: str
    medium: str
    session_type: str
    queue_id: str
    queue_path: list[str]
    language: str | None
    phone_number: str | None
    end_user_id: str
    end_user_name: str | None
    end_user_phone: str | None
    end_user_email: str | None
    started_at: Timestamp | None
    header_at: Timestamp | None = Field(description="when the header above was taken (the newest event's)")
    first_event_at: Timestamp | None
    queued_at: Timestamp | None
    assigned_at: Timestamp | None
    connected_at: Timestamp | None
    abandoned_at: Timestamp | None
    ended_at: Timestamp | None
    agent_id: str | None
    agent_name: str | None
    agent_email: str | None
    end_user_messages: int
    agent_messages: int
    virtual_agent_messages: int
    system_messages: int
    duration_seconds: float | None
    disposition: str | None
    recording_url: str | None
    events_applied: int
    record: Literal["pending", "due", "skipped"]
    record_reason: str | None
    record_decided_at: Timestamp | None
    ended_note_due: bool
    last_wait_reason: str | None


class SessionTraceView(_View):
    session_id: str
    state: SessionStateView
    record: TraceRecord
    decisions: list[TraceDecision]
    outbox: list[OutboxRowView]
    crm_calls: list[CrmCallView]


class RecordView(_View):
    id: int
    crm: str
    record_id: str
    record_url: str | None
    end_user_id: str
    queue_id: str
    session_id: str
    created_at: Timestamp


class Requeued(_View):
    requeued: int


class SandboxRecord(_View):
    id: int
    external_id: str
    title: str
    description: str
    contact_id: int
    status: str
    tags: list[str]
    medium: str | None
    created_at: Timestamp
    updated_at: Timestamp
    closed_at: Timestamp | None


class SandboxRecordListed(SandboxRecord):
    contact_name: str | None
    contact_phone: str | None
    contact_email: str | None


class SandboxNote(_View):
    id: int
    record_id: int
    body: str
    private: bool
    created_at: Timestamp


class SandboxRecordWithNotes(SandboxRecord):
    notes: list[SandboxNote]


class SandboxStatusView(_View):
    record_id: int
    status: str
    closed_at: Timestamp | None
