"""Rendering: the title template's six variables and nothing else, tag forms per CRM, and the
description and notes a record gets."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.adapters.crm.registry import crm_tags
from app.domain import rendering
from app.domain.rendering import (
    TranscriptLine,
    render_attach_note,
    render_description,
    render_ended_note,
    render_title,
)
from app.domain.session import apply_event
from tests.factories import event_doc, header, to_event
from tests.unit.helpers import call, chat, replay, settings

# --- building a session's state -------------------------------------------------------------------


def state_of(events):
    state = None
    for event in events:
        state = apply_event(state, event)
    return state


def call_state(**header_args):
    return state_of(call("queued assigned", session_id="call-77", **header_args))


# The contract's table, section 1: code -> (display name, CALL_TYPE), written out independently.
SECTION_1 = {
    "voice_inbound_ivr": ("Voice Inbound (IVR)", "IVR call"),
    "voice_inbound_ivr_mobile": ("Voice Inbound (IVR by Mobile)", "IVR call (app)"),
    "voice_inbound_app": ("Voice Inbound (App)", "Inbound call (app)"),
    "voice_inbound_web": ("Voice Inbound (Web)", "Inbound call (Web)"),
    "voice_inbound_api": ("Voice Inbound (API)", "Inbound call (API)"),
    "voice_callback_web": ("Voice Callback (Web)", "Callback (Web)"),
    "voice_scheduled_app": ("Voice Scheduled (App)", "Scheduled voice (app)"),
    "voice_scheduled_web": ("Voice Scheduled (Web)", "Scheduled call (Web)"),
    "voice_outbound": ("Voice Outbound", "Outbound call"),
    "voice_outbound_api": ("Voice Outbound (API)", "Outbound call (API)"),
    "voice_campaign": ("Voice Campaign", "Campaign call"),
    "messaging_inbound_web": ("Messaging Inbound (Web Chat)", "Web chat"),
    "messaging_inbound_app": ("Messaging Inbound (App)", "App chat"),
    "messaging_inbound_sms": ("Messaging Inbound (SMS)", "SMS"),
    "messaging_inbound_whatsapp": ("Messaging Inbound (WhatsApp)", "WhatsApp"),
    "messaging_outbound_sms": ("Messaging Outbound (SMS)", "Outbound SMS"),
    "messaging_outbound_sms_api": ("Messaging Outbound (SMS by API)", "Outbound SMS (API)"),
}

# Tag forms, worked out by hand from the contract's rules: (Zendesk, Kustomer, Freshdesk).
TAG_FORMS = {
    "voice_inbound_ivr": ("voice_inbound_ivr", "Voice Inbound - IVR"),
    "voice_inbound_ivr_mobile": ("voice_inbound_ivr_by_mobile", "Voice Inbound - IVR by Mobile"),
    "voice_inbound_app": ("voice_inbound_app", "Voice Inbound - App"),
    "voice_inbound_web": ("voice_inbound_web", "Voice Inbound - Web"),
    "voice_inbound_api": ("voice_inbound_api", "Voice Inbound - API"),
    "voice_callback_web": ("voice_callback_web", "Voice Callback - Web"),
    "voice_scheduled_app": ("voice_scheduled_app", "Voice Scheduled - App"),
    "voice_scheduled_web": ("voice_scheduled_web", "Voice Scheduled - Web"),
    "voice_outbound": ("voice_outbound", "Voice Outbound"),
    "voice_outbound_api": ("voice_outbound_api", "Voice Outbound - API"),
    "voice_campaign": ("voice_campaign", "Voice Campaign"),
    "messaging_inbound_web": ("messaging_inbound_web_chat", "Messaging Inbound - Web Chat"),
    "messaging_inbound_app": ("messaging_inbound_app", "Messaging Inbound - App"),
    "messaging_inbound_sms": ("messaging_inbound_sms", "Messaging Inbound - SMS"),
    "messaging_inbound_whatsapp": ("messaging_inbound_whatsapp", "Messaging Inbound - WhatsApp"),
    "messaging_outbound_sms": ("messaging_outbound_sms", "Messaging Outbound - SMS"),
    "messaging_outbound_sms_api": ("messaging_outbound_sms_by_api", "Messaging Outbound - SMS by API"),
}


def state_for_type(code):
    medium = "chat" if code.startswith("messaging") else "call"
    return state_of([to_event(event_doc(header("s-1", medium=medium, session_type=code), "queued", 0))])


# --- titles ---------------------------------------------------------------------------------------


def test_default_title_is_call_type_and_session_id():
    assert render_title(settings().record_title_template, call_state()) == "IVR call call-77"


@pytest.mark.parametrize("code", sorted(SECTION_1), ids=lambda c: c)
def test_call_type_renders_the_contract_table(code):
    assert render_title("{CALL_TYPE}", state_for_type(code)) == SECTION_1[code][1]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param("{CALL_ID}", "call-77", id="CALL_ID is the session id"),
        pytest.param("{MENU_PATH}", "Billing > Refunds > Card", id="MENU_PATH joins the queue path with ' > '"),
        pytest.param("{PHONE_NUMBER}", "+551130000000", id="PHONE_NUMBER is the dialed number, not the end user's"),
        pytest.param("{LANGUAGE}", "pt-BR", id="LANGUAGE"),
        pytest.param("{TIMESTAMP}", "2026-11-23T13:00:00Z", id="TIMESTAMP is started_at in UTC"),
        pytest.param("[{CALL_TYPE}] {MENU_PATH} / {LANGUAGE} / {PHONE_NUMBER} @ {TIMESTAMP} #{CALL_ID}",
                     "[IVR call] Billing > Refunds > Card / pt-BR / +551130000000 @ 2026-11-23T13:00:00Z #call-77",
                     id="all six together"),
        pytest.param("{CALL_ID}{CALL_ID}", "call-77call-77", id="a variable used twice"),
    ],
)
def test_title_variables(template, expected):
    state = call_state(queue_path=["Billing", "Refunds", "Card"], end_user_phone="+5511999999999")
    assert render_title(template, state) == expected


def test_timestamp_from_a_non_utc_started_at_is_converted_to_utc():
    started = datetime(2026, 11, 23, 10, 15, 30, tzinfo=timezone(timedelta(hours=-3)))
    assert render_title("{TIMESTAMP}", call_state(started_at=started)) == "2026-11-23T13:15:30Z"


def test_timestamp_with_fractional_seconds_and_positive_offset():
    started = datetime(2026, 11, 24, 5, 0, 1, 999000, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert render_title("{TIMESTAMP}", call_state(started_at=started)) == "2026-11-23T23:30:01Z"


def test_timestamp_without_started_at_is_the_earliest_event_seen_even_out_of_order():
    session = header("call-9", started_at=None)
    later = event_doc(session, "assigned", 60)
    earliest = event_doc(session, "queued", 0)
    earliest["occurred_at"] = "2026-11-23T09:59:59-03:00"  # 12:59:59Z, before BASE_TIME
    state = state_of([to_event(later), to_event(earliest)])
    assert render_title("{TIMESTAMP}", state) == "2026-11-23T12:59:59Z"


@pytest.mark.parametrize(
    ("template", "header_args", "expected"),
    [
        pytest.param("{CALL_ID}|{LANGUAGE}|", {"language": None}, "call-77||", id="no language -> empty"),
        pytest.param("[{PHONE_NUMBER}]", {"phone_number": None}, "[]", id="no dialed number -> empty"),
        pytest.param("<{MENU_PATH}>", {"queue_path": []}, "<>", id="empty queue path -> empty"),
        pytest.param(
            "({TIMESTAMP})", {"started_at": None}, "(2026-11-23T13:00:00Z)", id="no started_at -> first event"
        ),
    ],
)
def test_a_variable_with_no_value_renders_empty(template, header_args, expected):
    assert render_title(template, call_state(**header_args)) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param("%s %d %(CALL_ID)s", "%s %d %(CALL_ID)s", id="printf style stays literal"),
        pytest.param("{{ lone { and } braces", "{{ lone { and } braces", id="doubled and lone braces stay literal"),
        pytest.param("{{CALL_ID}}", "{call-77}", id="{{ is not an escape: the inner variable renders"),
        pytest.param("$CALL_ID ${CALL_ID}", "$CALL_ID $call-77", id="shell style is not interpreted"),
        pytest.param("{0}", "{0}", id="positional field left as written"),
        pytest.param("{CALL_ID.__class__}", "{CALL_ID.__class__}", id="attribute access left as written"),
        pytest.param("{CALL_ID!r} {CALL_ID:>20} {CALL_ID[0]}", "{CALL_ID!r} {CALL_ID:>20} {CALL_ID[0]}",
                     id="conversion, format spec, indexing left as written"),
        pytest.param("{call_id}", "{call_id}", id="variables are case-sensitive"),
    ],
)
def test_nothing_but_the_six_variables_is_interpreted(template, expected):
    """Such templates are refused at save (test_record_settings); if one reached the renderer
    anyway it must still render as written, never be evaluated."""
    assert render_title(template, call_state()) == expected


def test_values_are_not_interpreted_again_after_substitution():
    """A session id or path that itself looks like a template stays as it is."""
    state = call_state(queue_path=["{CALL_ID}", "{0}"])
    state = type(state).from_document({**state.to_document(), "session_id": "{LANGUAGE}%s"})
    assert render_title("{CALL_ID} {MENU_PATH}", state) == "{LANGUAGE}%s {CALL_ID} > {0}"


def _code_names(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def test_no_str_format_anywhere_in_rendering():
    functions = [v for v in vars(rendering).values() if isinstance(v, types.FunctionType)]
    assert render_title in functions
    for function in functions:
        used = _code_names(function.__code__)
        assert not used & {"format", "format_map", "Template", "eval"}, function.__name__


def test_an_empty_title_falls_back_to_the_session_id():
    """A CRM needs a subject: a title whose only variable is empty gets the session id."""
    assert render_title("{LANGUAGE}", call_state(language=None)) == "call-77"


# --- tags -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(SECTION_1), ids=lambda c: c)
def test_session_type_tag_forms_for_all_17_types(code):
    state = state_for_type(code)
    display_name = SECTION_1[code][0]
    zendesk, kustomer = TAG_FORMS[code]
    on = settings(add_session_type_tags=True)
    assert crm_tags("zendesk", state, on, creating=True) == [zendesk]
    assert crm_tags("kustomer", state, on, creating=True) == [kustomer]
    assert crm_tags("freshdesk", state, on, creating=True) == [display_name]
    assert crm_tags("salesforce", state, on, creating=True) == []


@pytest.mark.parametrize("crm", ["zendesk", "kustomer", "freshdesk"])
def test_platform_tag_only_when_a_record_is_created(crm):
    state = state_for_type("voice_outbound")
    both = settings(add_session_type_tags=True, add_platform_tag=True)
    created = crm_tags(crm, state, both, creating=True)
    attached = crm_tags(crm, state, both, creating=False)
    assert sorted(created) == sorted(["UJET", attached[0]])
    assert attached == [{"zendesk": "voice_outbound"}.get(crm, "Voice Outbound")]
    assert crm_tags(crm, state, settings(add_platform_tag=True), creating=True) == ["UJET"]
    assert crm_tags(crm, state, settings(add_platform_tag=True), creating=False) == []


@pytest.mark.parametrize("crm", ["zendesk", "kustomer", "freshdesk", "salesforce"])
def test_no_tags_when_both_options_are_off(crm):
    assert crm_tags(crm, call_state(), settings(), creating=True) == []
    assert crm_tags(crm, call_state(), settings(), creating=False) == []


def test_salesforce_gets_no_tags_whatever_the_options():
    both = settings(add_session_type_tags=True, add_platform_tag=True)
    for creating in (True, False):
        assert crm_tags("salesforce", call_state(), both, creating=creating) == []


# --- description and notes ------------------------------------------------------------------------


def test_description_holds_session_type_language_menu_path_and_contact():
    state = call_state(end_user_email="maria@example.com")
    text = render_description(state)
    for expected in ("call-77", "Voice Inbound (IVR)", "pt-BR", "Billing > Refunds", "Maria Souza",
                     "+5511987654321", "maria@example.com"):
        assert expected in text


def test_attach_note_names_the_session():
    state = call_state()
    assert "call-77" in render_attach_note(state, reopened=False)
    assert render_attach_note(state, reopened=True).startswith("Reopened for session call-77")


def test_ended_note_for_a_call_has_duration_agent_disposition_and_recording():
    state, _ = replay(call("queued assigned connected ended", session_id="call-5"), settings())
    note = render_ended_note(state, [])
    assert "Duration: 2m 00s (120 s)" in note
    assert "Ana Lima <ana@example.com>" in note
    assert "Disposition: resolved" in note
    assert "https://rec.example.com/1.mp3" in note
    assert "Transcript" not in note


def test_ended_note_for_a_chat_has_the_transcript_of_the_messages_seen():
    state, _ = replay(chat("queued eu assigned ag ended"), settings())
    t0 = datetime(2026, 11, 23, 13, 0, 10, tzinfo=UTC)
    lines = [
        TranscriptLine(t0, "end_user", "my order"),
        TranscriptLine(t0 + timedelta(seconds=20), "agent", "which one?"),
    ]
    note = render_ended_note(state, lines)
    assert "Transcript (2 messages):" in note
    assert "[2026-11-23T13:00:10Z] End user: my order" in note
    assert "[2026-11-23T13:00:30Z] Agent: which one?" in note


# The Portuguese panel's names (contract section 1, last column), written out independently; the
# project's own names for the rest follow the same style.
SECTION_1_PT = {
    "voice_inbound_ivr": "Chamada de URA",
    "voice_inbound_ivr_mobile": "Chamada de URA (app)",
    "voice_inbound_app": "Chamada recebida (app)",
    "voice_inbound_web": "Chamada recebida (Web)",
    "voice_inbound_api": "Chamada recebida (API)",
    "voice_callback_web": "Retorno de chamada (Web)",
    "voice_scheduled_app": "Agendado por voz (app)",
    "voice_scheduled_web": "Chamada agendada (Web)",
    "voice_outbound": "Chamada de saída",
    "voice_outbound_api": "Chamada de saída (API)",
    "voice_campaign": "Chamada de campanha",
    "messaging_inbound_web": "Chat na Web",
    "messaging_inbound_app": "Chat no app",
    "messaging_inbound_sms": "SMS",
    "messaging_inbound_whatsapp": "WhatsApp",
    "messaging_outbound_sms": "SMS de saída",
    "messaging_outbound_sms_api": "SMS de saída (API)",
}


@pytest.mark.parametrize("code", sorted(SECTION_1_PT))
def test_call_type_in_portuguese(code):
    assert render_title("{CALL_TYPE}", state_for_type(code), locale="pt-BR") == SECTION_1_PT[code]


def test_portuguese_changes_only_the_call_type():
    state = call_state()
    assert render_title("{CALL_TYPE} {CALL_ID}", state, locale="pt-BR") == "Chamada de URA call-77"
    assert render_title("{CALL_TYPE} {CALL_ID}", state, locale="en") == "IVR call call-77"


def test_tags_are_never_translated():
    # tags take no locale at all: the same settings give the same tags whatever the title's language
    pt = settings(add_session_type_tags=True, record_title_locale="pt-BR")
    assert crm_tags("zendesk", call_state(), pt, creating=True) == ["voice_inbound_ivr"]
