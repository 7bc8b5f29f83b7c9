"""The CRM registry (issue 13.5): one entry per CRM names everything the service and the
tests need, and agrees with the settings, the docs and the test doubles."""

from __future__ import annotations

import importlib
import typing

import pytest
from pydantic import ValidationError

from app.adapters.crm.registry import CRMS, CrmProvider, CrmSettings, crm_spec
from app.settings import PROJECT_ROOT, Settings


def test_every_crm_provider_value_has_an_entry_and_every_entry_is_a_value():
    assert typing.get_args(CrmProvider) == tuple(CRMS)
    assert typing.get_args(Settings.model_fields["crm_provider"].annotation) == tuple(CRMS)


def test_an_unknown_crm_provider_is_refused_naming_the_values_as_before(monkeypatch):
    """The refusal's wording is part of the contract: the registry's order keeps it."""
    monkeypatch.setenv("CRM_PROVIDER", "nope")
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)
    (error,) = refused.value.errors()
    assert error["loc"] == ("crm_provider",)
    assert error["msg"] == "Input should be 'sandbox', 'salesforce', 'zendesk', 'kustomer' or 'freshdesk'"


@pytest.mark.parametrize("name", sorted(CRMS))
def test_a_crms_settings_part_is_composed_into_settings_under_its_own_prefix(name):
    part = crm_spec(name).settings
    assert issubclass(CrmSettings, part) and issubclass(Settings, part)
    assert part.model_fields and all(field.startswith(f"{name}_") for field in part.model_fields)
    for field in (crm_spec(name).account_setting, crm_spec(name).ceiling_setting):
        assert field is None or field in part.model_fields


def test_the_crm_parts_read_the_same_environment_variables_as_before(monkeypatch):
    env = {"CRM_PROVIDER": "zendesk", "ZENDESK_URL": "https://z.example", "ZENDESK_REQUESTS_PER_MINUTE": "7",
           "FRESHDESK_API_KEY": "k", "KUSTOMER_URL": "https://k.example",
           "SALESFORCE_RECORD_OBJECT": "opportunity", "SALESFORCE_SESSION_LOG": "TASK", "SANDBOX_LATENCY_MS": "5"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.zendesk_url == "https://z.example" and settings.crm_requests_per_minute() == 7
    assert settings.freshdesk_api_key is not None and settings.freshdesk_api_key.get_secret_value() == "k"
    assert settings.kustomer_url == "https://k.example" and settings.sandbox_latency_ms == 5
    assert (settings.salesforce_record_object, settings.salesforce_session_log) == ("Opportunity", "task")


def test_a_crm_parts_check_still_refuses_with_its_message(monkeypatch):
    monkeypatch.setenv("CRM_PROVIDER", "salesforce")
    monkeypatch.setenv("SALESFORCE_SESSION_LOG", "case_comment")
    monkeypatch.setenv("SALESFORCE_RECORD_OBJECT", "Account")
    needs_case = "SALESFORCE_SESSION_LOG=case_comment needs SALESFORCE_RECORD_OBJECT=Case"
    with pytest.raises(ValidationError, match=needs_case):
        Settings(_env_file=None)


@pytest.mark.parametrize("name", sorted(CRMS))
def test_an_entry_names_what_exists(name):
    spec = crm_spec(name)
    adapter = spec.adapter_class()
    assert adapter.name == name and callable(adapter.from_settings)
    for field in (spec.account_setting, spec.ceiling_setting):
        assert field is None or field in Settings.model_fields
    if spec.docs:
        assert (PROJECT_ROOT / spec.docs).is_file()
    module, _, backend = spec.test_backend.partition(":")
    assert getattr(importlib.import_module(module), backend).__name__ == backend


def test_an_unknown_crm_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown CRM_PROVIDER 'nope'"):
        crm_spec("nope")
