"""Synthetic contact-center traffic, built with the tests' event factory.

40 % calls (queued, assigned, connected, ended), 60 % chats (queued, a first message,
assigned, connected, 4-8 messages, ended); every session with its own end user, 8
queues, all session types. Sessions are interleaved in waves, as a contact center has
many at once; each session's events stay in order (one key, one partition).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from app.domain.session_types import SESSION_TYPES
from tests.factories import event_doc, header

# Sessions are interleaved in waves of this many.
WAVE = 200
CALL_TYPES = [t.code for t in SESSION_TYPES.values() if t.medium == "call"]
CHAT_TYPES = [t.code for t in SESSION_TYPES.values() if t.medium == "chat"]
QUEUES = [
    ("q-billing-refunds", ["Billing", "Refunds"]),
    ("q-billing-invoices", ["Billing", "Invoices"]),
    ("q-support-orders", ["Support", "Orders"]),
    ("q-support-delivery", ["Support", "Delivery"]),
    ("q-sales-new", ["Sales", "New customers"]),
    ("q-sales-upgrade", ["Sales", "Upgrades"]),
    ("q-tech-internet", ["Technical", "Internet", "Outage"]),
    ("q-tech-mobile", ["Technical", "Mobile"]),
]
LANGUAGES = ["pt-BR", "en-US", "es-MX"]
DISPOSITIONS = ["resolved", "refund-issued", "follow-up", "escalated"]


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes
    value: bytes
    session_id: str
    event_id: str
    assigned: bool  # the session's `assigned` event: the latency phase times it


@dataclass(slots=True)
class Traffic:
    messages: list[Message] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    calls: int = 0
    chats: int = 0


def session_events(prefix: str, index: int, rng: random.Random, started_at: datetime) -> tuple[str, bool, list[dict]]:
    """One session's events, in order."""
    is_chat = rng.random() < 0.6
    session_id = f"{prefix}-{index:06d}"
    queue_id, path = rng.choice(QUEUES)
    session = header(
        session_id,
        medium="chat" if is_chat else "call",
        session_type=rng.choice(CHAT_TYPES if is_chat else CALL_TYPES),
        queue_id=queue_id,
        queue_path=path,
        end_user_id=f"eu-{session_id}",
        end_user_name=f"Bench User {index}",
        end_user_phone=None if is_chat else f"+5511{9 * 10**8 + index:09d}",
        end_user_email=f"{session_id}@bench.example" if is_chat else None,
        language=rng.choice(LANGUAGES),
        started_at=started_at,
    )
    clock = 0.0

    def tick() -> float:
        nonlocal clock
        clock += rng.uniform(1, 30)
        return clock

    events = [event_doc(session, "queued", tick())]
    if is_chat:
        events.append(event_doc(session, "message", tick(), text="Hello, I need help"))
    events += [event_doc(session, "assigned", tick()), event_doc(session, "connected", tick())]
    if is_chat:
        for n in range(1, rng.randint(4, 8) + 1):
            text = f"message {n} of {session_id}: " + "lorem ipsum dolor sit amet " * rng.randint(1, 4)
            events.append(event_doc(session, "message", tick(), sender="agent" if n % 2 else "end_user", text=text))
    summary = {
        "duration_seconds": round(clock, 1),
        "disposition": rng.choice(DISPOSITIONS),
        "recording_url": None if is_chat else f"https://recordings.bench.example/{session_id}.wav",
    }
    events.append(event_doc(session, "ended", tick(), summary=summary))
    return session_id, is_chat, events


def generate(prefix: str, *, sessions: int | None = None, min_events: int | None = None, seed: int = 7) -> Traffic:
    """Whole sessions, interleaved in waves of WAVE: event k of every session of a wave,
    then event k+1, ...; either `sessions` of them or enough for `min_events`."""
    rng = random.Random(seed)
    started_at = datetime.now(UTC).replace(microsecond=0)
    traffic = Traffic()
    index = 0
    while True:
        if sessions is not None and index >= sessions:
            break
        if min_events is not None and len(traffic.messages) >= min_events:
            break
        if sessions is not None:
            size = min(WAVE, sessions - index)
        else:  # about 8 events a session: the last wave only as large as still needed
            size = min(WAVE, max(1, math.ceil((min_events - len(traffic.messages)) / 8)))
        wave = []
        for _ in range(size):
            session_id, is_chat, events = session_events(prefix, index, rng, started_at)
            index += 1
            traffic.session_ids.append(session_id)
            traffic.chats += is_chat
            traffic.calls += not is_chat
            key = session_id.encode()
            wave.append([
                Message(key, orjson.dumps(e), session_id, e["event_id"], e["event_type"] == "assigned")
                for e in events
            ])
        for step in range(max(len(w) for w in wave)):
            traffic.messages.extend(w[step] for w in wave if step < len(w))
    return traffic
