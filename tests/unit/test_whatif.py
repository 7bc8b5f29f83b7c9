"""The what-if replay: the consumer's own policy, moment by moment, over stored sessions."""

from __future__ import annotations

from dataclasses import fields

from hypothesis import given

from app.domain.events import SessionEvent
from app.domain.record_settings import RecordSettings
from app.domain.session import SessionState
from app.domain.whatif import (
    Outcome,
    RecordOwner,
    actual_outcome,
    historic_session,
    reason_group,
    replay,
    replay_verdict,
)
from tests.unit.helpers import call, chat, replay_steps, settings
from tests.unit.test_policy_properties import PROPERTY_SETTINGS, record_settings, sessions


def stored(events: list[SessionEvent], actual_settings: RecordSettings, action: str | None = "created"):
    """What the service stores for a session the consumer saw under `actual_settings`."""
    state, _ = replay_steps(events, actual_settings)
    message_times = [e.occurred_at for e in events if e.event_type == "message" and e.message.sender == "end_user"]
    actual = actual_outcome(state.record, action if state.record == "due" else None, state.record_reason,
                            state.last_wait_reason)
    return historic_session(state, message_times, actual)


def strictly_ordered_sessions():
    """In-order events, each strictly later than the one before (the replay takes moments that
    share an instant together)."""
    return sessions(min_gap_seconds=1).map(lambda drawn: drawn[2])


@PROPERTY_SETTINGS
@given(events=strictly_ordered_sessions(), seen_under=record_settings, proposed=record_settings)
def test_replay_reaches_what_the_consumer_would_have_decided(events, seen_under, proposed):
    """Whatever settings the session was first seen under, replaying it under `proposed` gives the
    decision, reason and moment the consumer gives when it meets the same events under `proposed`."""
    if not events:
        return
    session = stored(events, seen_under)
    state, steps = replay_steps(events, proposed)
    final = [d for step in steps for d in step.decisions if d.kind in ("record_due", "skipped")]
    got = replay_verdict(session, proposed)
    if final:
        assert (got.outcome, got.reason, got.at) == (
            final[0].kind, final[0].reason, final[0].at)
    else:
        assert got.outcome == "waiting"
        assert got.reason == state.last_wait_reason


def test_a_proposed_delay_until_connected_shows_which_calls_lose_their_record():
    answered = stored(call("queued assigned connected ended", session_id="c-ok"), settings())
    unanswered = stored(call("queued assigned ended", session_id="c-miss"), settings())
    report = replay([answered, unanswered], settings(delay_call_record_until_connected=True), settings())
    assert report.sessions == 2
    assert report.actual_totals["record"] == 2
    assert report.proposed_totals == {"record": 1, "attach": 0, "record_or_attach": 0, "skip": 1, "waiting": 0}
    assert report.changed == 1
    [change] = report.sample
    assert change.session_id == "c-miss"
    assert change.actual.kind == "record"
    assert change.proposed == Outcome("skip", "call ended without being connected to an agent "
                                              "(records are delayed until connected)")


def test_counts_are_split_by_reason_without_particulars():
    chats = [stored(chat(f"queued abandoned@{wait}", session_id=f"ch-{wait}"), settings()) for wait in (3, 4, 30)]
    report = replay(chats, settings(create_records_for_abandoned_chats="all"), settings())
    rows = {(r.kind, r.reason): (r.actual, r.proposed) for r in report.rows}
    assert rows == {
        ("record", "chat abandoned N s after queueing, a short abandon (short-abandon threshold N s); "
                   "records for abandoned chats: all, short ones included"): (0, 2),
        ("record", "chat abandoned N s after queueing, not a short abandon (short-abandon threshold N s); "
                   "records for abandoned chats: all, short ones included"): (0, 1),
        ("skip", "chat abandoned N s after queueing, a short abandon (short-abandon threshold N s); "
                 "records for abandoned chats are off"): (2, 0),
        ("skip", "chat abandoned N s after queueing, not a short abandon (short-abandon threshold N s); "
                 "records for abandoned chats are off"): (1, 0),
    }
    assert report.changed == 3


def test_appending_says_when_the_outcome_depends_on_the_crm_state_then():
    first = stored(call("queued@0 assigned@5", session_id="c-1", end_user_id="eu-1"), settings())
    second = stored(call("queued@100 assigned@105", session_id="c-2", end_user_id="eu-1"), settings())
    other = stored(call("queued@200 assigned@205", session_id="c-3", end_user_id="eu-2"), settings())
    report = replay([second, other, first], settings(append_to_open_record_in_leaf_queue=True), settings())
    # c-1 and c-3 have no earlier record: a new one, as happened; c-2 depends on whether c-1's record was open
    assert report.depends_on_crm == 1
    assert report.changed == 0
    [row] = [r for r in report.rows if r.kind == "record_or_attach"]
    assert "depending on whether the CRM had that record open" in row.reason
    # ...and an earlier record made before the window counts too
    before = replay([other], settings(append_to_open_record_in_leaf_queue=True), settings(),
                    owners_with_earlier_records=[RecordOwner("eu-2", other.queue_id)])
    assert before.depends_on_crm == 1


def test_unchanged_appending_rules_keep_what_the_crm_said_then():
    current = settings(append_to_open_record_in_leaf_queue=True)
    first = stored(call("queued@0 assigned@5", session_id="c-1"), current)
    second = stored(call("queued@100 assigned@105", session_id="c-2"), current, action="attached")
    report = replay([first, second], settings(append_to_open_record_in_leaf_queue=True, add_platform_tag=True),
                    current)
    assert report.depends_on_crm == 0 and report.changed == 0
    assert report.proposed_totals["attach"] == 1 and report.actual_totals["attach"] == 1


def test_reason_groups_drop_agents_and_numbers():
    assert reason_group("call assigned to agent Ana Souza") == "call assigned to an agent"
    assert reason_group("chat assigned to agent a-1 and the end user sent 1 message (records wait for 1)") == \
        "chat assigned to an agent and the end user sent N messages (records wait for N)"
    assert reason_group("chat ended with 1 end-user message, fewer than the 2 a record waits for") == \
        "chat ended with N end-user messages, fewer than the N a record waits for"


def test_undecided_sessions_are_waiting():
    session = stored(call("queued", session_id="c-q"), settings())
    report = replay([session], settings(), settings())
    assert report.actual_totals["waiting"] == report.proposed_totals["waiting"] == 1
    assert [r.reason for r in report.rows] == ["waiting for the call to be assigned to an agent"]


def test_a_session_state_satisfies_what_the_policy_reads():
    # the replay's snapshot and the consumer's state expose the same facts to policy.verdict
    from app.domain.whatif import SessionFacts
    assert set(SessionFacts._fields) - {"is_chat"} <= {f.name for f in fields(SessionState)}
