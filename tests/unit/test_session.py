"""apply_event: the pure state machine folding a session's events into its state."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta, timezone

import orjson
import pytest

from app.domain.session import SessionState, apply_event
from tests.factories import BASE_TIME, at, event_doc, header, to_event
from tests.unit.helpers import call, chat


def fold(events, state=None):
    for event in events:
        state = apply_event(state, event)
    return state


def test_the_first_event_starts_the_state_from_its_header():
    [queued] = call("queued", session_id="call-3", queue_id="q-9", queue_path=["A", "B"], language="en-US",
                    phone_number="+15550001", end_user_id="eu-5", end_user_email="m@example.com")
    state = apply_event(None, queued)
    assert (state.session_id, state.medium, state.session_type) == ("call-3", "call", "voice_inbound_ivr")
    assert (state.queue_id, state.queue_path, state.language, state.phone_number) == (
        "q-9",
        ("A", "B"),
        "en-US",
        "+15550001",
    )
    assert (state.end_user_id, state.end_user_name, state.end_user_phone, state.end_user_email) == (
        "eu-5", "Maria Souza", "+5511987654321", "m@example.com")
    assert state.started_at == BASE_TIME
    assert state.queued_at == state.first_event_at == state.header_at == at(0)
    assert state.events_applied == 1
    assert (state.record, state.record_reason, state.ended_note_due) == ("pending", None, False)


def test_each_lifecycle_event_sets_its_moment():
    events = call("queued@0 assigned@20 connected@26 abandoned@30 ended@300")
    state = fold(events)
    assert (state.queued_at, state.assigned_at, state.connected_at, state.abandoned_at, state.ended_at) == (
        at(0), at(20), at(26), at(30), at(300))
    assert state.events_applied == 5


def test_moments_keep_their_earliest_occurrence_in_any_order():
    events = call("queued@0 assigned@20 connected@26 assigned@40 ended@300")  # re-assigned at 40
    expected = fold(events)
    assert expected.assigned_at == at(20)
    for order in itertools.permutations(events):
        state = fold(order)
        assert (state.queued_at, state.assigned_at, state.connected_at, state.ended_at, state.first_event_at) == (
            expected.queued_at, expected.assigned_at, expected.connected_at, expected.ended_at, expected.first_event_at)


def test_the_newest_events_header_wins_and_an_older_one_arriving_late_does_not():
    old = to_event(event_doc(header("call-1", language="pt-BR", queue_path=["Old"]), "queued", 0))
    new = to_event(event_doc(header("call-1", language="en-US", queue_path=["New"]), "assigned", 20))
    for order in ([old, new], [new, old]):
        state = fold(order)
        assert (state.language, state.queue_path, state.header_at) == ("en-US", ("New",), at(20))


def test_a_newer_header_without_started_at_keeps_the_one_already_known():
    first = to_event(event_doc(header("call-1"), "queued", 0))
    later = to_event(event_doc(header("call-1", started_at=None), "assigned", 20))
    assert fold([first, later]).started_at == BASE_TIME


def test_timestamp_is_started_at_else_the_earliest_event():
    no_start = header("call-1", started_at=None)
    state = fold([to_event(event_doc(no_start, "assigned", 20)), to_event(event_doc(no_start, "queued", 5))])
    assert state.started_at is None
    assert state.timestamp == at(5)
    assert fold(call("queued@5")).timestamp == BASE_TIME


def test_agent_comes_from_assigned_connected_and_ended():
    session = header("call-1")
    assigned = event_doc(session, "assigned", 20)
    assigned["agent"] = {"id": "ag-1", "name": None, "email": None}
    state = fold([to_event(event_doc(session, "queued", 0)), to_event(assigned)])
    assert (state.agent_id, state.agent_name) == ("ag-1", None)
    state = fold([to_event(event_doc(session, "connected", 26))], state)
    assert (state.agent_id, state.agent_name, state.agent_email) == ("ag-7", "Ana Lima", "ana@example.com")


def test_messages_are_counted_per_sender():
    state = fold(chat("queued eu eu ag va va va sys assigned eu"))
    assert (state.end_user_messages, state.agent_messages, state.virtual_agent_messages, state.system_messages) == (
        3,
        1,
        3,
        1,
    )


def test_applying_the_same_message_event_twice_counts_it_twice():
    """apply_event does not dedup by itself: the caller drops repeated event_ids (see replay)."""
    [message] = chat("eu")
    assert fold([message, message]).end_user_messages == 2


def test_ended_keeps_the_summary():
    state = fold(call("queued assigned ended"))
    assert (state.duration_seconds, state.disposition, state.recording_url) == (120, "resolved", "https://rec.example.com/1.mp3")


def test_apply_event_is_pure():
    events = call("queued assigned connected ended")
    before = fold(events[:2])
    snapshot = before.to_document()
    after_1 = apply_event(before, events[2])
    after_2 = apply_event(before, events[2])
    assert after_1 == after_2
    assert before.to_document() == snapshot  # the input state is untouched
    assert before.connected_at is None and after_1.connected_at == at(20)
    with pytest.raises(AttributeError):
        before.record = "due"  # type: ignore[misc]


def test_apply_event_leaves_the_policys_fields_alone():
    state = replace(
        fold(call("queued")), record="skipped", record_reason="why", ended_note_due=True, last_wait_reason="w"
    )
    after = fold(call("assigned ended"), state)
    assert (after.record, after.record_reason, after.ended_note_due, after.last_wait_reason) == (
        "skipped",
        "why",
        True,
        "w",
    )


def test_a_state_survives_its_json_document():
    state = fold(chat("queued eu assigned connected ag ended", queue_path=["Support", "Orders"]))
    document = orjson.loads(orjson.dumps(state.to_document()))
    assert document["queue_path"] == ["Support", "Orders"]
    assert document["queued_at"] == at(0).isoformat()
    restored = SessionState.from_document(document)
    assert restored == state


def test_from_document_ignores_fields_it_does_not_know():
    document = fold(call("queued")).to_document()
    document["a_field_from_a_newer_version"] = 1
    document["extra"] = {}  # stored by versions before the unused `extra` field was removed
    assert SessionState.from_document(document).session_id == "call-1"


def test_events_with_offsets_compare_as_instants():
    session = header("call-1")
    queued = event_doc(session, "queued", 0)
    assigned = event_doc(session, "assigned", 20)
    assigned["occurred_at"] = at(20).astimezone(timezone(timedelta(hours=-3))).isoformat()
    state = fold([to_event(assigned), to_event(queued)])
    assert state.first_event_at == at(0)
    assert state.assigned_at == at(20)
    assert state.header_at == at(20)


def test_evolve_is_dataclasses_replace_for_session_states():
    import dataclasses

    import pytest

    from app.domain.session import evolve
    from tests.factories import chat_events, to_event

    state = None
    for document in chat_events("chat-evolve", end_user_messages=3):
        state = apply_event(state, to_event(document))
    changes = {"record": "due", "record_reason": "why", "end_user_messages": 9, "queue_path": ("A", "B")}
    assert evolve(state, **changes) == dataclasses.replace(state, **changes)
    assert evolve(state) == state and evolve(state) is not state
    with pytest.raises(TypeError):
        evolve(state, no_such_field=1)


def test_the_stored_document_is_the_state_as_orjson_writes_a_dataclass():
    # The consumer stores orjson's own rendering of the dataclass (adapters/db/sessions_repo)
    # without building to_document(): the two must be the same document, byte for byte.
    states = [
        fold(chat("queued eu assigned connected ag ended", queue_path=["Support", "Orders"])),
        fold(call("queued assigned connected ended")),
        fold(call("queued")),
    ]
    offset = event_doc(header("call-9"), "queued", 0)
    offset["occurred_at"] = at(0).astimezone(timezone(timedelta(hours=-3))).isoformat()
    states.append(fold([to_event(offset)]))
    for state in states:
        assert orjson.dumps(state) == orjson.dumps(state.to_document())
        assert SessionState.from_document(orjson.loads(orjson.dumps(state))) == state


def test_a_document_without_a_required_field_is_refused():
    document = fold(call("queued")).to_document()
    del document["session_type"]
    with pytest.raises(TypeError, match="session_type"):
        SessionState.from_document(document)
