"""Record-creation policy for chats (contract section 2), one row per setting and interaction.

Script words: `eu` a message from the end user, `ag` from an agent, `va` a virtual agent,
`sys` the system; `kind@s` puts an event at s seconds (default: 10 s after the previous one).
"""

from __future__ import annotations

import pytest

from tests.unit.helpers import chat, final_kinds, of_kind, replay, replay_steps, settings, step_of


def wait_for(n):
    return {"delay_chat_record_until_consumer_messages": n}


def abandoned(mode, **more):
    return {"create_records_for_abandoned_chats": mode, **more}


# (settings, script, "record"/"skipped", index of the deciding event in the script, reason phrases)
CHAT_ROWS = [
    pytest.param(
        {},
        "queued assigned connected ended",
        "record",
        1,
        ["chat assigned to agent Ana Lima"],
        id="default: due at assigned, no message needed",
    ),
    pytest.param(
        wait_for(0),
        "queued assigned ended",
        "record",
        1,
        ["assigned"],
        id="wait for 0 messages: same as no wait",
    ),
    pytest.param(
        wait_for(2),
        "queued eu assigned connected ag eu ended",
        "record",
        5,
        ["assigned", "the end user sent 2 messages", "records wait for 2"],
        id="wait for 2: assigned first, due at the 2nd end-user message",
    ),
    pytest.param(
        wait_for(2),
        "queued eu eu assigned connected ended",
        "record",
        3,
        ["sent 2 messages"],
        id="wait for 2: messages before assignment count, due at assigned",
    ),
    pytest.param(
        wait_for(1),
        "queued eu assigned ended",
        "record",
        2,
        ["sent 1 message "],
        id="wait for 1: one message before assignment is enough",
    ),
    pytest.param(
        wait_for(3),
        "queued eu assigned eu ag va sys ag eu ended",
        "record",
        8,
        ["sent 3 messages"],
        id="wait for 3: agent, virtual agent and system messages in between do not count",
    ),
    pytest.param(
        wait_for(2),
        "queued assigned ag va sys ag eu ended",
        "skipped",
        7,
        ["ended with 1 end-user message", "fewer than the 2"],
        id="wait for 2: only other senders' messages -> ended below N, skipped",
    ),
    pytest.param(
        wait_for(2),
        "queued eu assigned ended",
        "skipped",
        3,
        ["fewer than the 2"],
        id="wait for 2: ends with 1 end-user message -> skipped",
    ),
    pytest.param(
        {},
        "queued eu ended",
        "skipped",
        2,
        ["chat ended without being assigned"],
        id="default: ends without being assigned -> skipped",
    ),
    pytest.param(
        {},
        "queued@0 abandoned@4",
        "skipped",
        1,
        [
            "chat abandoned 4 s after queueing",
            "queueing, a short abandon",
            "short-abandon threshold 10 s",
            "records for abandoned chats are off",
        ],
        id="abandoned off: short abandon -> skipped",
    ),
    pytest.param(
        {},
        "queued@0 eu@5 eu@20 abandoned@60",
        "skipped",
        3,
        ["chat abandoned 60 s after queueing", "not a short abandon", "records for abandoned chats are off"],
        id="abandoned off: long abandon with messages -> skipped",
    ),
    pytest.param(
        abandoned("all"),
        "queued@0 abandoned@4",
        "record",
        1,
        [
            "chat abandoned 4 s after queueing",
            "queueing, a short abandon",
            "records for abandoned chats: all",
            "short ones included",
        ],
        id="abandoned all: short abandon still gets a record",
    ),
    pytest.param(
        abandoned("all"),
        "queued@0 abandoned@300 ended@301",
        "record",
        1,
        ["not a short abandon", "all"],
        id="abandoned all: long abandon gets a record",
    ),
    pytest.param(
        abandoned("min_messages", abandoned_chat_min_messages=2),
        "queued@0 eu@1 eu@2 abandoned@3",
        "record",
        3,
        ["sent 2 messages", "at least the 2 required for abandoned chats"],
        id="abandoned min_messages 2: two end-user messages -> record",
    ),
    pytest.param(
        abandoned("min_messages", abandoned_chat_min_messages=2),
        "queued@0 eu@1 ag@2 va@3 sys@4 abandoned@40",
        "skipped",
        5,
        ["sent 1 message,", "fewer than the 2 required for abandoned chats"],
        id="abandoned min_messages 2: one end-user message (others do not count) -> skipped",
    ),
    pytest.param(
        abandoned("min_messages"),
        "queued@0 abandoned@30",
        "skipped",
        1,
        ["sent 0 messages", "fewer than the 1 required"],
        id="abandoned min_messages default 1: no message -> skipped",
    ),
    pytest.param(
        abandoned("min_messages"),
        "queued@0 eu@2 abandoned@3",
        "record",
        2,
        ["queueing, a short abandon", "at least the 1 required"],
        id="abandoned min_messages default 1: short abandon with a message -> record",
    ),
    pytest.param(
        abandoned("off", chat_short_abandon_seconds=10),
        "queued@0 abandoned@10",
        "skipped",
        1,
        ["10 s after queueing", "queueing, a short abandon"],
        id="short abandon: exactly the threshold is short (no more than)",
    ),
    pytest.param(
        abandoned("off", chat_short_abandon_seconds=10),
        "queued@0 abandoned@11",
        "skipped",
        1,
        ["11 s after queueing", "not a short abandon"],
        id="short abandon: one second over the threshold is not short",
    ),
    pytest.param(
        abandoned("all", chat_short_abandon_seconds=3),
        "queued@0 abandoned@4",
        "record",
        1,
        ["4 s after queueing", "not a short abandon", "short-abandon threshold 3 s"],
        id="short abandon: custom threshold 3 s",
    ),
    pytest.param(
        abandoned("off"),
        "eu@0 abandoned@5",
        "skipped",
        1,
        ["queued event was not seen", "abandoned chats are off"],
        id="abandoned without a queued event: the wait is unknown, said so",
    ),
    pytest.param(
        {**wait_for(2), **abandoned("off")},
        "queued eu eu assigned abandoned",
        "record",
        3,
        ["assigned"],
        id="wait for 2 reached at assigned: a later abandon changes nothing",
    ),
    pytest.param(
        {**wait_for(5), **abandoned("all")},
        "queued@0 abandoned@4",
        "record",
        1,
        ["all"],
        id="abandoned all overrides the message wait for an abandoned chat",
    ),
]


@pytest.mark.parametrize(("overrides", "spec", "outcome", "decided_index", "phrases"), CHAT_ROWS)
def test_chat_policy_table(overrides, spec, outcome, decided_index, phrases):
    events = chat(spec)
    state, steps = replay_steps(events, settings(**overrides))
    decisions = [d for s in steps for d in s.decisions]
    kind = "record_due" if outcome == "record" else "skipped"
    other = "skipped" if outcome == "record" else "record_due"

    assert len(of_kind(decisions, kind)) == 1
    assert of_kind(decisions, other) == []
    assert step_of(steps, kind) == [decided_index]
    decision = of_kind(decisions, kind)[0]
    assert decision.at == events[decided_index].occurred_at
    for phrase in phrases:
        assert phrase in decision.reason, decision.reason
    ended = any(e.event_type == "ended" for e in events)
    assert len(of_kind(decisions, "ended_note_due")) == (1 if ended and outcome == "record" else 0)
    assert state.record == ("due" if outcome == "record" else "skipped")


def test_chat_waiting_reasons_count_the_end_users_messages():
    _, steps = replay_steps(chat("queued eu assigned ag eu"), settings(**wait_for(3)))
    waits = [d.reason for s in steps for d in s.decisions if d.kind == "waiting"]
    assert waits == [
        "waiting for the chat to be assigned to an agent",
        "waiting for the end user's messages: 1 of 3 sent",
        "waiting for the end user's messages: 2 of 3 sent",
    ]


def test_the_short_abandon_reason_reads_as_one_sentence_for_an_administrator():
    _, decisions = replay(chat("queued@0 abandoned@4"), settings())
    [skipped] = of_kind(decisions, "skipped")
    assert skipped.reason == (
        "chat abandoned 4 s after queueing, a short abandon (short-abandon threshold 10 s); "
        "records for abandoned chats are off"
    )


def test_message_counts_survive_redelivery_without_double_counting():
    """The end user's 1st message re-delivered (same event_id) must not count as the 2nd."""
    events = chat("queued eu assigned")
    state, decisions = replay(events + [events[1], events[1]], settings(**wait_for(2)))
    assert state.end_user_messages == 1
    assert of_kind(decisions, "record_due") == []


def test_a_chat_connected_without_an_assigned_event_counts_as_assigned():
    _, decisions = replay(chat("queued connected ended"), settings())
    assert final_kinds(decisions) == ["record_due", "ended_note_due"]
