"""A session's progress, folded from its events by a pure state machine.

`apply_event` never looks at the clock: every time it keeps comes from the events'
`occurred_at`. It tolerates any order: lifecycle moments keep their earliest
occurrence and the newest event's header wins. It does not dedup by itself: a
`message` event applied twice is counted twice (as is `events_applied`), so the
caller must drop repeated `event_id`s before they get here, as the consumer does.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from typing import Any, Literal, get_args

from app.domain.events import Sender, SessionEvent

RecordProgress = Literal["pending", "due", "skipped"]
_MOMENTS = ("queued", "assigned", "connected", "abandoned", "ended")
_DATETIME_FIELDS = frozenset(
    {"started_at", "first_event_at", "header_at", *(f"{m}_at" for m in _MOMENTS), "record_decided_at"}
)


# Not slotted: a new state per event is its predecessor's __dict__ copied and updated, two
# C calls, where filling 36 slots one by one cost about a third of the fold (docs/bench.md).
@dataclass(frozen=True)
class SessionState:
    session_id: str
    medium: str
    session_type: str
    queue_id: str
    queue_path: tuple[str, ...] = ()
    language: str | None = None
    phone_number: str | None = None
    end_user_id: str = ""
    end_user_name: str | None = None
    end_user_phone: str | None = None
    end_user_email: str | None = None
    started_at: datetime | None = None
    # When the header above was taken: the newest event's header wins.
    header_at: datetime | None = None
    first_event_at: datetime | None = None
    queued_at: datetime | None = None
    assigned_at: datetime | None = None
    connected_at: datetime | None = None
    abandoned_at: datetime | None = None
    ended_at: datetime | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    agent_email: str | None = None
    end_user_messages: int = 0
    agent_messages: int = 0
    virtual_agent_messages: int = 0
    system_messages: int = 0
    duration_seconds: float | None = None
    disposition: str | None = None
    recording_url: str | None = None
    events_applied: int = 0
    # What the policy has concluded; once `due` or `skipped` it never changes again,
    # which is what makes "one session, at most one record" hold under any replay.
    record: RecordProgress = "pending"
    record_reason: str | None = None
    record_decided_at: datetime | None = None
    ended_note_due: bool = False
    last_wait_reason: str | None = None

    @property
    def is_chat(self) -> bool:
        return self.medium == "chat"

    @property
    def timestamp(self) -> datetime | None:
        """A title's {TIMESTAMP}: the session's start, else the earliest event seen."""
        return self.started_at or self.first_event_at

    def to_document(self) -> dict[str, Any]:
        # A copy of the fields: dataclasses.asdict deep-copies every value, which is a third
        # of the consumer's time per event. Every value here is immutable or copied below.
        document = dict(self.__dict__)
        document["queue_path"] = list(self.queue_path)
        for name in _DATETIME_FIELDS:
            if document[name] is not None:
                document[name] = document[name].isoformat()
        return document

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> SessionState:
        """The state a document holds: unknown keys are ignored, missing ones take their
        default (a missing required one is refused with TypeError, as __init__ does)."""
        get = document.get
        values = {name: get(name, default) for name, default in _DEFAULTS}
        for name in _DATETIME_FIELDS:
            if values[name] is not None:
                values[name] = datetime.fromisoformat(values[name])
        values["queue_path"] = tuple(values["queue_path"] or ())
        missing = [name for name, value in values.items() if value is _REQUIRED]
        if missing:
            raise TypeError(f"SessionState document lacks {', '.join(missing)}")
        return _filled(values)


_FIELD_NAMES = tuple(f.name for f in fields(SessionState))
_FIELDS = frozenset(_FIELD_NAMES)
_REQUIRED: Any = object()
_DEFAULTS = tuple((f.name, _REQUIRED if f.default is MISSING else f.default) for f in fields(SessionState))
_SET_DICT = object.__setattr__


def _filled(values: dict[str, Any]) -> SessionState:
    """A new state from every field's value by name, without the frozen __init__."""
    new = object.__new__(SessionState)
    _SET_DICT(new, "__dict__", values)
    return new


def evolve(state: SessionState, **changes: Any) -> SessionState:
    """`dataclasses.replace(state, **changes)`, several times cheaper: replace() walks the
    fields' metadata and calls the frozen __init__, a quarter of the consumer's CPU per
    event (docs/bench.md). An unknown name is refused with TypeError, as replace() does."""
    if not changes.keys() <= _FIELDS:
        unknown = sorted(changes.keys() - _FIELDS)
        raise TypeError(f"SessionState has no field {unknown[0]!r}")
    values = state.__dict__.copy()
    values.update(changes)
    return _filled(values)


def _earliest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate < current else current


def new_state(event: SessionEvent) -> SessionState:
    header = event.session
    return SessionState(
        session_id=header.id,
        medium=header.medium,
        session_type=header.session_type,
        queue_id=header.queue.id,
    )


def apply_event(state: SessionState | None, event: SessionEvent) -> SessionState:
    """The state after `event`. Pure: same inputs, same output.

    Written into a copy of the state's fields, not through `evolve(**changes)`: the
    keyword dict, its check and its merge were half of this function's cost."""
    if state is None:
        state = new_state(event)
    at = event.occurred_at
    values = state.__dict__.copy()
    values["events_applied"] = state.events_applied + 1
    values["first_event_at"] = _earliest(state.first_event_at, at)
    if state.header_at is None or at >= state.header_at:
        header = event.session
        end_user = header.end_user
        values["medium"] = header.medium
        values["session_type"] = header.session_type
        values["queue_id"] = header.queue.id
        values["queue_path"] = tuple(header.queue.path)
        values["language"] = header.language
        values["phone_number"] = header.phone_number
        values["end_user_id"] = end_user.id
        values["end_user_name"] = end_user.name
        values["end_user_phone"] = end_user.phone
        values["end_user_email"] = end_user.email
        values["started_at"] = header.started_at or state.started_at
        values["header_at"] = at
    kind = event.event_type
    moment = _MOMENT_FIELDS.get(kind)
    if moment is not None:
        values[moment] = _earliest(values[moment], at)
    agent = event.agent
    if agent is not None and kind in _AGENT_KINDS:
        values["agent_id"] = agent.id
        values["agent_name"] = agent.name
        values["agent_email"] = agent.email
    if kind == "message" and event.message is not None:
        counter = _MESSAGE_COUNTERS[event.message.sender]
        values[counter] += 1
    if kind == "ended" and event.summary is not None:
        values["duration_seconds"] = event.summary.duration_seconds
        values["disposition"] = event.summary.disposition
        values["recording_url"] = event.summary.recording_url
    return _filled(values)


_MOMENT_FIELDS = {moment: f"{moment}_at" for moment in _MOMENTS}
_AGENT_KINDS = frozenset({"assigned", "connected", "ended"})
_MESSAGE_COUNTERS = {sender: f"{sender}_messages" for sender in get_args(Sender)}
