"""The record-creation policy, as pure functions.

Two questions, asked at two places:

* `decide` (asked by the consumer after each event): is a record due for this
  session now, should it be skipped for good, or do we wait? It needs only the
  session's own state and the settings in force.
* `choose_target` (asked by the outbox worker, which may do I/O): given the
  newest record this service made for the same end user in the same leaf queue,
  and what the CRM says about it, do we create, attach, or reopen and attach?
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, NamedTuple, Protocol

from app.domain.kinds import DecisionKind
from app.domain.record_settings import RecordSettings
from app.domain.session import SessionState, evolve

# A verdict is the decision it leads to: a record is due, the session is skipped, or it waits.
VerdictOutcome = Literal[DecisionKind.RECORD_DUE, DecisionKind.SKIPPED, DecisionKind.WAITING]
DUE: Final = DecisionKind.RECORD_DUE
SKIP: Final = DecisionKind.SKIPPED
WAIT: Final = DecisionKind.WAITING


class PolicyFacts(Protocol):
    """What the record-due policy reads of a session: a SessionState has all of it, and so
    does the what-if replay's snapshot of a session as it stood at an earlier moment."""

    # Read-only properties: a frozen SessionState provides them as well as a mutable snapshot.
    @property
    def is_chat(self) -> bool: ...
    @property
    def queued_at(self) -> datetime | None: ...
    @property
    def assigned_at(self) -> datetime | None: ...
    @property
    def connected_at(self) -> datetime | None: ...
    @property
    def abandoned_at(self) -> datetime | None: ...
    @property
    def ended_at(self) -> datetime | None: ...
    @property
    def agent_id(self) -> str | None: ...
    @property
    def agent_name(self) -> str | None: ...
    @property
    def end_user_messages(self) -> int: ...
    @property
    def header_at(self) -> datetime | None: ...


class Verdict(NamedTuple):  # a tuple: the what-if replay asks for a few hundred thousand at a time
    outcome: VerdictOutcome
    reason: str
    at: datetime | None


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    reason: str
    at: datetime | None  # the occurred_at of the event that led to it


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _call_verdict(state: PolicyFacts, settings: RecordSettings) -> tuple[VerdictOutcome, str, datetime | None]:
    delayed = settings.delay_call_record_until_connected
    trigger_at = state.connected_at if delayed else (state.assigned_at or state.connected_at)
    abandoned_at = state.abandoned_at
    # when the call was abandoned before it was connected; None when it was not
    abandoned_unconnected = (
        abandoned_at
        if abandoned_at is not None and (state.connected_at is None or abandoned_at < state.connected_at)
        else None
    )
    if trigger_at is not None and not (abandoned_unconnected is not None and abandoned_unconnected < trigger_at):
        if delayed:
            return DUE, "call connected to an agent (records are delayed until connected)", trigger_at
        agent = f" {state.agent_name or state.agent_id}" if (state.agent_name or state.agent_id) else ""
        return DUE, f"call assigned to agent{agent}", trigger_at
    if abandoned_unconnected is not None:
        if settings.create_records_for_abandoned_calls:
            return (
                DUE,
                "call abandoned before it was connected; records for abandoned calls are on",
                state.abandoned_at,
            )
        if delayed:
            return (
                SKIP,
                "call abandoned before it was connected; records for abandoned calls are off "
                "and records are delayed until connected, so only connected calls get one",
                state.abandoned_at,
            )
        return SKIP, "call abandoned before it was assigned; records for abandoned calls are off", state.abandoned_at
    if state.ended_at is not None:
        needed = "connected" if delayed else "assigned"
        note = " (records are delayed until connected)" if delayed else ""
        return SKIP, f"call ended without being {needed} to an agent{note}", state.ended_at
    if delayed:
        return WAIT, "waiting for the call to be connected (records are delayed until connected)", None
    return WAIT, "waiting for the call to be assigned to an agent", None


def _abandoned_chat_verdict(
    state: PolicyFacts, settings: RecordSettings
) -> tuple[VerdictOutcome, str, datetime | None]:
    assert state.abandoned_at is not None, "asked only once the chat was abandoned (see _chat_verdict)"
    mode = settings.create_records_for_abandoned_chats
    threshold = settings.chat_short_abandon_seconds
    if state.queued_at is not None:
        waited = (state.abandoned_at - state.queued_at).total_seconds()
        short = waited <= threshold
        how = (
            f"chat abandoned {_seconds(waited)} after queueing, "
            f"{'a short abandon' if short else 'not a short abandon'} (short-abandon threshold {_seconds(threshold)})"
        )
    else:
        how = "chat abandoned (its queued event was not seen, so its wait is unknown)"
    sent = state.end_user_messages
    if mode == "off":
        return SKIP, f"{how}; records for abandoned chats are off", state.abandoned_at
    if mode == "all":
        return DUE, f"{how}; records for abandoned chats: all, short ones included", state.abandoned_at
    minimum = settings.abandoned_chat_min_messages
    if sent >= minimum:
        return (
            DUE,
            f"{how}; the end user sent {_plural(sent, 'message')}, at least the {minimum} required for abandoned chats",
            state.abandoned_at,
        )
    return (
        SKIP,
        f"{how}; the end user sent {_plural(sent, 'message')}, fewer than the {minimum} required for abandoned chats",
        state.abandoned_at,
    )


def _chat_verdict(state: PolicyFacts, settings: RecordSettings) -> tuple[VerdictOutcome, str, datetime | None]:
    required = settings.delay_chat_record_until_consumer_messages or 0
    assigned_at = state.assigned_at or state.connected_at
    sent = state.end_user_messages
    if assigned_at is not None and sent >= required:
        agent = state.agent_name or state.agent_id
        reason = f"chat assigned to agent {agent}" if agent else "chat assigned to an agent"
        if required:
            reason += f" and the end user sent {_plural(sent, 'message')} (records wait for {required})"
        return DUE, reason, state.header_at
    if state.abandoned_at is not None:
        return _abandoned_chat_verdict(state, settings)
    if state.ended_at is not None:
        if assigned_at is None:
            return SKIP, "chat ended without being assigned to an agent", state.ended_at
        return (
            SKIP,
            f"chat ended with {_plural(sent, 'end-user message')}, fewer than the {required} a record waits for",
            state.ended_at,
        )
    if assigned_at is None:
        return WAIT, "waiting for the chat to be assigned to an agent", None
    return WAIT, f"waiting for the end user's messages: {sent} of {required} sent", None


def verdict_tuple(facts: PolicyFacts, settings: RecordSettings) -> tuple[VerdictOutcome, str, datetime | None]:
    """Is a record due for a session in this state (RECORD_DUE), should it be skipped (SKIPPED),
    or do we wait (WAITING)? With the reason and the moment. `decide` asks this after every event."""
    return (_chat_verdict if facts.is_chat else _call_verdict)(facts, settings)


def verdict(facts: PolicyFacts, settings: RecordSettings) -> Verdict:
    return Verdict(*verdict_tuple(facts, settings))


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    """What `decide` hands the consumer: the session's new state and what was newly decided
    (most events decide nothing: an empty tuple)."""

    state: SessionState
    decisions: tuple[Decision, ...]


# The slots' own setters (as app.domain.session does for SessionState): `decide` runs once
# per event on the consumer's hot path, and a frozen __init__ (object.__setattr__ per field)
# would make it slower than the positional tuple PolicyOutcome replaced.
_NEW = object.__new__


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    setter: Callable[[Any, Any], None] = getattr(cls, name).__set__
    return setter


_SET_STATE = _slot_setter(PolicyOutcome, "state")
_SET_DECISIONS = _slot_setter(PolicyOutcome, "decisions")
_SET_KIND = _slot_setter(Decision, "kind")
_SET_REASON = _slot_setter(Decision, "reason")
_SET_AT = _slot_setter(Decision, "at")
_NOTHING_DECIDED: tuple[Decision, ...] = ()


def _decision(kind: DecisionKind, reason: str, at: datetime | None) -> Decision:
    """Decision(kind, reason, at) without the frozen __init__."""
    decision = _NEW(Decision)
    _SET_KIND(decision, kind)
    _SET_REASON(decision, reason)
    _SET_AT(decision, at)
    return decision


def decide(state: SessionState, settings: RecordSettings) -> PolicyOutcome:
    """Call after every event applied; returns the new state and what was newly decided."""
    decisions = _NOTHING_DECIDED
    if state.record == "pending":
        # verdict_tuple's dispatch, inlined: one call less per event
        outcome, reason, at = (_chat_verdict if state.medium == "chat" else _call_verdict)(state, settings)
        if outcome == DUE:
            state = evolve(state, record="due", record_reason=reason, record_decided_at=at, last_wait_reason=None)
            decisions = (_decision(outcome, reason, at),)
        elif outcome == SKIP:
            state = evolve(state, record="skipped", record_reason=reason, record_decided_at=at, last_wait_reason=None)
            decisions = (_decision(outcome, reason, at),)
        elif reason != state.last_wait_reason:
            state = evolve(state, last_wait_reason=reason)
            decisions = (_decision(outcome, reason, state.header_at),)
    if state.record == "due" and state.ended_at is not None and not state.ended_note_due:
        state = evolve(state, ended_note_due=True)
        decisions = (
            *decisions,
            _decision(DecisionKind.ENDED_NOTE_DUE, "session ended: add the summary note to its record", state.ended_at),
        )
    result = _NEW(PolicyOutcome)  # PolicyOutcome(state, decisions), without the frozen __init__
    _SET_STATE(result, state)
    _SET_DECISIONS(result, decisions)
    return result


# --- which record: asked by the worker, with the CRM's answer in hand ----------------------------

TargetAction = Literal["create", "attach", "reopen"]


@dataclass(frozen=True, slots=True)
class ExistingRecord:
    """The newest record this service made for the end user in the leaf queue, as the CRM sees it now."""

    record_id: str
    status: str
    is_closed: bool
    closed_at: datetime | None
    can_reopen: bool  # False for a status the CRM never reopens (a Zendesk ticket in `closed`)
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    action: TargetAction
    reason: str
    record: ExistingRecord | None = None


def closed_days_before(closed_at: datetime, session_at: datetime | None, now: datetime) -> float:
    """How many days before the session the record was closed.

    Measured to the moment the session's record became due (its event's `occurred_at`),
    so a backlog worked off hours later decides as it would have on time: an end user
    who called back two days after the close is within a three-day window whenever the
    call is processed. A record closed after that moment (events replayed or long
    delayed) is measured to `now`, the CRM's present, instead."""
    reference = session_at if session_at is not None and session_at >= closed_at else now
    return (reference - closed_at).total_seconds() / 86400


def choose_target(
    existing: ExistingRecord | None, settings: RecordSettings, now: datetime, session_at: datetime | None = None
) -> Target:
    if not settings.append_to_open_record_in_leaf_queue:
        return Target("create", "appending to open records is off")
    if existing is None:
        return Target("create", "no earlier record of this end user in this leaf queue")
    ref = f"record {existing.record_id} (status {existing.status})"
    if not existing.is_closed:
        return Target("attach", f"{ref} of this end user in this leaf queue is still open", existing)
    window = settings.append_to_closed_record_within_days
    if window is None:
        return Target("create", f"{ref} is closed and reopening closed records is off")
    if existing.closed_at is None:
        return Target("create", f"{ref} is closed and the CRM gives no closing time")
    age_days = closed_days_before(existing.closed_at, session_at, now)
    closed_when = f"was closed {age_days:.1f} days before this session"
    if age_days > window:
        return Target("create", f"{ref} {closed_when}, more than the {window} allowed")
    if not existing.can_reopen:
        return Target("create", f"{ref} {closed_when} but the CRM cannot reopen it")
    return Target("reopen", f"{ref} {closed_when}, within {window}: reopened", existing)
