"""Record-creation policy for calls (contract section 2), one row per setting and interaction.

Every row replays an in-order call through apply_event + decide and says whether a record is
due (and at which event) or skipped for good, plus phrases an administrator reads in the reason.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from app.domain.kinds import DecisionKind
from app.domain.policy import Decision, PolicyOutcome, decide
from app.domain.session import apply_event
from tests.unit.helpers import call, final_kinds, of_kind, replay, replay_steps, settings, step_of

DELAY = {"delay_call_record_until_connected": True}
ABANDONED_ON = {"create_records_for_abandoned_calls": True}

# (id, settings, script, expected "record"/"skipped", event type it is decided at, reason phrases)
CALL_ROWS = [
    pytest.param(
        {},
        "queued assigned connected ended",
        "record",
        "assigned",
        ["call assigned to agent", "Ana Lima"],
        id="default: record due at assigned",
    ),
    pytest.param(
        {},
        "queued assigned ended",
        "record",
        "assigned",
        ["assigned"],
        id="default: assigned but never connected still gets its record",
    ),
    pytest.param(
        {},
        "queued ended",
        "skipped",
        "ended",
        ["ended without being assigned"],
        id="default: never assigned then ended -> skipped",
    ),
    pytest.param(
        DELAY,
        "queued assigned connected ended",
        "record",
        "connected",
        ["connected", "delayed until connected"],
        id="delay until connected: due at connected, not at assigned",
    ),
    pytest.param(
        DELAY,
        "queued assigned ended",
        "skipped",
        "ended",
        ["ended without being connected", "delayed until connected"],
        id="delay until connected: assigned, never connected, ended -> skipped",
    ),
    pytest.param(
        {},
        "queued abandoned",
        "skipped",
        "abandoned",
        ["abandoned", "records for abandoned calls are off"],
        id="abandoned calls off: abandoned in queue -> skipped",
    ),
    pytest.param(
        {},
        "queued abandoned ended",
        "skipped",
        "abandoned",
        ["abandoned", "records for abandoned calls are off"],
        id="abandoned calls off: abandoned then ended -> skipped once, at abandoned",
    ),
    pytest.param(
        {},
        "queued assigned abandoned ended",
        "record",
        "assigned",
        ["assigned"],
        id="abandoned calls off: record already made at assigned, the abandon changes nothing",
    ),
    pytest.param(
        ABANDONED_ON,
        "queued abandoned",
        "record",
        "abandoned",
        ["abandoned before it was connected", "records for abandoned calls are on"],
        id="abandoned calls on: due even though never assigned",
    ),
    pytest.param(
        ABANDONED_ON,
        "abandoned",
        "record",
        "abandoned",
        ["abandoned"],
        id="abandoned calls on: abandoned is the only event seen",
    ),
    pytest.param(
        ABANDONED_ON,
        "queued assigned abandoned",
        "record",
        "assigned",
        ["assigned"],
        id="abandoned calls on: assigned first -> the record made at assigned is the one",
    ),
    pytest.param(
        {**DELAY},
        "queued assigned abandoned",
        "skipped",
        "abandoned",
        ["abandoned before it was connected", "records for abandoned calls are off", "only connected calls"],
        id="delay on + abandoned off: assigned then abandoned -> skipped",
    ),
    pytest.param(
        {**DELAY},
        "queued abandoned",
        "skipped",
        "abandoned",
        ["records for abandoned calls are off", "only connected calls"],
        id="delay on + abandoned off: abandoned in queue -> skipped",
    ),
    pytest.param(
        {**DELAY},
        "queued assigned connected abandoned ended",
        "record",
        "connected",
        ["connected"],
        id="delay on + abandoned off: connected call keeps its record",
    ),
    pytest.param(
        {**DELAY, **ABANDONED_ON},
        "queued assigned abandoned",
        "record",
        "abandoned",
        ["abandoned", "records for abandoned calls are on"],
        id="delay on + abandoned on: assigned, abandoned before connect -> record at abandoned",
    ),
    pytest.param(
        {**DELAY, **ABANDONED_ON},
        "queued abandoned ended",
        "record",
        "abandoned",
        ["abandoned"],
        id="delay on + abandoned on: abandoned in queue -> record at abandoned",
    ),
    pytest.param(
        {**DELAY, **ABANDONED_ON},
        "queued assigned connected ended",
        "record",
        "connected",
        ["connected"],
        id="delay on + abandoned on: connected call -> record at connected",
    ),
]


@pytest.mark.parametrize(("overrides", "spec", "outcome", "decided_at", "phrases"), CALL_ROWS)
def test_call_policy_table(overrides, spec, outcome, decided_at, phrases):
    events = call(spec)
    state, steps = replay_steps(events, settings(**overrides))
    decisions = [d for s in steps for d in s.decisions]
    kind = "record_due" if outcome == "record" else "skipped"
    other = "skipped" if outcome == "record" else "record_due"

    assert len(of_kind(decisions, kind)) == 1
    assert of_kind(decisions, other) == []
    [index] = step_of(steps, kind)
    assert steps[index].event.event_type == decided_at
    decision = of_kind(decisions, kind)[0]
    assert decision.at == steps[index].event.occurred_at
    for phrase in phrases:
        assert phrase in decision.reason
    assert state.record == ("due" if outcome == "record" else "skipped")
    assert state.record_reason == decision.reason
    # The ended note follows a record only, and only once.
    ended = any(e.event_type == "ended" for e in events)
    assert len(of_kind(decisions, "ended_note_due")) == (1 if ended and outcome == "record" else 0)


@pytest.mark.parametrize(
    ("overrides", "spec", "phrase"),
    [
        pytest.param(
            {}, "queued", "waiting for the call to be assigned", id="default: queued -> waiting for assignment"
        ),
        pytest.param(
            DELAY,
            "queued assigned",
            "waiting for the call to be connected",
            id="delay: assigned -> waiting for connect",
        ),
    ],
)
def test_call_in_progress_waits(overrides, spec, phrase):
    state, decisions = replay(call(spec), settings(**overrides))
    assert final_kinds(decisions) == []
    assert state.record == "pending"
    assert phrase in decisions[-1].reason
    assert decisions[-1].kind == "waiting"


def test_default_abandon_after_assignment_adds_no_decision_at_all():
    """With a record made at assigned, a later abandon and end bring only the ended note."""
    state, steps = replay_steps(call("queued assigned abandoned ended"), settings())
    assert [d.kind for d in steps[2].decisions] == []  # abandoned
    assert [d.kind for d in steps[3].decisions] == ["ended_note_due"]
    assert state.record == "due"


def test_the_waiting_reason_is_reported_once_not_after_every_event():
    _, decisions = replay(call("queued assigned"), settings(**DELAY))
    # queued: waiting to be connected; assigned: still the same wait -> no second decision
    assert [d.kind for d in decisions] == ["waiting"]


def test_a_second_assignment_does_not_make_a_second_record():
    """A transfer re-assigns the call: the session still has one record."""
    state, decisions = replay(call("queued assigned connected assigned connected ended"), settings())
    assert len(of_kind(decisions, "record_due")) == 1
    assert len(of_kind(decisions, "ended_note_due")) == 1


def test_redelivered_events_change_nothing():
    events = call("queued assigned connected ended")
    once_state, once = replay(events, settings())
    twice_state, twice = replay(events + events[::-1] + events, settings())
    assert [(d.kind, d.reason, d.at) for d in twice] == [(d.kind, d.reason, d.at) for d in once]
    assert twice_state == once_state


def test_settings_saved_later_apply_to_the_next_decision():
    """Delay on: still waiting after assigned. The admin turns the delay off; the next event
    is decided with the new document."""
    events = call("queued assigned connected")
    state, _ = replay(events[:2], settings(**DELAY))
    assert state.record == "pending"

    state = apply_event(state, events[2])
    decided = decide(state, settings())
    state = decided.state
    assert [d.kind for d in decided.decisions] == ["record_due"]
    assert state.record == "due"


def test_outbound_call_connected_without_assigned_event_gets_a_record():
    """Default mode counts a connect as the agent having the call."""
    state, decisions = replay(call("connected ended", session_type="voice_outbound"), settings())
    assert final_kinds(decisions) == ["record_due", "ended_note_due"]


def test_decide_hands_over_a_frozen_policy_outcome_as_its_init_would_build_it():
    """decide builds PolicyOutcome and its Decisions through their slots (the hot path skips the
    frozen __init__): the values compare equal to __init__'s and stay frozen."""
    events = call("queued assigned connected ended")
    state, _ = replay(events[:3], settings())
    decided = decide(apply_event(state, events[3]), settings())
    [note] = decided.decisions
    expected_note = Decision(DecisionKind.ENDED_NOTE_DUE, note.reason, events[3].occurred_at)
    assert decided == PolicyOutcome(decided.state, (expected_note,))
    assert decided.state.ended_note_due and hash(note) == hash(expected_note)
    with pytest.raises(FrozenInstanceError):
        decided.state = state  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        note.reason = "changed"  # type: ignore[misc]
    assert decide(decided.state, settings()).decisions == ()
