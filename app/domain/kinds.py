"""The names the service gives its decisions, its outbox rows and their statuses, and the
outcome events it publishes: one place, so grep finds every use of each."""

from __future__ import annotations

from enum import StrEnum


class DecisionKind(StrEnum):
    """What a decision row says happened (the `decisions.kind` column)."""

    # Made by the consumer's policy after an event.
    RECORD_DUE = "record_due"
    SKIPPED = "skipped"
    WAITING = "waiting"
    ENDED_NOTE_DUE = "ended_note_due"
    # Made by the outbox worker after the CRM answered.
    RECORD_CREATED = "record_created"
    RECORD_ATTACHED = "record_attached"
    RECORD_REOPENED = "record_reopened"
    ENDED_NOTE_ADDED = "ended_note_added"
    RECORD_PARKED = "record_parked"
    ENDED_NOTE_PARKED = "ended_note_parked"
    PUBLISH_PARKED = "publish_parked"


class OutboxKind(StrEnum):
    """The work an outbox row stands for (the `outbox.kind` column)."""

    RECORD = "record"  # make (or attach the session to) the session's CRM record
    ENDED_NOTE = "ended_note"  # add the end-of-session summary note to that record
    PUBLISH = "publish"  # publish an outcome event


class OutboxStatus(StrEnum):
    """Where an outbox row is (the `outbox.status` column)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    PARKED = "parked"


class RecordAction(StrEnum):
    """What the worker did about a session's record."""

    CREATED = "created"
    ATTACHED = "attached"
    REOPENED = "reopened"


class OutcomeEventType(StrEnum):
    """The `event_type` of what is published to the output topic."""

    RECORD_CREATED = "record.created"
    RECORD_ATTACHED = "record.attached"
    RECORD_REOPENED = "record.reopened"
    RECORD_UPDATED = "record.updated"
    RECORD_SKIPPED = "record.skipped"


RECORD_DECISION: dict[RecordAction, DecisionKind] = {
    RecordAction.CREATED: DecisionKind.RECORD_CREATED,
    RecordAction.ATTACHED: DecisionKind.RECORD_ATTACHED,
    RecordAction.REOPENED: DecisionKind.RECORD_REOPENED,
}

RECORD_EVENT: dict[RecordAction, OutcomeEventType] = {
    RecordAction.CREATED: OutcomeEventType.RECORD_CREATED,
    RecordAction.ATTACHED: OutcomeEventType.RECORD_ATTACHED,
    RecordAction.REOPENED: OutcomeEventType.RECORD_REOPENED,
}

PARKED_DECISION: dict[OutboxKind, DecisionKind] = {
    OutboxKind.RECORD: DecisionKind.RECORD_PARKED,
    OutboxKind.ENDED_NOTE: DecisionKind.ENDED_NOTE_PARKED,
    OutboxKind.PUBLISH: DecisionKind.PUBLISH_PARKED,
}
