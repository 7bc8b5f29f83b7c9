"""The consumer's memory of what it saved: what it answers for a batch, and its bounds."""

from __future__ import annotations

from app.adapters.db.sessions_repo import VersionedStates
from app.adapters.db.settings_repo import in_force_of
from app.domain.session import SessionState, apply_event
from app.service.saved_states import SavedStates
from tests.factories import call_events, to_event

DEFAULTS = in_force_of(None, None)


def _states(session_id: str, upto: int) -> SessionState:
    state = None
    for document in call_events(session_id, end_user_id=f"eu-{session_id}")[:upto]:
        state = apply_event(state, to_event(document))
    assert state is not None
    return state


def _remembered(saved: SavedStates, *states: SessionState, version: int = 1) -> None:
    saved.remember(VersionedStates({s.session_id: s for s in states}, {s.session_id: version for s in states}),
                   DEFAULTS)


def test_nothing_is_answered_before_the_settings_are_known():
    saved = SavedStates()
    assert saved.snapshot_for([to_event(call_events("c1")[0])]) is None


def test_a_remembered_session_comes_with_its_version_and_a_begun_one_as_new():
    saved = SavedStates()
    _remembered(saved, _states("c1", 2), version=7)
    assigned_c1 = to_event(call_events("c1")[2])
    queued_c2 = to_event(call_events("c2")[0])
    snapshot = saved.snapshot_for([assigned_c1, queued_c2])
    assert snapshot is not None
    assert snapshot.settings == DEFAULTS
    assert snapshot.states.states == {"c1": _states("c1", 2)}
    assert (snapshot.states.version_of("c1"), snapshot.states.version_of("c2")) == (7, 0)


def test_a_session_neither_remembered_nor_begun_by_the_batch_must_be_read():
    saved = SavedStates()
    _remembered(saved, _states("c1", 2))
    connected_c2 = to_event(call_events("c2")[2])
    queued_c2 = to_event(call_events("c2")[0])
    assert saved.snapshot_for([to_event(call_events("c1")[2]), connected_c2]) is None
    # A session's first event in the batch decides: out of order, `queued` second is read too.
    assert saved.snapshot_for([connected_c2, queued_c2]) is None


def test_ended_sessions_are_dropped_and_the_least_recently_used_beyond_the_capacity():
    saved = SavedStates(capacity=2)
    _remembered(saved, _states("a", 2), _states("b", 2))
    assert saved.snapshot_for([to_event(call_events("a")[2])]) is not None  # a is used: b is the oldest now
    _remembered(saved, _states("c", 2))
    assert len(saved) == 2
    assert saved.snapshot_for([to_event(call_events("b")[2])]) is None
    assert saved.snapshot_for([to_event(call_events("a")[2]), to_event(call_events("c")[2])]) is not None
    _remembered(saved, _states("a", 4))  # ended
    assert len(saved) == 1
    assert saved.snapshot_for([to_event(call_events("a")[3])]) is None


def test_forgetting_drops_the_sessions_and_the_settings():
    saved = SavedStates()
    _remembered(saved, _states("a", 2), _states("b", 2))
    saved.forget(["a"])
    assert saved.settings is None and len(saved) == 1
    assert saved.snapshot_for([to_event(call_events("b")[2])]) is None  # no settings: read
