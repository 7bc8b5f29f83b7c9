"""The administrator's record-creation settings document, with its validation rules."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TITLE_VARIABLES = ("CALL_TYPE", "CALL_ID", "MENU_PATH", "PHONE_NUMBER", "LANGUAGE", "TIMESTAMP")
DEFAULT_TITLE_TEMPLATE = "{CALL_TYPE} {CALL_ID}"
# Anything between braces is a variable reference; nothing else in a template means anything.
TEMPLATE_REFERENCE = re.compile(r"\{([^{}]*)\}")

AbandonedChatsMode = Literal["off", "all", "min_messages"]
# The language of a title's {CALL_TYPE}; tags are never translated.
TitleLocale = Literal["en", "pt-BR"]
TITLE_LOCALES: tuple[str, ...] = ("en", "pt-BR")


class RecordSettings(BaseModel):
    # strict: `"true"` is not a boolean and `"5"` is not a number; unknown fields are refused
    # so that a misspelt option is not silently ignored.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    append_to_open_record_in_leaf_queue: bool = False
    append_to_closed_record_within_days: int | None = Field(default=None, ge=0, le=3650)
    delay_call_record_until_connected: bool = False
    delay_chat_record_until_consumer_messages: int | None = Field(default=None, ge=0, le=10000)
    create_records_for_abandoned_calls: bool = False
    create_records_for_abandoned_chats: AbandonedChatsMode = "off"
    abandoned_chat_min_messages: int = Field(default=1, ge=0, le=10000)
    chat_short_abandon_seconds: int = Field(default=10, ge=0, le=86400)
    record_title_template: str = Field(default=DEFAULT_TITLE_TEMPLATE, min_length=1, max_length=255)
    record_title_locale: TitleLocale = "en"
    add_session_type_tags: bool = False
    add_platform_tag: bool = False

    @field_validator("record_title_template")
    @classmethod
    def _only_known_variables(cls, template: str) -> str:
        unknown = [m.group(0) for m in TEMPLATE_REFERENCE.finditer(template) if m.group(1) not in TITLE_VARIABLES]
        if unknown:
            raise ValueError(
                f"unknown variable {unknown[0]}; a title may use only "
                + ", ".join("{" + v + "}" for v in TITLE_VARIABLES)
            )
        if not template.strip():
            raise ValueError("the title template is blank")
        control = next((ch for ch in template if unicodedata.category(ch) in ("Cc", "Cs")), None)
        if control is not None:
            # NUL cannot be stored at all; the other control characters have no place in a CRM's title.
            raise ValueError(f"control character U+{ord(control):04X} is not allowed in a title")
        return template


DEFAULT_RECORD_SETTINGS = RecordSettings()


@dataclass(frozen=True, slots=True)
class SettingChange:
    """What a save did to one field (JSON values; `before` is None on the first save)."""

    before: Any
    after: Any

    def to_document(self) -> dict[str, Any]:
        """As the history stores it and the API shows it: {"from": ..., "to": ...}."""
        return {"from": self.before, "to": self.after}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> SettingChange:
        return cls(document.get("from"), document.get("to"))


def settings_changes(before: RecordSettings | None, after: RecordSettings) -> dict[str, SettingChange]:
    """What a save changed, field by field (every field on the first save, from None)."""
    old = (before or DEFAULT_RECORD_SETTINGS).model_dump()
    new = after.model_dump()
    if before is None:
        return {k: SettingChange(None, v) for k, v in new.items()}
    return {k: SettingChange(old[k], new[k]) for k in new if old[k] != new[k]}
