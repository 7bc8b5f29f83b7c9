"""The platform's session types, their display names, and the tag forms CRMs use."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Medium = Literal["call", "chat"]


@dataclass(frozen=True, slots=True)
class SessionType:
    code: str
    medium: Medium
    display_name: str
    call_type: str  # what a title's {CALL_TYPE} renders
    call_type_pt_br: str  # the same, for titles in Brazilian Portuguese (record_title_locale "pt-BR")

    def call_type_in(self, locale: str) -> str:
        return self.call_type_pt_br if locale == "pt-BR" else self.call_type


SESSION_TYPES: dict[str, SessionType] = {
    t.code: t
    for t in (
        # The Portuguese names marked "panel" are the Portuguese panel's own (contract section 1);
        # the rest are the project's, in the same style.
        SessionType("voice_inbound_ivr", "call", "Voice Inbound (IVR)", "IVR call", "Chamada de URA"),  # panel
        SessionType("voice_inbound_ivr_mobile", "call", "Voice Inbound (IVR by Mobile)", "IVR call (app)",
                    "Chamada de URA (app)"),
        SessionType("voice_inbound_app", "call", "Voice Inbound (App)", "Inbound call (app)",
                    "Chamada recebida (app)"),  # panel
        SessionType("voice_inbound_web", "call", "Voice Inbound (Web)", "Inbound call (Web)",
                    "Chamada recebida (Web)"),  # panel
        SessionType("voice_inbound_api", "call", "Voice Inbound (API)", "Inbound call (API)",
                    "Chamada recebida (API)"),
        SessionType("voice_callback_web", "call", "Voice Callback (Web)", "Callback (Web)",
                    "Retorno de chamada (Web)"),
        SessionType("voice_scheduled_app", "call", "Voice Scheduled (App)", "Scheduled voice (app)",
                    "Agendado por voz (app)"),  # panel
        SessionType("voice_scheduled_web", "call", "Voice Scheduled (Web)", "Scheduled call (Web)",
                    "Chamada agendada (Web)"),  # panel
        SessionType("voice_outbound", "call", "Voice Outbound", "Outbound call", "Chamada de saída"),  # panel
        SessionType("voice_outbound_api", "call", "Voice Outbound (API)", "Outbound call (API)",
                    "Chamada de saída (API)"),
        SessionType("voice_campaign", "call", "Voice Campaign", "Campaign call", "Chamada de campanha"),
        SessionType("messaging_inbound_web", "chat", "Messaging Inbound (Web Chat)", "Web chat", "Chat na Web"),
        SessionType("messaging_inbound_app", "chat", "Messaging Inbound (App)", "App chat", "Chat no app"),
        SessionType("messaging_inbound_sms", "chat", "Messaging Inbound (SMS)", "SMS", "SMS"),
        SessionType("messaging_inbound_whatsapp", "chat", "Messaging Inbound (WhatsApp)", "WhatsApp", "WhatsApp"),
        SessionType("messaging_outbound_sms", "chat", "Messaging Outbound (SMS)", "Outbound SMS", "SMS de saída"),
        SessionType("messaging_outbound_sms_api", "chat", "Messaging Outbound (SMS by API)", "Outbound SMS (API)",
                    "SMS de saída (API)"),
    )
}

_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_TRAILING_PAREN = re.compile(r"^(.*\S)\s*\(([^()]*)\)$")


def zendesk_tag(display_name: str) -> str:
    """`Voice Inbound (IVR)` -> `voice_inbound_ivr`."""
    return _NOT_ALNUM.sub("_", display_name.lower()).strip("_")


def kustomer_tag(display_name: str) -> str:
    """`Voice Inbound (IVR)` -> `Voice Inbound - IVR`; a name without ` (X)` is unchanged."""
    match = _TRAILING_PAREN.match(display_name)
    if not match:
        return display_name
    return f"{match.group(1)} - {match.group(2)}"


def freshdesk_tag(display_name: str) -> str:
    return display_name


# How a session type's display name becomes a tag in one CRM. Which CRM uses which form
# is said by the CRM registry (app/adapters/crm/registry.py).
TagForm = Callable[[str], str]
