"""Properties of the record policy over generated sessions and settings.

1. Any permutation and any re-delivery of a session's events (same event_id, again at any later
   position; dropped by event_id like the consumer does): at most one record_due, never both
   record_due and skipped, at most one ended_note_due and only after a record_due.
2. In-order delivery (with re-deliveries mixed in): the outcome, and the event it is decided at,
   are what a small oracle written from the contract's words predicts.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.domain.record_settings import RecordSettings
from app.domain.session_types import SESSION_TYPES
from tests.factories import event_doc, header, to_event
from tests.unit.helpers import of_kind, replay_steps

PROPERTY_SETTINGS = hsettings(
    max_examples=300,
    derandomize=True,  # the same examples on every run, so CI is stable
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SENDERS = ("end_user", "agent", "virtual_agent", "system")

record_settings = st.builds(
    RecordSettings,
    append_to_open_record_in_leaf_queue=st.booleans(),
    append_to_closed_record_within_days=st.none() | st.integers(0, 30),
    delay_call_record_until_connected=st.booleans(),
    delay_chat_record_until_consumer_messages=st.none() | st.integers(0, 4),
    create_records_for_abandoned_calls=st.booleans(),
    create_records_for_abandoned_chats=st.sampled_from(["off", "all", "min_messages"]),
    abandoned_chat_min_messages=st.integers(0, 4),
    chat_short_abandon_seconds=st.integers(0, 40),
    record_title_template=st.sampled_from(
        ["{CALL_TYPE} {CALL_ID}", "{MENU_PATH} {TIMESTAMP}", "{LANGUAGE}{PHONE_NUMBER}", "plain"]
    ),
    add_session_type_tags=st.booleans(),
    add_platform_tag=st.booleans(),
)


@dataclass(frozen=True)
class Step:
    kind: str  # an event type
    sender: str | None = None  # for message events


@st.composite
def call_scripts(draw) -> list[Step]:
    """A realistic call, in order: queued?, assigned?, connected? (after assigned), transfers,
    abandoned? (only before a connect), ended?"""
    steps = []
    if draw(st.booleans()):
        steps.append(Step("queued"))
    assigned = draw(st.booleans())
    connected = assigned and draw(st.booleans())
    if assigned:
        steps.append(Step("assigned"))
    if connected:
        steps.append(Step("connected"))
        for _ in range(draw(st.integers(0, 2))):  # transfers: re-assigned and re-connected
            steps += [Step("assigned"), Step("connected")]
    if not connected and draw(st.booleans()):
        steps.append(Step("abandoned"))
    if draw(st.booleans()):
        steps.append(Step("ended"))
    return steps


@st.composite
def chat_scripts(draw) -> list[Step]:
    """A realistic chat, in order: queued?, messages, assigned?, connected?, messages, then
    abandoned (only if never assigned) and/or ended, or still going."""
    steps = []
    if draw(st.booleans()):
        steps.append(Step("queued"))
    messages = st.lists(st.sampled_from(SENDERS), max_size=5)
    steps += [Step("message", s) for s in draw(messages)]
    assigned = draw(st.booleans())
    if assigned:
        steps.append(Step("assigned"))
        if draw(st.booleans()):
            steps.append(Step("connected"))
        steps += [Step("message", s) for s in draw(messages)]
    if not assigned and draw(st.booleans()):
        steps.append(Step("abandoned"))
    if draw(st.booleans()):
        steps.append(Step("ended"))
    return steps


@st.composite
def sessions(draw, min_gap_seconds: int = 0):
    """(medium, script, events): in-order events, each at least `min_gap_seconds` after the one
    before (the default 0 allows ties)."""
    medium = draw(st.sampled_from(["call", "chat"]))
    script = draw(call_scripts() if medium == "call" else chat_scripts())
    session_type = draw(st.sampled_from(sorted(c for c, t in SESSION_TYPES.items() if t.medium == medium)))
    session = header(f"{medium}-p", medium=medium, session_type=session_type)
    events, seconds = [], 0
    for n, step in enumerate(script):
        seconds += draw(st.integers(min_gap_seconds, 30))
        doc = event_doc(session, step.kind, seconds, event_id=f"{medium}-p-{n}", sender=step.sender or "end_user")
        events.append(to_event(doc))
    return medium, script, events


def with_redeliveries(data, events):
    """Copies of some events (same event_id) re-inserted at any position after the original."""
    sequence = list(events)
    if not sequence:
        return sequence
    for _ in range(data.draw(st.integers(0, 4), label="redeliveries")):
        source = data.draw(st.integers(0, len(sequence) - 1), label="which")
        position = data.draw(st.integers(source + 1, len(sequence)), label="where")
        sequence.insert(position, sequence[source])
    return sequence


# --- the oracle: contract section 2, in plain code ---------------------------------------------------


def oracle(medium: str, script: list[Step], s: RecordSettings) -> tuple[str, int | None]:
    """("record" | "no record" | "undecided", index of the deciding event) for in-order delivery."""
    if medium == "call":
        for i, step in enumerate(script):
            # Default: the record is made at `assigned`; delayed: at `connected` instead.
            if step.kind == "assigned" and not s.delay_call_record_until_connected:
                return "record", i
            if step.kind == "connected":
                return "record", i
            # Reaching an abandon without a record: the call was abandoned before it was connected.
            if step.kind == "abandoned":
                return ("record" if s.create_records_for_abandoned_calls else "no record"), i
            if step.kind == "ended":
                return "no record", i
        return "undecided", None

    wanted = s.delay_chat_record_until_consumer_messages or 0
    assigned, sent = False, 0
    for i, step in enumerate(script):
        if step.kind == "message" and step.sender == "end_user":
            sent += 1  # only the end user's messages count, before assignment too
        if step.kind in ("assigned", "connected"):
            assigned = True
        if assigned and sent >= wanted:  # whichever comes last
            return "record", i
        if step.kind == "abandoned":
            mode = s.create_records_for_abandoned_chats
            if mode == "all":
                return "record", i
            if mode == "min_messages" and sent >= s.abandoned_chat_min_messages:
                return "record", i
            return "no record", i
        if step.kind == "ended":
            return "no record", i  # ended below N (or never assigned)
    return "undecided", None


# --- properties -------------------------------------------------------------------------------------


def check_invariants(steps):
    decisions = [d for step in steps for d in step.decisions]
    records, skips, notes = (of_kind(decisions, k) for k in ("record_due", "skipped", "ended_note_due"))
    assert len(records) <= 1
    assert len(skips) <= 1
    assert not (records and skips)
    assert len(notes) <= 1
    if notes:
        assert records
        assert decisions.index(records[0]) < decisions.index(notes[0])
    assert all(d.reason for d in decisions)
    assert all(step.decisions == () for step in steps if step.duplicate)


@PROPERTY_SETTINGS
@given(session=sessions(), s=record_settings, data=st.data())
def test_any_order_and_any_redelivery_gives_at_most_one_record(session, s, data):
    _, _, events = session
    shuffled = data.draw(st.permutations(events), label="order")
    delivered = with_redeliveries(data, shuffled)
    state, steps = replay_steps(delivered, s)
    check_invariants(steps)
    if state is not None:
        # The fold is order-independent: the same moments and counts as in-order delivery.
        in_order, _ = replay_steps(events, s)
        for name in ("queued_at", "assigned_at", "connected_at", "abandoned_at", "ended_at", "first_event_at",
                     "end_user_messages", "agent_messages", "virtual_agent_messages", "system_messages",
                     "events_applied", "header_at"):
            assert getattr(state, name) == getattr(in_order, name), name


@PROPERTY_SETTINGS
@given(session=sessions(), s=record_settings, data=st.data())
def test_in_order_delivery_matches_the_contract_oracle(session, s, data):
    medium, script, events = session
    delivered = with_redeliveries(data, events)
    state, steps = replay_steps(delivered, s)
    check_invariants(steps)
    fresh = [step for step in steps if not step.duplicate]  # fresh[i] is script[i]
    decisions = [d for step in fresh for d in step.decisions]

    expected, index = oracle(medium, script, s)
    records, skips = of_kind(decisions, "record_due"), of_kind(decisions, "skipped")
    if expected == "record":
        assert len(records) == 1 and skips == []
        assert any(d.kind == "record_due" for d in fresh[index].decisions)
        assert records[0].at == events[index].occurred_at
        assert state.record == "due"
    elif expected == "no record":
        assert records == [] and len(skips) == 1
        assert any(d.kind == "skipped" for d in fresh[index].decisions)
        assert script[index].kind in skips[0].reason  # "abandoned" / "ended", in words
        assert state.record == "skipped"
    else:
        assert records == [] and skips == []
        assert state is None or state.record == "pending"

    notes = of_kind(decisions, "ended_note_due")
    ended = [i for i, step in enumerate(script) if step.kind == "ended"]
    if expected == "record" and ended:
        assert len(notes) == 1
        assert any(d.kind == "ended_note_due" for d in fresh[ended[0]].decisions)
    else:
        assert notes == []
