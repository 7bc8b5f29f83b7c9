"""parse_event: valid schema_version 1 events parse; anything else is an InvalidEvent whose
reason names the problem (it becomes the dead-letter `error` header)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from app.domain.events import InvalidEvent, SessionEvent, parse_event

# Lines shaped like the contract's example streams (examples/*.jsonl), written out here.
CALL_SESSION = (
    '{"id": "call-1001", "medium": "call", "session_type": "voice_inbound_ivr", '
    '"queue": {"id": "q-billing-refunds", "path": ["Billing", "Refunds"]}, "language": "pt-BR", '
    '"phone_number": "+551130000000", "end_user": {"id": "eu-42", "name": "Maria Souza", '
    '"phone": "+5511987654321", "email": null}, "started_at": "2026-11-23T13:00:00Z"}'
)
CHAT_SESSION = (
    '{"id": "chat-2001", "medium": "chat", "session_type": "messaging_inbound_web", '
    '"queue": {"id": "q-support-orders", "path": ["Support", "Orders"]}, "language": "pt-BR", '
    '"phone_number": null, "end_user": {"id": "eu-43", "name": "Maria Souza", "phone": null, '
    '"email": "joao@example.com"}, "started_at": "2026-11-23T14:00:00Z"}'
)
AGENT = '{"id": "ag-7", "name": "Ana Lima", "email": "ana@example.com"}'

QUEUED = (
    f'{{"schema_version": 1, "event_id": "call-1001-1", "event_type": "queued", "occurred_at": "2026-11-23T13:00:00Z", '
    f'"session": {CALL_SESSION}}}'
)
ASSIGNED = (
    f'{{"schema_version": 1, "event_id": "call-1001-2", "event_type": "assigned", '
    f'"occurred_at": "2026-11-23T13:00:20Z", '
    f'"session": {CALL_SESSION}, "agent": {AGENT}}}'
)
CONNECTED = (
    f'{{"schema_version": 1, "event_id": "call-1001-3", "event_type": "connected", '
    f'"occurred_at": "2026-11-23T13:00:26Z", '
    f'"session": {CALL_SESSION}, "agent": {AGENT}}}'
)
ENDED = (
    f'{{"schema_version": 1, "event_id": "call-1001-4", "event_type": "ended", "occurred_at": "2026-11-23T13:07:02Z", '
    f'"session": {CALL_SESSION}, "agent": {AGENT}, "summary": {{"duration_seconds": 396, '
    '"disposition": "refund-issued", "recording_url": "https://recordings.example.com/call-1001.mp3"}}'
)
MESSAGE = (
    f'{{"schema_version": 1, "event_id": "chat-2001-2", "event_type": "message", '
    f'"occurred_at": "2026-11-23T14:00:03Z", "session": {CHAT_SESSION}, '
    '"message": {"id": "m1", "sender": "end_user", "text": "Olá, meu pedido não chegou"}}'
)
ABANDONED = (
    '{"schema_version": 1, "event_id": "chat-2002-2", "event_type": "abandoned", '
    '"occurred_at": "2026-11-23T15:00:04Z", '
    '"session": {"id": "chat-2002", "medium": "chat", "session_type": "messaging_inbound_app", '
    '"queue": {"id": "q-support-orders", "path": ["Support", "Orders"]}, "language": "pt-BR", '
    '"phone_number": "+551130000000", "end_user": {"id": "eu-44", "name": "Maria Souza", "phone": null, '
    '"email": null}, "started_at": "2026-11-23T15:00:00Z"}}'
)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def test_queued_call_event_parses_with_its_whole_header():
    event = parse_event(QUEUED.encode())
    assert isinstance(event, SessionEvent)
    assert (event.schema_version, event.event_id, event.event_type) == (1, "call-1001-1", "queued")
    assert event.occurred_at == utc(2026, 11, 23, 13, 0, 0)
    s = event.session
    assert (s.id, s.medium, s.session_type) == ("call-1001", "call", "voice_inbound_ivr")
    assert (s.queue.id, s.queue.path) == ("q-billing-refunds", ["Billing", "Refunds"])
    assert (s.language, s.phone_number, s.started_at) == ("pt-BR", "+551130000000", utc(2026, 11, 23, 13))
    assert (s.end_user.id, s.end_user.name, s.end_user.phone, s.end_user.email) == (
        "eu-42", "Maria Souza", "+5511987654321", None)
    assert event.agent is None and event.message is None and event.summary is None


@pytest.mark.parametrize("line", [ASSIGNED, CONNECTED], ids=["assigned", "connected"])
def test_assigned_and_connected_carry_the_agent(line):
    event = parse_event(line.encode())
    assert (event.agent.id, event.agent.name, event.agent.email) == ("ag-7", "Ana Lima", "ana@example.com")


def test_ended_carries_the_summary():
    event = parse_event(ENDED.encode())
    assert event.summary.duration_seconds == 396
    assert event.summary.disposition == "refund-issued"
    assert event.summary.recording_url == "https://recordings.example.com/call-1001.mp3"


def test_message_event_carries_sender_and_utf8_text():
    event = parse_event(MESSAGE.encode())
    assert (event.message.id, event.message.sender) == ("m1", "end_user")
    assert event.message.text == "Olá, meu pedido não chegou"


def test_abandoned_chat_event_parses():
    event = parse_event(ABANDONED.encode())
    assert (event.event_type, event.session.medium, event.session.session_type) == (
        "abandoned", "chat", "messaging_inbound_app")


def test_extra_fields_are_allowed_as_in_the_schema():
    document = orjson.loads(QUEUED)
    document["trace_id"] = "abc"
    document["session"]["tenant"] = {"id": 1}
    assert parse_event(orjson.dumps(document)).event_id == "call-1001-1"


def test_an_offset_occurred_at_is_kept_as_the_same_instant():
    document = orjson.loads(QUEUED)
    document["occurred_at"] = "2026-11-23T10:00:00-03:00"
    event = parse_event(orjson.dumps(document))
    assert event.occurred_at == utc(2026, 11, 23, 13)
    assert event.occurred_at.utcoffset() == timedelta(hours=-3)


@pytest.mark.parametrize(
    "optional",
    ["language", "phone_number", "started_at"],
)
def test_optional_header_fields_may_be_null_or_absent(optional):
    document = orjson.loads(QUEUED)
    document["session"][optional] = None
    assert getattr(parse_event(orjson.dumps(document)).session, optional) is None
    del document["session"][optional]
    assert getattr(parse_event(orjson.dumps(document)).session, optional) is None


@pytest.mark.parametrize("sender", ["end_user", "agent", "virtual_agent", "system"])
def test_every_sender_parses_and_text_may_be_null(sender):
    document = orjson.loads(MESSAGE)
    document["message"] = {"id": "m9", "sender": sender, "text": None}
    assert parse_event(orjson.dumps(document)).message.sender == sender


# --- invalid input ---------------------------------------------------------------------------------


def mutated(line, change):
    document = orjson.loads(line)
    change(document)
    return orjson.dumps(document)


def _pop(path):
    def change(document):
        *parents, last = path
        node = document
        for key in parents:
            node = node[key]
        del node[last]
    return change


def _set(path, value):
    def change(document):
        *parents, last = path
        node = document
        for key in parents:
            node = node[key]
        node[last] = value
    return change


INVALID = [
    pytest.param(b"{not json", ["invalid JSON"], id="not JSON"),
    pytest.param(b"", ["invalid JSON", "empty"], id="empty value"),
    pytest.param(None, ["invalid JSON", "empty"], id="no value (tombstone)"),
    pytest.param(QUEUED.encode() + b" trailing", ["invalid JSON"], id="trailing garbage"),
    pytest.param(b"\xff\xfe{}", ["invalid JSON"], id="not UTF-8"),
    pytest.param(b"[1, 2]", ["not a JSON object"], id="array"),
    pytest.param(b'"queued"', ["not a JSON object"], id="string"),
    pytest.param(b"null", ["not a JSON object"], id="null"),
    pytest.param(b"42", ["not a JSON object"], id="number"),
    pytest.param(mutated(QUEUED, _set(["schema_version"], 2)), ["unknown schema_version: 2"], id="schema_version 2"),
    pytest.param(
        mutated(QUEUED, _set(["schema_version"], "1")), ["unknown schema_version", '"1"'], id="schema_version as text"
    ),
    pytest.param(
        mutated(QUEUED, _set(["schema_version"], True)), ["unknown schema_version: true"], id="schema_version true"
    ),
    pytest.param(
        mutated(QUEUED, _pop(["schema_version"])), ["schema_version", "required"], id="schema_version missing"
    ),
    pytest.param(
        mutated(QUEUED, _pop(["session", "queue", "id"])),
        ["session.queue.id", "required"],
        id="missing session.queue.id",
    ),
    pytest.param(
        mutated(QUEUED, _set(["session", "queue", "id"], "")), ["session.queue.id"], id="empty session.queue.id"
    ),
    pytest.param(
        mutated(QUEUED, _pop(["session", "end_user"])), ["session.end_user", "required"], id="missing end_user"
    ),
    pytest.param(mutated(QUEUED, _pop(["session"])), ["session", "required"], id="missing session"),
    pytest.param(mutated(QUEUED, _pop(["event_id"])), ["event_id", "required"], id="missing event_id"),
    pytest.param(mutated(QUEUED, _set(["event_id"], "")), ["event_id"], id="empty event_id"),
    pytest.param(mutated(QUEUED, _set(["event_id"], "x" * 129)), ["event_id"], id="event_id over 128"),
    pytest.param(mutated(QUEUED, _set(["event_id"], 17)), ["event_id", "string"], id="event_id a number"),
    pytest.param(
        mutated(QUEUED, _set(["event_type"], "transferred")), ["event_type", "'queued'"], id="bad event_type enum"
    ),
    pytest.param(mutated(QUEUED, _set(["session", "medium"], "email")), ["session.medium"], id="bad medium enum"),
    pytest.param(
        mutated(QUEUED, _set(["session", "session_type"], "voice_inbound")),
        ["session.session_type"],
        id="bad session_type enum",
    ),
    pytest.param(mutated(MESSAGE, _set(["message", "sender"], "bot")), ["message.sender"], id="bad sender enum"),
    pytest.param(
        mutated(QUEUED, _set(["occurred_at"], "2026-11-23T13:00:00")),
        ["occurred_at", "timezone"],
        id="occurred_at without offset",
    ),
    pytest.param(mutated(QUEUED, _set(["occurred_at"], "2026-11-23")), ["occurred_at"], id="occurred_at a date only"),
    pytest.param(
        mutated(QUEUED, _set(["occurred_at"], "1795438800")), ["occurred_at"], id="occurred_at a unix time in text"
    ),
    pytest.param(mutated(QUEUED, _set(["occurred_at"], 1795438800)), ["occurred_at"], id="occurred_at a number"),
    pytest.param(mutated(QUEUED, _set(["occurred_at"], "yesterday")), ["occurred_at"], id="occurred_at not a time"),
    pytest.param(
        mutated(QUEUED, _set(["session", "started_at"], "2026-11-23T13:00:00")),
        ["session.started_at"],
        id="started_at without offset",
    ),
    pytest.param(
        mutated(MESSAGE, _pop(["message"])),
        ["message", "required for event_type message"],
        id="message event without message",
    ),
    pytest.param(mutated(MESSAGE, _set(["message"], None)), ["message"], id="message event with null message"),
    pytest.param(
        mutated(MESSAGE, _pop(["message", "sender"])), ["message.sender", "required"], id="message without sender"
    ),
    pytest.param(
        mutated(ASSIGNED, _pop(["agent"])), ["agent", "required for event_type assigned"], id="assigned without agent"
    ),
    pytest.param(
        mutated(CONNECTED, _pop(["agent"])),
        ["agent", "required for event_type connected"],
        id="connected without agent",
    ),
    pytest.param(mutated(QUEUED, _set(["agent"], None)), ["agent"], id="agent null (the schema wants an object)"),
    pytest.param(mutated(ENDED, _set(["summary"], None)), ["summary"], id="summary null (the schema wants an object)"),
    pytest.param(
        mutated(ENDED, _set(["summary", "duration_seconds"], -1)), ["summary.duration_seconds"], id="negative duration"
    ),
    pytest.param(
        mutated(ENDED, _set(["summary", "duration_seconds"], "396")),
        ["summary.duration_seconds"],
        id="duration as text",
    ),
    pytest.param(
        mutated(QUEUED, _set(["session", "queue", "path"], "Billing > Refunds")),
        ["session.queue.path"],
        id="path not a list",
    ),
    pytest.param(mutated(MESSAGE, _set(["message", "text"], "x" * 20001)), ["message.text"], id="text over 20000"),
]


@pytest.mark.parametrize(("value", "phrases"), INVALID)
def test_invalid_events_give_a_reason_naming_the_problem(value, phrases):
    with pytest.raises(InvalidEvent) as caught:
        parse_event(value)
    reason = caught.value.reason
    assert reason == str(caught.value)
    for phrase in phrases:
        assert phrase in reason, reason


def test_an_unknown_version_is_reported_before_the_schema_details():
    """A future version fails the v1 schema in many ways; the reason says the version."""
    document = {"schema_version": 2, "event_id": "e", "kind": "something new"}
    with pytest.raises(InvalidEvent) as caught:
        parse_event(orjson.dumps(document))
    assert caught.value.reason == "unknown schema_version: 2"


def test_a_reason_lists_several_problems_but_stays_short():
    document = copy.deepcopy(orjson.loads(QUEUED))
    document["session"] = {"id": "x"}
    with pytest.raises(InvalidEvent) as caught:
        parse_event(orjson.dumps(document))
    reason = caught.value.reason
    assert reason.startswith("schema: ")
    assert "session.medium" in reason and "session.queue" in reason
    assert reason.count(";") <= 4  # at most five problems named
    assert len(reason) < 1000
