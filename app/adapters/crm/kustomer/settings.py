"""Kustomer's settings (KUSTOMER_*), one part of the service's Settings (app/settings.py
composes every CRM's part through the registry). Reads no environment itself."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class KustomerSettings(BaseModel):
    kustomer_url: str = "https://api.kustomerapp.com"
    kustomer_api_key: SecretStr | None = None
    kustomer_requests_per_minute: int | None = Field(default=None, ge=1)
