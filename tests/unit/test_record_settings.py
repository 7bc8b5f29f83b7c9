"""RecordSettings: the administrator's settings document and its validation (contract section 2)."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from app.domain.record_settings import DEFAULT_RECORD_SETTINGS, RecordSettings, SettingChange, settings_changes

# Contract section 2, "default" column, written out independently of the code.
CONTRACT_DEFAULTS = {
    "append_to_open_record_in_leaf_queue": False,
    "append_to_closed_record_within_days": None,
    "delay_call_record_until_connected": False,
    "delay_chat_record_until_consumer_messages": None,
    "create_records_for_abandoned_calls": False,
    "create_records_for_abandoned_chats": "off",
    "abandoned_chat_min_messages": 1,
    "chat_short_abandon_seconds": 10,
    "record_title_template": "{CALL_TYPE} {CALL_ID}",
    "record_title_locale": "en",
    "add_session_type_tags": False,
    "add_platform_tag": False,
}

BOOLEANS = [
    "append_to_open_record_in_leaf_queue", "delay_call_record_until_connected",
    "create_records_for_abandoned_calls", "add_session_type_tags", "add_platform_tag",
]
NULLABLE_COUNTS = ["append_to_closed_record_within_days", "delay_chat_record_until_consumer_messages"]
COUNTS = ["abandoned_chat_min_messages", "chat_short_abandon_seconds"]


def errors_of(document, *, json=False):
    with pytest.raises(ValidationError) as caught:
        if json:
            RecordSettings.model_validate_json(orjson.dumps(document))
        else:
            RecordSettings.model_validate(document)
    return caught.value.errors(include_url=False)


def test_defaults_equal_the_contract():
    assert RecordSettings().model_dump() == CONTRACT_DEFAULTS
    assert DEFAULT_RECORD_SETTINGS.model_dump() == CONTRACT_DEFAULTS
    assert RecordSettings.model_validate({}) == DEFAULT_RECORD_SETTINGS


def test_the_whole_default_document_round_trips_through_json():
    assert RecordSettings.model_validate_json(orjson.dumps(CONTRACT_DEFAULTS)) == DEFAULT_RECORD_SETTINGS


def test_a_full_valid_document_is_accepted():
    document = {
        "append_to_open_record_in_leaf_queue": True,
        "append_to_closed_record_within_days": 7,
        "delay_call_record_until_connected": True,
        "delay_chat_record_until_consumer_messages": 2,
        "create_records_for_abandoned_calls": True,
        "create_records_for_abandoned_chats": "min_messages",
        "abandoned_chat_min_messages": 3,
        "chat_short_abandon_seconds": 0,
        "record_title_template": "{CALL_TYPE} {CALL_ID} {MENU_PATH} {PHONE_NUMBER} {LANGUAGE} {TIMESTAMP}",
        "record_title_locale": "pt-BR",
        "add_session_type_tags": True,
        "add_platform_tag": True,
    }
    assert RecordSettings.model_validate_json(orjson.dumps(document)).model_dump() == document


@pytest.mark.parametrize("mode", ["off", "all", "min_messages"])
def test_abandoned_chat_modes(mode):
    assert RecordSettings(create_records_for_abandoned_chats=mode).create_records_for_abandoned_chats == mode


@pytest.mark.parametrize(
    ("field", "value"),
    [pytest.param(f, v, id=f"{f}={v!r}") for f in BOOLEANS for v in ("true", 1, 0, None, "yes")]
    + [pytest.param(f, v, id=f"{f}={v!r}") for f in NULLABLE_COUNTS + COUNTS for v in ("5", 5.5, True, "null")]
    + [pytest.param(f, None, id=f"{f}=None") for f in COUNTS]
    + [pytest.param("create_records_for_abandoned_chats", v, id=f"abandoned_chats={v!r}")
       for v in ("OFF", "none", True, None, "min-messages")]
    + [pytest.param("record_title_template", v, id=f"template={v!r}") for v in (None, 5, ["{CALL_ID}"])],
)
@pytest.mark.parametrize("via", ["python", "json"])
def test_wrong_types_are_refused_naming_the_field(field, value, via):
    errors = errors_of({field: value}, json=via == "json")
    assert errors
    assert all(e["loc"][0] == field for e in errors)


@pytest.mark.parametrize("field", NULLABLE_COUNTS + COUNTS)
def test_negative_numbers_are_refused(field):
    [error] = errors_of({field: -1})
    assert error["loc"] == (field,)
    assert "greater than or equal to 0" in error["msg"]


@pytest.mark.parametrize("field", NULLABLE_COUNTS)
def test_nullable_numbers_accept_null_and_zero(field):
    assert getattr(RecordSettings.model_validate({field: None}), field) is None
    assert getattr(RecordSettings.model_validate({field: 0}), field) == 0


@pytest.mark.parametrize(
    "field", ["append_to_open_records", "Add_platform_tag", "record_title", "delay_chat_record_until_messages"]
)
def test_unknown_fields_are_refused(field):
    [error] = errors_of({**CONTRACT_DEFAULTS, field: True})
    assert error["loc"] == (field,)
    assert error["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("template", "named"),
    [
        pytest.param("{CALL_TYPE} {AGENT}", "{AGENT}", id="unknown name"),
        pytest.param("{call_id}", "{call_id}", id="wrong case"),
        pytest.param("{0}", "{0}", id="positional"),
        pytest.param("{}", "{}", id="empty braces"),
        pytest.param("{CALL_ID.__class__}", "{CALL_ID.__class__}", id="attribute access"),
        pytest.param("{CALL_ID!r}", "{CALL_ID!r}", id="conversion"),
        pytest.param("{CALL_ID:>10}", "{CALL_ID:>10}", id="format spec"),
        pytest.param("{ CALL_ID }", "{ CALL_ID }", id="spaces inside"),
        pytest.param("{CALL_ID}{AGENT_NAME}", "{AGENT_NAME}", id="unknown one after a known one"),
        pytest.param("{CALL_ID }", "{CALL_ID }", id="trailing space inside"),
        pytest.param("open { then } close", "{ then }", id="braces around words"),
    ],
)
def test_unknown_template_references_are_refused_naming_them(template, named):
    [error] = errors_of({"record_title_template": template})
    assert error["loc"] == ("record_title_template",)
    assert f"unknown variable {named}" in error["msg"]
    assert "{CALL_TYPE}" in error["msg"]  # and it says what is allowed


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("{CALL_TYPE}", id="CALL_TYPE"),
        pytest.param("{CALL_ID}", id="CALL_ID"),
        pytest.param("{MENU_PATH}", id="MENU_PATH"),
        pytest.param("{PHONE_NUMBER}", id="PHONE_NUMBER"),
        pytest.param("{LANGUAGE}", id="LANGUAGE"),
        pytest.param("{TIMESTAMP}", id="TIMESTAMP"),
        pytest.param("Call %s of 100%", id="percent signs are plain text"),
        pytest.param("{{ literal", id="doubled opening brace is plain text"),
        pytest.param("close }} }", id="closing braces are plain text"),
        pytest.param("lone { brace", id="lone opening brace is plain text"),
        pytest.param("{{CALL_ID}}", id="variable inside doubled braces"),
        pytest.param("{{CALL_ID} x}", id="variable then a lone closing brace"),
        pytest.param("Ticket: plain words", id="no variables at all"),
    ],
)
def test_templates_that_are_saved(template):
    assert RecordSettings(record_title_template=template).record_title_template == template


@pytest.mark.parametrize("template", ["", "   "])
def test_blank_templates_are_refused(template):
    [error] = errors_of({"record_title_template": template})
    assert error["loc"] == ("record_title_template",)


def test_settings_are_immutable_once_validated():
    with pytest.raises(ValidationError):
        DEFAULT_RECORD_SETTINGS.add_platform_tag = True  # type: ignore[misc]


def test_settings_changes_lists_only_what_changed():
    after = RecordSettings(add_platform_tag=True, chat_short_abandon_seconds=5)
    assert settings_changes(DEFAULT_RECORD_SETTINGS, after) == {
        "add_platform_tag": SettingChange(False, True),
        "chat_short_abandon_seconds": SettingChange(10, 5),
    }
    assert SettingChange(10, 5).to_document() == {"from": 10, "to": 5}
    assert SettingChange.from_document({"from": 10, "to": 5}) == SettingChange(10, 5)
    first = settings_changes(None, after)
    assert set(first) == set(CONTRACT_DEFAULTS)
    assert all(change.before is None for change in first.values())


@pytest.mark.parametrize("locale", ["en", "pt-BR"])
def test_title_locale_accepts_the_two_contract_values(locale):
    assert RecordSettings.model_validate({"record_title_locale": locale}).record_title_locale == locale


@pytest.mark.parametrize("locale", ["pt", "pt_BR", "fr", "", 1, None])
def test_title_locale_refuses_anything_else_naming_the_field(locale):
    [error] = errors_of({"record_title_locale": locale})
    assert error["loc"] == ("record_title_locale",)
