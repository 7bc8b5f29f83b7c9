"""The harness's traffic, built from a seed with the test event factory: sessions the
policy treats differently, spread over the publish window, some events sent twice, and
invalid messages mixed in. Every message has a planned publish time; the same seed
gives the same messages in the same order."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson

from tests.factories import call_events, chat_events, event_doc, header


class Validity(Enum):
    VALID = "valid"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class PlannedMessage:
    at: float  # seconds after the publish start
    key: bytes | None
    value: bytes
    validity: Validity
    event_id: str | None  # a valid event's id (duplicates share it)
    session_id: str | None


@dataclass
class Traffic:
    messages: list[PlannedMessage]
    # Each valid session's event documents, in the order they are first published.
    sessions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # (key, value) of every invalid message: each pair is unique.
    invalid: set[tuple[bytes | None, bytes]] = field(default_factory=set)
    duplicates: int = 0

    @property
    def valid_event_ids(self) -> set[str]:
        return {doc["event_id"] for docs in self.sessions.values() for doc in docs}


def _abandoned_call(session_id: str, **header_args: Any) -> list[dict[str, Any]]:
    session = header(session_id, medium="call", **header_args)
    return [event_doc(session, "queued", 0), event_doc(session, "abandoned", 40), event_doc(session, "ended", 41)]


def _abandoned_chat(session_id: str, messages: int, **header_args: Any) -> list[dict[str, Any]]:
    session = header(session_id, medium="chat", **header_args)
    events = [event_doc(session, "queued", 0)]
    events += [event_doc(session, "message", 2 + n, text=f"anyone there? {n}") for n in range(messages)]
    return events + [event_doc(session, "abandoned", 30), event_doc(session, "ended", 31)]


def shared_end_users(sessions: int) -> list[dict[str, Any]]:
    """The pool that about one session in five draws its end user from."""
    return [{"end_user_id": f"eu-shared-{n}", "end_user_phone": f"+1666{n:07d}",
             "end_user_email": f"shared{n}@example.com"} for n in range(max(2, sessions // 25))]


def session_events(
    rng: random.Random, number: int, end_users: list[dict[str, Any]]
) -> tuple[str, list[dict[str, Any]]]:
    """One session of a random shape; ~1 in 5 shares an end user with others."""
    if rng.random() < 0.2:
        who = rng.choice(end_users)
    else:
        who = {"end_user_id": f"eu-{number}", "end_user_phone": f"+1555{number:07d}",
               "end_user_email": f"user{number}@example.com"}
    queue = rng.choice([("q-billing", ["Billing", "Refunds"]), ("q-support", ["Support", "Orders"]),
                        ("q-sales", ["Sales"])])
    args = dict(who, queue_id=queue[0], queue_path=queue[1])
    shape = rng.random()
    if shape < 0.30:
        sid = f"call-{number}"
        events = call_events(sid, connected=rng.random() < 0.8, **args)
    elif shape < 0.40:
        sid = f"call-{number}"
        events = _abandoned_call(sid, **args)
    elif shape < 0.75:
        sid = f"chat-{number}"
        events = chat_events(sid, end_user_messages=rng.choice([0, 1, 2, 3, 5]), **args)
    else:
        sid = f"chat-{number}"
        events = _abandoned_chat(sid, rng.choice([0, 1, 2]), **args)
    if rng.random() < 0.1:
        events = events[:-1]  # still open: its record may be due, its note is not
    return sid, events


def _invalid_values(rng: random.Random, number: int, session: dict[str, Any] | None) -> tuple[bytes, bytes | None]:
    """One invalid message of a random kind, as (value, key); each (key, value) is unique,
    so the dead-letter topic (which keeps both) can be matched to it."""
    kind = rng.randrange(5)
    marker = f"invalid-{number}"
    if kind == 0:
        return f"{{not json {marker}".encode(), marker.encode()
    if kind == 1:
        document = {"schema_version": 2, "event_id": marker, "event_type": "queued"}
        return orjson.dumps(document), marker.encode()
    if kind == 2:
        document = {"schema_version": 1, "event_id": marker, "event_type": "teleported",
                    "occurred_at": "2026-11-23T13:00:00Z"}
        return orjson.dumps(document), marker.encode()
    if kind == 3:
        return b"", marker.encode()
    # Valid to the schema, refused by the database (text with a NUL): it shares a valid
    # session's partition and batch, so the batch must be split to find it.
    assert session is not None
    document = event_doc(session, "message", 5, event_id=marker, text=f"bad\u0000byte {marker}")
    return orjson.dumps(document), session["id"].encode()


def build_traffic(seed: int, *, sessions: int, window: float, duplicate_share: float = 0.05,
                  invalid_share: float = 0.02) -> Traffic:
    rng = random.Random(seed)
    end_users = shared_end_users(sessions)
    traffic = Traffic([])
    valid: list[PlannedMessage] = []
    for number in range(sessions):
        sid, events = session_events(rng, number, end_users)
        traffic.sessions[sid] = events
        moment = rng.uniform(0, window * 0.85)
        for document in events:
            moment = min(window, moment + rng.uniform(0.05, 2.0))
            valid.append(PlannedMessage(moment, sid.encode(), orjson.dumps(document), Validity.VALID,
                                        document["event_id"], sid))
    extra: list[PlannedMessage] = []
    for message in valid:
        if rng.random() < duplicate_share:
            later = min(window + 5, message.at + rng.uniform(0.2, 20))
            extra.append(PlannedMessage(later, message.key, message.value, Validity.VALID, message.event_id,
                                        message.session_id))
    traffic.duplicates = len(extra)
    session_ids = list(traffic.sessions)
    for number in range(max(1, round(len(valid) * invalid_share))):
        target = traffic.sessions[rng.choice(session_ids)][0]["session"]
        value, key = _invalid_values(rng, number, target)
        traffic.invalid.add((key, value))
        extra.append(PlannedMessage(rng.uniform(0, window), key, value, Validity.INVALID, None, None))
    # Stable sort: a session's own events keep their order (their times only grow).
    traffic.messages = sorted(valid + extra, key=lambda m: m.at)
    return traffic
