"""The chaos oracle finds each kind of failure it reports, and nothing when all is well."""

from __future__ import annotations

import orjson

from tests.factories import call_events, chat_events
from tools.chaos.oracle import Observed, SessionRecord, expected_outcome, judge
from tools.chaos.run import RECORD_SETTINGS
from tools.chaos.traffic import build_traffic


def _sessions():
    return {
        "call-1": call_events("call-1"),  # record due at assignment, note due at the end
        "chat-1": chat_events("chat-1", end_user_messages=1),  # ended below 2 messages: skipped
        "call-2": call_events("call-2")[:-1],  # still open: record due, no note yet
    }


def _healthy(sessions) -> Observed:
    records = {
        "call-1": [SessionRecord("r1", ("Session: call-1\n...", "Session call-1 ended.\nDuration: 2m"))],
        "call-2": [SessionRecord("r2", ())],
    }
    outputs = [
        {"event_type": "record.created", "session_id": "call-1", "record_id": "r1"},
        {"event_type": "record.updated", "session_id": "call-1", "record_id": "r1"},
        {"event_type": "record.skipped", "session_id": "chat-1", "record_id": None},
        {"event_type": "record.created", "session_id": "call-2", "record_id": "r2"},
    ]
    applied = {d["event_id"] for docs in sessions.values() for d in docs}
    return Observed(records, outputs, [(b"k", b"{broken")], applied)


def test_the_policy_decides_the_expectations():
    sessions = _sessions()
    assert expected_outcome(sessions["call-1"], RECORD_SETTINGS).record == "due"
    assert expected_outcome(sessions["call-1"], RECORD_SETTINGS).note_due
    assert expected_outcome(sessions["chat-1"], RECORD_SETTINGS).record == "skipped"
    assert not expected_outcome(sessions["call-2"], RECORD_SETTINGS).note_due


def test_a_healthy_outcome_has_zero_in_every_column():
    sessions = _sessions()
    report = judge(sessions, {(b"k", b"{broken")}, RECORD_SETTINGS, _healthy(sessions))
    assert report.passed, report.columns
    assert (report.due, report.skipped, report.notes_due) == (2, 1, 1)


def test_each_failure_is_counted_in_its_column():
    sessions = _sessions()
    observed = _healthy(sessions)
    observed.records["call-1"].append(SessionRecord("r3", ("Session call-1 ended.",)))  # second record, note
    del observed.records["call-2"]
    observed.records["chat-1"] = [SessionRecord("r4", ())]
    observed.outputs.append({"event_type": "record.created", "session_id": "call-1", "record_id": "r1"})
    valid_event = sessions["call-2"][0]
    observed.dead_letters.append((b"call-2", orjson.dumps(valid_event)))
    observed.applied_event_ids.discard(valid_event["event_id"])
    observed.applied_event_ids.discard(sessions["chat-1"][0]["event_id"])
    invalid = {(b"k", b"{broken"), (b"x", b"never dead-lettered")}
    report = judge(sessions, invalid, RECORD_SETTINGS, observed)
    assert report.columns["records made twice"] == 1
    assert report.columns["records missing"] == 1
    assert report.columns["records not due"] == 1
    assert report.columns["notes written twice"] == 1
    assert report.columns["duplicate output events"] == 1
    assert report.columns["valid events dead-lettered"] == 1
    assert report.columns["invalid events not dead-lettered"] == 1
    assert report.columns["valid events never applied"] == 1
    assert not report.passed


def test_a_missing_note_is_counted():
    sessions = _sessions()
    observed = _healthy(sessions)
    observed.records["call-1"] = [SessionRecord("r1", ("Session: call-1\n...",))]
    report = judge(sessions, {(b"k", b"{broken")}, RECORD_SETTINGS, observed)
    assert report.columns["notes missing"] == 1


def test_the_same_seed_gives_the_same_traffic():
    first, second = build_traffic(7, sessions=30, window=10), build_traffic(7, sessions=30, window=10)
    strip = lambda t: [(m.at, m.key, m.validity) for m in t.messages]  # noqa: E731
    assert strip(first) == strip(second)
    assert first.invalid and first.duplicates
    assert strip(first) != strip(build_traffic(8, sessions=30, window=10))
