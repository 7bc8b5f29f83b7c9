"""The "CRM record creation details" panel: the form's fields to a settings document and
back, the previews (title, tags) and the field errors, in the API's own words."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from app.adapters.crm.registry import crm_tags, has_tags
from app.domain.record_settings import TEMPLATE_REFERENCE, TITLE_VARIABLES, RecordSettings, SettingChange
from app.domain.rendering import PLATFORM_TAG, render_title
from app.domain.session import SessionState

BOOLEAN_FIELDS = (
    "append_to_open_record_in_leaf_queue",
    "delay_call_record_until_connected",
    "create_records_for_abandoned_calls",
    "add_session_type_tags",
    "add_platform_tag",
)
# A number that is "off" (null) unless its switch in the form is on.
SWITCHED_NUMBERS = {
    "append_to_closed_record_within_days": "reopen_closed_records",
    "delay_chat_record_until_consumer_messages": "delay_chat_record",
}
NUMBERS = ("abandoned_chat_min_messages", "chat_short_abandon_seconds")
CHOICES = ("create_records_for_abandoned_chats", "record_title_locale", "record_title_template")

# Shown when no session has been seen yet.
EXAMPLE_SESSION = SessionState(
    session_id="call-1001",
    medium="call",
    session_type="voice_inbound_ivr",
    queue_id="q-refunds",
    queue_path=("Billing", "Refunds"),
    language="pt-BR",
    phone_number="+551130000000",
    end_user_id="eu-1",
    started_at=datetime(2026, 11, 23, 13, 0, tzinfo=UTC),
)


@dataclass(frozen=True, slots=True)
class TemplatePart:
    text: str
    kind: str  # "text", "variable" or "unknown"


@dataclass(frozen=True, slots=True)
class Previews:
    example: bool  # True: no session seen yet, an example stands in
    session_id: str
    title: str
    title_error: str | None
    template_parts: list[TemplatePart]
    crm: str
    has_tags: bool  # False for Salesforce
    type_tags: list[str]
    platform_tags: list[str]
    attach_tags: list[str]


def _is_on(form: dict[str, str], name: str) -> bool:
    return form.get(name) in ("on", "true", "1")


def form_document(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings document the form describes, and the fields that are not even numbers."""
    document: dict[str, Any] = {name: _is_on(form, name) for name in BOOLEAN_FIELDS}
    errors: dict[str, str] = {}
    numbers = [*NUMBERS, *(n for n, switch in SWITCHED_NUMBERS.items() if _is_on(form, switch))]
    for name in SWITCHED_NUMBERS:
        document[name] = None
    for name in numbers:
        raw = (form.get(name) or "").strip()
        try:
            document[name] = int(raw)
        except ValueError:
            errors[name] = "must be a whole number" if raw else "a number is required"
    for name in CHOICES:
        if name in form:
            document[name] = form[name]
    return document, errors


def validate(document: dict[str, Any]) -> tuple[RecordSettings | None, dict[str, str]]:
    """As PUT /api/settings validates: the same reasons, keyed by field."""
    try:
        return RecordSettings.model_validate(document), {}
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for item in exc.errors(include_url=False, include_input=False):
            field = ".".join(str(p) for p in item["loc"]) or "(document)"
            errors.setdefault(field, item["msg"].removeprefix("Value error, "))
        return None, errors


def parse(form: dict[str, str]) -> tuple[RecordSettings | None, dict[str, Any], dict[str, str]]:
    document, errors = form_document(form)
    if errors:
        _, more = validate({k: v for k, v in document.items() if k not in errors})
        errors.update(more)
        return None, document, errors
    settings, errors = validate(document)
    return settings, document, errors


def template_parts(template: str) -> list[TemplatePart]:
    parts, position = [], 0
    for match in TEMPLATE_REFERENCE.finditer(template):
        if match.start() > position:
            parts.append(TemplatePart(template[position:match.start()], "text"))
        parts.append(TemplatePart(match.group(0), "variable" if match.group(1) in TITLE_VARIABLES else "unknown"))
        position = match.end()
    if position < len(template):
        parts.append(TemplatePart(template[position:], "text"))
    return parts


def _crm_form(crm: str, tags: list[str]) -> list[str]:
    # Zendesk keeps tags in lower case: the platform tag is stored as "ujet" there.
    return [t.lower() for t in tags] if crm == "zendesk" else tags


def previews(document: dict[str, Any], crm: str, sample: SessionState | None) -> Previews:
    state = sample or EXAMPLE_SESSION
    template = str(document.get("record_title_template") or "")
    locale = str(document.get("record_title_locale") or "en")
    _, template_errors = validate({"record_title_template": template})
    title_error = template_errors.get("record_title_template")
    title = render_title(template, state, locale if locale in ("en", "pt-BR") else "en")
    tag_settings = RecordSettings(add_session_type_tags=bool(document.get("add_session_type_tags")),
                                  add_platform_tag=bool(document.get("add_platform_tag")))
    created = _crm_form(crm, crm_tags(crm, state, tag_settings, creating=True))
    attached = _crm_form(crm, crm_tags(crm, state, tag_settings, creating=False))
    platform = _crm_form(crm, [PLATFORM_TAG]) if tag_settings.add_platform_tag else []
    return Previews(
        example=sample is None,
        session_id=state.session_id,
        title=title,
        title_error=title_error,
        template_parts=template_parts(template),
        crm=crm,
        has_tags=has_tags(crm),
        type_tags=[t for t in created if t not in platform],
        platform_tags=[t for t in created if t in platform],
        attach_tags=attached,
    )


def diff_rows(changes: dict[str, SettingChange]) -> list[tuple[str, Any, Any]]:
    return [(name, change.before, change.after) for name, change in changes.items()]
