"""Use case: apply a batch of valid events (a poll's, of one or more partitions).

Dedup rows, the new session states, the decisions and the outbox rows all commit
together or not at all (one statement, or the locked way's one transaction), so a crash
anywhere before the commit replays the batch from Kafka, and a crash after it makes the
replay a no-op (every event id is known). The batch costs two statements whatever its
size, five round trips the locked way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import asyncpg

from app.adapters.db import batch_reads, batch_writes, sessions_repo
from app.adapters.db.decisions_repo import DecisionRow
from app.adapters.db.events_repo import ChatMessage
from app.adapters.db.outbox_repo import NewOutboxRow
from app.adapters.db.sessions_repo import VersionedStates
from app.adapters.db.settings_repo import SettingsInForce
from app.domain.events import SessionEvent
from app.domain.kinds import DecisionKind, OutboxKind, OutcomeEventType
from app.domain.outcome import OutcomeEvent
from app.domain.policy import decide
from app.domain.session import SessionState, apply_event
from app.service.saved_states import SavedStates


class EventNotApplicable(Exception):
    """The session state machine or the policy raised on this event. They are pure, so
    the event's data is the cause: it is dead-lettered, never retried in place."""

    def __init__(self, event_id: str, reason: str):
        super().__init__(reason)
        self.event_id = event_id
        self.reason = reason


@dataclass(slots=True)
class BatchOutcome:
    applied: int = 0
    duplicates: int = 0
    # The unlocked write found an event seen before or a session saved meanwhile, and
    # the batch was applied again the locked way.
    locked_after_conflict: bool = False
    decisions: list[DecisionRow] = field(default_factory=list)
    outbox_rows: list[NewOutboxRow] = field(default_factory=list)
    # The states the batch saved, at their new versions, and the settings it folded with.
    saved: VersionedStates | None = None
    settings: SettingsInForce | None = None


def serial_key(crm: str, state: SessionState) -> str:
    """The unit of serialisation for record work: one CRM, one end user, one leaf queue."""
    return "\x1f".join((crm, state.end_user_id, state.queue_id))


def record_row(crm: str, state: SessionState, settings: SettingsInForce) -> NewOutboxRow:
    return NewOutboxRow(
        idempotency_key=f"record:{crm}:{state.session_id}",
        kind=OutboxKind.RECORD,
        session_id=state.session_id,
        serial_key=serial_key(crm, state),
        # The settings in force when the record became due decide its title, tags and target;
        # versions are never changed once saved, so the number is enough (None: the defaults),
        # and the digest lets a worker that has seen the version skip reading it.
        payload={"crm": crm, "settings_version": settings.version, "settings_digest": settings.digest},
    )


def ended_note_row(crm: str, state: SessionState) -> NewOutboxRow:
    return NewOutboxRow(
        idempotency_key=f"ended_note:{crm}:{state.session_id}",
        kind=OutboxKind.ENDED_NOTE,
        session_id=state.session_id,
        serial_key=serial_key(crm, state),
        payload={"crm": crm},
    )


def skipped_row(crm: str, state: SessionState, reason: str) -> NewOutboxRow:
    event = OutcomeEvent(OutcomeEventType.RECORD_SKIPPED, state.session_id, crm, None, None, reason,
                         state.record_decided_at)
    return NewOutboxRow(
        idempotency_key=f"skipped:{crm}:{state.session_id}",
        kind=OutboxKind.PUBLISH,
        session_id=state.session_id,
        serial_key=None,
        payload=event.payload(),
    )


def _first_sightings(events: Sequence[SessionEvent], new_ids: set[str]) -> list[SessionEvent]:
    """The events whose ids are new, each id once (a second copy in the batch is dropped)."""
    fresh: list[SessionEvent] = []
    for event in events:
        if event.event_id in new_ids:
            new_ids.discard(event.event_id)
            fresh.append(event)
    return fresh


async def apply_batch(
    pg: asyncpg.Connection,
    events: Sequence[SessionEvent],
    crm: str,
    trace_for: Callable[[str], str | None] | None = None,
    wake_token: str = "",
    saved: SavedStates | None = None,
) -> BatchOutcome:
    """Outside a transaction, the usual way: one read and one checked write, each
    committing alone (two round trips); with `saved`, the consumer's memory of what it
    saved, the write alone when every session of the batch is remembered or begun by it.
    When the write finds an event applied before (a replay), a session saved since the
    read (another consumer, in a rebalance) or other settings in force than remembered,
    it wrote nothing, and the batch is applied the locked way in a transaction of its
    own. Inside the caller's transaction, the locked way at once.

    `trace_for(event_id)`, when tracing is on, gives the trace context the outbox rows
    an event makes carry to the CRM call; `wake_token` is the workers' notification's
    payload (OutboxWorker.direct_wake_token)."""
    if not events:
        return BatchOutcome()
    if pg.is_in_transaction():
        if saved is not None:  # the caller commits, or not: nothing of it may be remembered
            saved.forget(e.session.id for e in events)
        return await _apply_locked(pg, events, crm, trace_for, wake_token)
    snapshot = saved.snapshot_for(events) if saved is not None else None
    # Folded from memory: the write checks the settings are still the ones remembered.
    check = batch_writes.SettingsCheck(snapshot.settings.version) if snapshot is not None else None
    if snapshot is None:
        snapshot = await batch_reads.read_batch(pg, events)
    # Each id once; the write fails if one was applied before (a replay: the locked way).
    fresh = _first_sightings(events, {e.event_id for e in events})
    try:
        outcome = await _fold_and_write(pg, events, fresh, snapshot.settings, snapshot.states, crm, trace_for,
                                        wake_token, new_events=fresh, folded_with=check)
    except (batch_writes.BatchConflict, EventNotApplicable):
        if saved is not None:
            saved.forget(e.session.id for e in events)
        # An event the fold refused may be a replay, folded here into a state that holds
        # it already: the locked way skips the duplicates first, and refuses it only if new.
        async with pg.transaction():
            outcome = await _apply_locked(pg, events, crm, trace_for, wake_token)
        outcome.locked_after_conflict = True
    if saved is not None and outcome.saved is not None and outcome.settings is not None:
        saved.remember(outcome.saved, outcome.settings)  # committed: the statement's, or the transaction's
    return outcome


async def _apply_locked(
    pg: asyncpg.Connection, events: Sequence[SessionEvent], crm: str,
    trace_for: Callable[[str], str | None] | None, wake_token: str,
) -> BatchOutcome:
    """In the caller's transaction: the dedup rows inserted first (a copy another
    consumer is applying waits for it), then the sessions locked and read."""
    start = await batch_reads.start_batch(pg, events)
    fresh = _first_sightings(events, start.new_event_ids)
    if not fresh:
        return BatchOutcome(applied=0, duplicates=len(events))
    states = await sessions_repo.load_states_for_update(pg, (e.session.id for e in fresh))
    return await _fold_and_write(pg, events, fresh, start.settings, states, crm, trace_for, wake_token,
                                 new_events=())


async def _fold_and_write(
    pg: asyncpg.Connection, events: Sequence[SessionEvent], fresh: list[SessionEvent], in_force: SettingsInForce,
    read: VersionedStates, crm: str, trace_for: Callable[[str], str | None] | None, wake_token: str, *,
    new_events: Sequence[SessionEvent], folded_with: batch_writes.SettingsCheck | None = None,
) -> BatchOutcome:
    """Apply the fresh events to the states read, and write it all in one statement
    (with `new_events`' dedup rows; checking the settings version when `folded_with`)."""
    outcome = BatchOutcome(applied=len(fresh), duplicates=len(events) - len(fresh))
    if not fresh:
        return outcome
    version, settings = in_force.version, in_force.settings
    states = dict(read.states)
    touched: dict[str, SessionState] = {}
    messages: list[ChatMessage] = []
    for event in fresh:
        session_id = event.session.id
        try:
            state = apply_event(states.get(session_id), event)
            policy = decide(state, settings)
            state = policy.state
        except Exception as exc:  # pure code, no I/O: only this event's data can cause it
            raise EventNotApplicable(event.event_id, f"{type(exc).__name__}: {exc}") from exc
        states[session_id] = touched[session_id] = state
        if event.event_type == "message" and event.message is not None:
            messages.append(
                ChatMessage(session_id, event.event_id, event.occurred_at, event.message.sender, event.message.text)
            )
        rows: list[NewOutboxRow] = []
        for decision in policy.decisions:
            outcome.decisions.append(
                DecisionRow(session_id, decision.kind, decision.reason, decision.at, version)
            )
            if decision.kind == DecisionKind.RECORD_DUE:
                rows.append(record_row(crm, state, in_force))
            elif decision.kind == DecisionKind.SKIPPED:
                rows.append(skipped_row(crm, state, decision.reason))
            elif decision.kind == DecisionKind.ENDED_NOTE_DUE:
                rows.append(ended_note_row(crm, state))
        if rows and trace_for is not None:
            traceparent = trace_for(event.event_id)
            rows = [replace(row, trace_context=traceparent) for row in rows]
        outcome.outbox_rows.extend(rows)

    await batch_writes.write_batch(pg, new_events, list(touched.values()), read, messages, outcome.decisions,
                                   outcome.outbox_rows, wake_token=wake_token, folded_with=folded_with)
    outcome.saved = VersionedStates(touched, {session_id: read.version_of(session_id) + 1 for session_id in touched})
    outcome.settings = in_force
    return outcome
