"""Builds the CRM adapter that `CRM_PROVIDER` names, from the one Settings object."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.adapters.crm.base import CrmAdapter
from app.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


def build_crm_adapter(settings: Settings, *, engine: AsyncEngine | None = None) -> CrmAdapter:
    provider = settings.crm_provider
    if provider == "sandbox":
        from app.adapters.crm.sandbox import SandboxAdapter

        assert engine is not None, "the sandbox CRM lives in the service's database"
        return SandboxAdapter(engine, latency_ms=settings.sandbox_latency_ms)
    if provider == "zendesk":
        from app.adapters.crm.zendesk import ZendeskAdapter

        return ZendeskAdapter.from_settings(settings)
    if provider == "freshdesk":
        from app.adapters.crm.freshdesk import FreshdeskAdapter

        return FreshdeskAdapter.from_settings(settings)
    if provider == "kustomer":
        from app.adapters.crm.kustomer import KustomerAdapter

        return KustomerAdapter.from_settings(settings)
    if provider == "salesforce":
        from app.adapters.crm.salesforce import SalesforceAdapter

        return SalesforceAdapter.from_settings(settings)
    raise ValueError(f"unknown CRM_PROVIDER {provider!r}")
