"""Builds the CRM adapter that `CRM_PROVIDER` names, from the one Settings object, with
the CRM account's rate budget shared by every replica (kept in PostgreSQL)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from app.adapters.crm.base import CrmAdapter
from app.adapters.crm.budget import PROVISIONAL_PER_MINUTE, RateBudget
from app.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

# The setting that names each CRM's account: two accounts of one vendor have separate
# user ids and separate API limits.
_ACCOUNT_SETTING = {
    "zendesk": "zendesk_url",
    "freshdesk": "freshdesk_url",
    "kustomer": "kustomer_url",
    "salesforce": "salesforce_login_url",
}


def crm_account_for(settings: Settings) -> str:
    """`<crm>:<base URL>`, e.g. `zendesk:https://acme.zendesk.com`; `sandbox` for the sandbox."""
    provider = settings.crm_provider
    field = _ACCOUNT_SETTING.get(provider)
    url = (getattr(settings, field) or "") if field else ""
    return f"{provider}:{str(url).rstrip('/')}" if url else provider


def build_rate_budget(settings: Settings, engine: AsyncEngine | None) -> RateBudget | None:
    if settings.crm_provider == "sandbox":
        return None
    store = None
    if engine is not None:
        from app.adapters.db.rate_budget_repo import PostgresBudgetStore

        store = PostgresBudgetStore(engine)
    return RateBudget(
        settings.crm_provider,
        crm_account_for(settings),
        ceiling_per_minute=settings.crm_requests_per_minute(),
        store=store,
        daily_reserve_share=settings.salesforce_daily_reserve_percent / 100.0,
        # Salesforce announces a daily allocation, no per-minute limit: unpaced but for pauses.
        provisional_per_minute=None if settings.crm_provider == "salesforce" else PROVISIONAL_PER_MINUTE,
    )


def _from_settings(cls, settings: Settings, budget: RateBudget | None):
    # An adapter that does not take the shared budget yet keeps its own per-process one.
    if budget is not None and "budget" in inspect.signature(cls.from_settings).parameters:
        adapter = cls.from_settings(settings, budget=budget)
        adapter.rate_budget = budget  # what /readyz shows of the vendor's quota
        return adapter
    return cls.from_settings(settings)


def build_crm_adapter(settings: Settings, *, engine: AsyncEngine | None = None) -> CrmAdapter:
    provider = settings.crm_provider
    if provider == "sandbox":
        from app.adapters.crm.sandbox import SandboxAdapter

        assert engine is not None, "the sandbox CRM lives in the service's database"
        return SandboxAdapter(engine, latency_ms=settings.sandbox_latency_ms)
    budget = build_rate_budget(settings, engine)
    if provider == "zendesk":
        from app.adapters.crm.zendesk import ZendeskAdapter

        return _from_settings(ZendeskAdapter, settings, budget)
    if provider == "freshdesk":
        from app.adapters.crm.freshdesk import FreshdeskAdapter

        return _from_settings(FreshdeskAdapter, settings, budget)
    if provider == "kustomer":
        from app.adapters.crm.kustomer import KustomerAdapter

        return _from_settings(KustomerAdapter, settings, budget)
    if provider == "salesforce":
        from app.adapters.crm.salesforce import SalesforceAdapter

        return _from_settings(SalesforceAdapter, settings, budget)
    raise ValueError(f"unknown CRM_PROVIDER {provider!r}")
