"""Builds the CRM adapter that `CRM_PROVIDER` names (app/adapters/crm/registry.py says
which class that is), from the one Settings object, with the CRM account's rate budget
shared by every replica (kept in PostgreSQL)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from app.adapters.crm.base import CrmAdapter
from app.adapters.crm.budget import PROVISIONAL_PER_MINUTE, RateBudget
from app.adapters.crm.registry import crm_spec
from app.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


def crm_account_for(settings: Settings) -> str:
    """`<crm>:<base URL>`, e.g. `zendesk:https://acme.zendesk.com`; `sandbox` for the sandbox."""
    provider = settings.crm_provider
    field = crm_spec(provider).account_setting
    url = (getattr(settings, field) or "") if field else ""
    return f"{provider}:{str(url).rstrip('/')}" if url else provider


def build_rate_budget(settings: Settings, engine: AsyncEngine | None) -> RateBudget | None:
    spec = crm_spec(settings.crm_provider)
    if spec.in_database:
        return None
    store = None
    if engine is not None:
        from app.adapters.db.rate_budget_repo import PostgresBudgetStore

        store = PostgresBudgetStore(engine)
    return RateBudget(
        spec.name,
        crm_account_for(settings),
        ceiling_per_minute=settings.crm_requests_per_minute(),
        store=store,
        daily_reserve_share=settings.salesforce_daily_reserve_percent / 100.0,
        # A daily allocation (Salesforce) announces no per-minute limit: unpaced but for pauses.
        provisional_per_minute=PROVISIONAL_PER_MINUTE if spec.per_minute_limit else None,
    )


def build_crm_adapter(settings: Settings, *, engine: AsyncEngine | None = None) -> CrmAdapter:
    spec = crm_spec(settings.crm_provider)
    cls = spec.adapter_class()
    if spec.in_database:
        assert engine is not None, f"the {spec.name} CRM lives in the service's database"
        return cls.from_settings(settings, engine=engine)
    budget = build_rate_budget(settings, engine)
    accepts = inspect.signature(cls.from_settings).parameters
    shared: dict[str, object] = {}
    # An adapter that does not take the shared budget keeps its own per-process one.
    if budget is not None and "budget" in accepts:
        shared["budget"] = budget
    # An adapter with an access token (Salesforce) shares it with every replica.
    if engine is not None and "token_store" in accepts:
        from app.adapters.db.crm_tokens_repo import PostgresTokenStore

        shared["token_store"] = PostgresTokenStore(engine)
    adapter = cls.from_settings(settings, **shared)
    if "budget" in shared:
        adapter.rate_budget = budget  # what /readyz shows of the vendor's quota
    return adapter
