"""The what-if replay: what proposed settings would have done to sessions already seen.

Each stored session is replayed moment by moment, in the order its events occurred,
through the consumer's own policy (`policy.verdict`, the function `decide` asks): the
first moment at which the policy stops waiting is the session's outcome, as it would be
for the consumer. Which record a due session lands on can depend on the CRM's state at
that time (was the end user's earlier record still open?), which the service did not
keep; the replay says so instead of guessing.

Pure: no I/O, no clock. The service layer loads the history (app/service/whatif.py).
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Literal, NamedTuple

from app.domain.kinds import DecisionKind
from app.domain.policy import Verdict, VerdictOutcome, verdict_tuple
from app.domain.record_settings import RecordSettings
from app.domain.session import SessionState

# record: a new record; attach: attached to (or reopened and attached to) an existing one;
# record_or_attach: due, but which depends on the CRM's state then; skip; waiting: undecided yet.
OutcomeKind = Literal["record", "attach", "record_or_attach", "skip", "waiting"]
OUTCOME_KINDS: tuple[OutcomeKind, ...] = ("record", "attach", "record_or_attach", "skip", "waiting")
SAMPLE_SIZE = 20


class Outcome(NamedTuple):
    kind: OutcomeKind
    reason: str


@dataclass(frozen=True, slots=True)
class RecordOwner:
    """An end user in a leaf queue: who a record belongs to, for the appending rules."""

    end_user_id: str
    queue_id: str


class SessionFacts(NamedTuple):
    """A session as it stood at one moment: what `policy.verdict` reads (policy.PolicyFacts).
    A tuple: a history of 100,000 sessions holds about 450,000 of them."""

    is_chat: bool
    queued_at: datetime | None
    assigned_at: datetime | None
    connected_at: datetime | None
    abandoned_at: datetime | None
    ended_at: datetime | None
    agent_id: str | None
    agent_name: str | None
    end_user_messages: int
    header_at: datetime | None


@dataclass(slots=True)  # not frozen: a history of 100,000 is built at every full read; treat as read-only
class HistoricSession:
    """What the replay needs of one stored session, and what actually happened to it."""

    session_id: str
    medium: str
    end_user_id: str
    queue_id: str
    agent_id: str | None
    agent_name: str | None
    queued_at: datetime | None
    assigned_at: datetime | None
    connected_at: datetime | None
    abandoned_at: datetime | None
    ended_at: datetime | None
    # when the end user's messages occurred, oldest first (chats; empty for calls)
    end_user_message_times: tuple[datetime, ...]
    first_event_at: datetime
    actual: Outcome
    # The session as it stood after each instant at which one of its events occurred, oldest
    # first: worked out from the fields above when not given (see `steps`).
    steps: tuple[SessionFacts, ...] = ()

    def __post_init__(self) -> None:
        if not self.steps:
            self.steps = steps(self)


@dataclass(frozen=True, slots=True)
class CountRow:
    kind: OutcomeKind
    reason: str  # the reason with its particulars (names, numbers) taken out
    actual: int
    proposed: int


@dataclass(frozen=True, slots=True)
class ChangedSession:
    session_id: str
    first_event_at: datetime
    actual: Outcome
    proposed: Outcome


@dataclass(slots=True)
class WhatIfReport:
    sessions: int = 0
    actual_totals: dict[str, int] = field(default_factory=dict)
    proposed_totals: dict[str, int] = field(default_factory=dict)
    rows: list[CountRow] = field(default_factory=list)
    changed: int = 0
    depends_on_crm: int = 0
    sample: list[ChangedSession] = field(default_factory=list)


def steps(session: HistoricSession) -> tuple[SessionFacts, ...]:
    """The session as it stood after each instant at which one of its events occurred, oldest
    first (events sharing an instant taken together). They do not depend on the settings, so
    a history loaded once is replayed under any settings without working them out again."""
    is_chat, agent_id, agent_name = session.medium == "chat", session.agent_id, session.agent_name
    # Every event as (when, which): 0-4 the lifecycle moments, 5 an end-user message, 6 the first event.
    points = [(t, which) for which, t in enumerate((session.queued_at, session.assigned_at, session.connected_at,
                                                     session.abandoned_at, session.ended_at)) if t is not None]
    points += [(t, 5) for t in session.end_user_message_times]
    points.append((session.first_event_at, 6))
    points.sort()
    r: list[datetime | None] = [None, None, None, None, None]  # the moments reached so far
    result: list[SessionFacts] = []
    sent = 0
    at: datetime | None = points[0][0]
    for t, which in (*points, (None, 7)):  # 7: past the last instant
        if t != at:  # every event of the previous instant is in: the session as it stood then
            result.append(SessionFacts(is_chat, r[0], r[1], r[2], r[3], r[4], agent_id, agent_name, sent, at))
            at = t
        if which < 5:
            r[which] = t
        elif which == 5:
            sent += 1
    return tuple(result)


_NO_EVENTS: tuple[VerdictOutcome, str, datetime | None] = (DecisionKind.WAITING, "no events", None)
_WAITING = DecisionKind.WAITING


def replay_verdict(session: HistoricSession, settings: RecordSettings) -> Verdict:
    """The policy's verdict at the first moment it stops waiting, or its last wait: the
    session's steps put to the policy one after another, as the consumer asks after each event."""
    return Verdict(*_replay(session.steps, settings))


def _replay(session_steps: tuple[SessionFacts, ...], settings: RecordSettings,
            verdict=verdict_tuple) -> tuple[VerdictOutcome, str, datetime | None]:
    last = _NO_EVENTS
    for facts in session_steps:
        last = verdict(facts, settings)
        if last[0] != _WAITING:
            break
    return last


def _append_fields(settings: RecordSettings) -> tuple[bool, int | None]:
    return settings.append_to_open_record_in_leaf_queue, settings.append_to_closed_record_within_days


def _crm_dependent_reason(due_reason: str, settings: RecordSettings) -> str:
    window = settings.append_to_closed_record_within_days
    closed = f" or closed no more than {window} days before" if window is not None else ""
    return (
        f"{due_reason}; a new record or attached to the end user's earlier record in this leaf queue, "
        f"depending on whether the CRM had that record open{closed} at the time, which the replay cannot know"
    )


def propose(
    session: HistoricSession, proposed: RecordSettings, current: RecordSettings, earlier_record: bool
) -> Outcome:
    """What `proposed` would have done to `session`. `earlier_record`: the end user had a record
    in this leaf queue before it (made under the proposed settings or before the window)."""
    return Outcome(*_propose(session, proposed, earlier_record, _append_fields(proposed) == _append_fields(current)))


def _propose(session: HistoricSession, proposed: RecordSettings, earlier_record: bool,
             same_appending: bool) -> tuple[OutcomeKind, str]:
    outcome, reason, _ = _replay(session.steps, proposed)
    if outcome == DecisionKind.WAITING:
        return "waiting", reason
    if outcome == DecisionKind.SKIPPED:
        return "skip", reason
    if not earlier_record or not proposed.append_to_open_record_in_leaf_queue:
        return "record", reason
    if same_appending and session.actual.kind in ("record", "attach"):
        # The same appending rules met the same CRM state when it happened.
        return session.actual.kind, reason
    return "record_or_attach", _crm_dependent_reason(reason, proposed)


_AGENT = re.compile(r"assigned to agent (.+?)( and the end user sent|;|$)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SINGULAR_MESSAGE = re.compile(r"\b(N (?:end-user )?message)\b(?!s)")
_STATUS = re.compile(r"\(status [^)]*\)")


@lru_cache(maxsize=65536)
def reason_group(reason: str) -> str:
    """A reason without its particulars (agents, counts, seconds), so that reasons can be counted."""
    text = _AGENT.sub(r"assigned to an agent\2", reason)
    text = _STATUS.sub("", _NUMBER.sub("N", text))
    return _SINGULAR_MESSAGE.sub(r"\1s", text).replace("  ", " ")


def _by_reason_group(counts: Counter[tuple[OutcomeKind, str]]) -> Counter[tuple[OutcomeKind, str]]:
    grouped: Counter[tuple[OutcomeKind, str]] = Counter()
    for (kind, reason), count in counts.items():
        grouped[(kind, reason_group(reason))] += count
    return grouped


def _first_event_at(session: HistoricSession) -> datetime:
    return session.first_event_at


def _changed_at(change: tuple[HistoricSession, tuple[OutcomeKind, str]]) -> datetime:
    return change[0].first_event_at


def replay(
    history: Sequence[HistoricSession],
    proposed: RecordSettings,
    current: RecordSettings,
    owners_with_earlier_records: Iterable[RecordOwner] = (),
    sample_size: int = SAMPLE_SIZE,
) -> WhatIfReport:
    """Replay `history` (any order) under `proposed`; `current` is what is in force now.
    `owners_with_earlier_records`: who had a record made before the history starts."""
    # plain (end user, leaf queue) keys inside: one per session is built below, 100,000 turns
    owners = {(owner.end_user_id, owner.queue_id) for owner in owners_with_earlier_records}
    # keyed by (kind, reason): an Outcome and the plain tuple _propose returns are equal keys
    actual_counts: Counter[tuple[OutcomeKind, str]] = Counter()
    proposed_counts: Counter[tuple[OutcomeKind, str]] = Counter()
    report = WhatIfReport(sessions=len(history))
    changed: list[tuple[HistoricSession, tuple[OutcomeKind, str]]] = []
    same_appending = _append_fields(proposed) == _append_fields(current)
    made_records = ("record", "attach", "record_or_attach")
    propose_, add_owner, note_changed = _propose, owners.add, changed.append  # bound once: 100,000 turns
    for session in sorted(history, key=_first_event_at):
        owner = (session.end_user_id, session.queue_id)
        outcome = propose_(session, proposed, owner in owners, same_appending)
        kind = outcome[0]
        if kind in made_records:
            add_owner(owner)
        actual_counts[session.actual] += 1
        proposed_counts[outcome] += 1
        if kind == "record_or_attach":
            report.depends_on_crm += 1
        elif kind != session.actual.kind:
            note_changed((session, outcome))
    report.changed = len(changed)
    actual_groups, proposed_groups = _by_reason_group(actual_counts), _by_reason_group(proposed_counts)
    order = {kind: n for n, kind in enumerate(OUTCOME_KINDS)}
    keys = sorted(set(actual_groups) | set(proposed_groups), key=lambda k: (order[k[0]], k[1]))
    report.rows = [CountRow(k[0], k[1], actual_groups[k], proposed_groups[k]) for k in keys]
    for kind in OUTCOME_KINDS:
        report.actual_totals[kind] = sum(n for (k, _), n in actual_groups.items() if k == kind)
        report.proposed_totals[kind] = sum(n for (k, _), n in proposed_groups.items() if k == kind)
    # the most recent changed sessions (nlargest: as sorted(..., reverse=True)[:n], ties included)
    report.sample = [ChangedSession(session.session_id, session.first_event_at, session.actual, Outcome(*outcome))
                     for session, outcome in heapq.nlargest(sample_size, changed, key=_changed_at)]
    return report


def actual_outcome(record: str, record_action: str | None, reason: str | None, wait_reason: str | None) -> Outcome:
    """What happened to a stored session, from its row: progress and the record action taken."""
    if record == "skipped":
        return Outcome("skip", reason or "")
    if record == "due":
        return Outcome("attach" if record_action in ("attached", "reopened") else "record", reason or "")
    return Outcome("waiting", wait_reason or "not decided yet")


def historic_session(
    state: SessionState, end_user_message_times: Sequence[datetime], actual: Outcome
) -> HistoricSession:
    """A stored session's state, as the replay takes it."""
    return HistoricSession(
        session_id=state.session_id,
        medium=state.medium,
        end_user_id=state.end_user_id,
        queue_id=state.queue_id,
        agent_id=state.agent_id,
        agent_name=state.agent_name,
        queued_at=state.queued_at,
        assigned_at=state.assigned_at,
        connected_at=state.connected_at,
        abandoned_at=state.abandoned_at,
        ended_at=state.ended_at,
        end_user_message_times=tuple(sorted(end_user_message_times)),
        first_event_at=state.first_event_at or state.header_at,  # type: ignore[arg-type]
        actual=actual,
    )
