"""Pure helpers for the domain unit tests: build a session's events from a short script and
replay them through `apply_event` + `decide` the way the consumer does (an `event_id` seen
before is dropped before it reaches the state machine). No I/O anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.domain.events import SessionEvent
from app.domain.policy import Decision, decide
from app.domain.record_settings import RecordSettings
from app.domain.session import SessionState, apply_event
from tests.factories import at, event_doc, header, to_event

EventLike = SessionEvent | dict[str, Any]

# Script words for message events: who sent the message.
SENDERS = {"eu": "end_user", "ag": "agent", "va": "virtual_agent", "sys": "system"}
EVENT_TYPES = ("queued", "assigned", "connected", "message", "abandoned", "ended")


def settings(**overrides: Any) -> RecordSettings:
    """The admin's settings: contract defaults plus `overrides`, validated like a save."""
    return RecordSettings.model_validate(overrides)


def as_event(event: EventLike) -> SessionEvent:
    return event if isinstance(event, SessionEvent) else to_event(event)


def script(
    spec: str, *, medium: str = "call", session_id: str | None = None, **header_args: Any
) -> list[SessionEvent]:
    """Events from a readable script: space-separated words `kind[@seconds]`.

    `kind` is an event type, or `eu` / `ag` / `va` / `sys` for a message from the end user,
    an agent, a virtual agent or the system. Without `@seconds` an event comes 10 s after the
    previous one (the first at 0 s). Event ids are `<session>-<n>`.
    """
    session_id = session_id or f"{medium}-1"
    session = header(session_id, medium=medium, **header_args)
    events: list[SessionEvent] = []
    seconds = -10.0
    for n, word in enumerate(spec.split(), start=1):
        kind, _, when = word.partition("@")
        seconds = float(when) if when else seconds + 10
        event_id = f"{session_id}-{n}"
        if kind in SENDERS:
            doc = event_doc(session, "message", seconds, event_id=event_id, sender=SENDERS[kind])
        elif kind in EVENT_TYPES and kind != "message":
            doc = event_doc(session, kind, seconds, event_id=event_id)
        else:
            raise ValueError(f"unknown script word {word!r}")
        events.append(to_event(doc))
    return events


def call(spec: str, **kwargs: Any) -> list[SessionEvent]:
    return script(spec, medium="call", **kwargs)


def chat(spec: str, **kwargs: Any) -> list[SessionEvent]:
    return script(spec, medium="chat", **kwargs)


@dataclass(frozen=True, slots=True)
class Step:
    event: SessionEvent
    duplicate: bool  # dropped by event_id dedup before apply_event, as the consumer does
    decisions: tuple[Decision, ...]


def replay_steps(
    events: Iterable[EventLike], record_settings: RecordSettings
) -> tuple[SessionState | None, list[Step]]:
    state: SessionState | None = None
    seen: set[str] = set()
    steps: list[Step] = []
    for raw in events:
        event = as_event(raw)
        if event.event_id in seen:
            steps.append(Step(event, True, ()))
            continue
        seen.add(event.event_id)
        state = apply_event(state, event)
        decided = decide(state, record_settings)
        state = decided.state
        steps.append(Step(event, False, decided.decisions))
    return state, steps


def replay(
    events: Iterable[EventLike], record_settings: RecordSettings
) -> tuple[SessionState | None, list[Decision]]:
    """Apply each event (dropping repeated event_ids) and ask the policy after each one."""
    state, steps = replay_steps(events, record_settings)
    return state, [d for step in steps for d in step.decisions]


def of_kind(decisions: Iterable[Decision], kind: str) -> list[Decision]:
    return [d for d in decisions if d.kind == kind]


def final_kinds(decisions: Iterable[Decision]) -> list[str]:
    """The decisions other than `waiting`, in order."""
    return [d.kind for d in decisions if d.kind != "waiting"]


def step_of(steps: list[Step], kind: str) -> list[int]:
    """Indexes of the steps that produced a decision of `kind`."""
    return [i for i, s in enumerate(steps) if any(d.kind == kind for d in s.decisions)]


__all__ = [
    "SENDERS", "Step", "as_event", "at", "call", "chat", "final_kinds", "of_kind",
    "replay", "replay_steps", "script", "settings", "step_of",
]
