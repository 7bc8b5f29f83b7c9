"""The panel's form handling and previews, without a browser."""

from __future__ import annotations

import pytest

from app.console.panel import EXAMPLE_SESSION, form_document, parse, previews, template_parts


@pytest.mark.parametrize(
    ("crm", "created", "attached"),
    [
        ("zendesk", ["voice_inbound_ivr", "ujet"], ["voice_inbound_ivr"]),  # Zendesk keeps tags in lower case
        ("kustomer", ["Voice Inbound - IVR", "UJET"], ["Voice Inbound - IVR"]),
        ("freshdesk", ["Voice Inbound (IVR)", "UJET"], ["Voice Inbound (IVR)"]),
    ],
)
def test_tag_preview_in_each_crms_form(crm, created, attached):
    shown = previews({"add_session_type_tags": True, "add_platform_tag": True}, crm, None)
    assert shown.has_tags and shown.example
    assert shown.type_tags + shown.platform_tags == created
    assert shown.attach_tags == attached  # the platform tag is for records this service creates


def test_salesforce_has_no_tags():
    shown = previews({"add_session_type_tags": True, "add_platform_tag": True}, "salesforce", None)
    assert not shown.has_tags and shown.type_tags == [] and shown.platform_tags == []


def test_title_preview_in_portuguese_for_the_example_session():
    shown = previews({"record_title_template": "{CALL_TYPE} - {MENU_PATH}", "record_title_locale": "pt-BR"},
                     "sandbox", None)
    assert shown.title == "Chamada de URA - Billing > Refunds" and shown.session_id == EXAMPLE_SESSION.session_id
    assert shown.title_error is None


def test_an_unknown_variable_is_marked_with_the_apis_reason():
    shown = previews({"record_title_template": "{CALL_ID} {call_type}"}, "sandbox", None)
    assert [p.kind for p in template_parts("{CALL_ID} {call_type}")] == ["variable", "text", "unknown"]
    assert shown.title_error.startswith("unknown variable {call_type}; a title may use only {CALL_TYPE}")


def test_switched_numbers_are_off_unless_their_switch_is_on():
    document, errors = form_document({"append_to_closed_record_within_days": "3",
                                      "delay_chat_record_until_consumer_messages": "2", "delay_chat_record": "on",
                                      "abandoned_chat_min_messages": "1", "chat_short_abandon_seconds": "10"})
    assert errors == {}
    assert document["append_to_closed_record_within_days"] is None
    assert document["delay_chat_record_until_consumer_messages"] == 2


def test_not_a_number_is_an_error_beside_its_field_and_the_rest_is_still_checked():
    settings, _, errors = parse({"abandoned_chat_min_messages": "two", "chat_short_abandon_seconds": "-5",
                                 "record_title_template": "{CALL_ID}"})
    assert settings is None
    assert errors["abandoned_chat_min_messages"] == "must be a whole number"
    assert "greater than or equal to 0" in errors["chat_short_abandon_seconds"]
