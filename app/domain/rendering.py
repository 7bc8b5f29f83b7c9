"""What a record says: its title, description, tags and notes. Pure text work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from app.domain.field_limits import cut
from app.domain.record_settings import TEMPLATE_REFERENCE, RecordSettings
from app.domain.session import SessionState
from app.domain.session_types import SESSION_TYPES, TagForm

PLATFORM_TAG = "UJET"


def format_timestamp(moment: datetime | None) -> str:
    """RFC 3339 in UTC with a four-digit year (`0001-01-01T00:00:10Z`; strftime's %Y would
    write `1`). A moment that has no UTC form (year 1 with a positive offset) keeps its own."""
    if moment is None:
        return ""
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        pass
    date = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    time = f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    offset = moment.utcoffset()
    if not offset:
        return f"{date}T{time}Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{date}T{time}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def title_variables(state: SessionState, locale: str = "en") -> dict[str, str]:
    kind = SESSION_TYPES.get(state.session_type)
    return {
        "CALL_TYPE": kind.call_type_in(locale) if kind else state.session_type,
        "CALL_ID": state.session_id,
        "MENU_PATH": " > ".join(state.queue_path),
        "PHONE_NUMBER": state.phone_number or "",
        "LANGUAGE": state.language or "",
        "TIMESTAMP": format_timestamp(state.timestamp),
    }


def render_title(template: str, state: SessionState, locale: str = "en", *, max_chars: int | None = None) -> str:
    """Substitute the six variables and nothing else: no format spec, no attribute access,
    no evaluation (a saved template cannot hold other references; any that slipped in
    would render as written). `locale` is the settings' record_title_locale: the language
    of {CALL_TYPE}. Cut to `max_chars` (the CRM's limit) with an ellipsis."""
    values = title_variables(state, locale)
    title = TEMPLATE_REFERENCE.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    title = " ".join(title.split())
    return cut(title or state.session_id, max_chars)


def session_type_name(state: SessionState) -> str:
    kind = SESSION_TYPES.get(state.session_type)
    return kind.display_name if kind else state.session_type


def record_tags(
    form: TagForm | None, state: SessionState, settings: RecordSettings, *, creating: bool, max_chars: int | None
) -> list[str]:
    """Tags for a record made (`creating`) or a session attached to one, in a CRM's tag
    `form` (None: the CRM has no tags, as Salesforce), each cut to `max_chars`."""
    if form is None:
        return []
    tags: list[str] = []
    if settings.add_session_type_tags:
        tags.append(form(session_type_name(state)))
    if settings.add_platform_tag and creating:
        tags.append(PLATFORM_TAG)
    return [cut(tag, max_chars) for tag in tags]


def _contact(state: SessionState) -> str:
    parts = [p for p in (state.end_user_name, state.end_user_phone, state.end_user_email) if p]
    return ", ".join(parts) or state.end_user_id


def render_description(state: SessionState) -> str:
    lines = [
        f"Session: {state.session_id}",
        f"Session type: {session_type_name(state)}",
        f"Language: {state.language or 'unknown'}",
        f"Menu path: {' > '.join(state.queue_path) or 'none'}",
        f"End user: {_contact(state)}",
    ]
    if state.phone_number:
        lines.append(f"Dialed number: {state.phone_number}")
    return "\n".join(lines)


def render_attach_note(state: SessionState, reopened: bool) -> str:
    opening = "Reopened for" if reopened else "Attached"
    return (
        f"{opening} session {state.session_id} ({session_type_name(state)}, "
        f"menu path {' > '.join(state.queue_path) or 'none'}, "
        f"started {format_timestamp(state.timestamp) or 'unknown'})."
    )


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    occurred_at: datetime
    sender: str
    text: str | None


_SENDER_NAMES = {"end_user": "End user", "agent": "Agent", "virtual_agent": "Virtual agent", "system": "System"}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    whole = int(round(seconds))
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
    return f"{text} ({seconds:g} s)"


def render_ended_note(state: SessionState, transcript: list[TranscriptLine]) -> str:
    agent = state.agent_name or state.agent_id or "none"
    if state.agent_email:
        agent += f" <{state.agent_email}>"
    lines = [
        f"Session {state.session_id} ended.",
        f"Duration: {_duration(state.duration_seconds)}",
        f"Agent: {agent}",
        f"Disposition: {state.disposition or 'none'}",
        f"Recording: {state.recording_url or 'none'}",
    ]
    if state.is_chat:
        lines.append("")
        lines.append(f"Transcript ({len(transcript)} messages):")
        for line in transcript:
            who = _SENDER_NAMES.get(line.sender, line.sender)
            lines.append(f"[{format_timestamp(line.occurred_at)}] {who}: {line.text or ''}")
    return "\n".join(lines)
