"""Freshdesk's settings (FRESHDESK_*), one part of the service's Settings (app/settings.py
composes every CRM's part through the registry). Reads no environment itself."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class FreshdeskSettings(BaseModel):
    freshdesk_url: str | None = None
    freshdesk_api_key: SecretStr | None = None
    freshdesk_external_id_field: str = "cf_ccai_session_id"
    freshdesk_requests_per_minute: int | None = Field(default=None, ge=1)
