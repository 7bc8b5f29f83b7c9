"""Zendesk's settings (ZENDESK_*), one part of the service's Settings (app/settings.py
composes every CRM's part through the registry). Reads no environment itself."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class ZendeskSettings(BaseModel):
    zendesk_url: str | None = None
    zendesk_email: str | None = None
    zendesk_api_token: SecretStr | None = None
    zendesk_requests_per_minute: int | None = Field(default=None, ge=1)
