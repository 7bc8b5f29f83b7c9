"""The CRM registry (issue 13.5): one entry per CRM names everything the service and the
tests need, and agrees with the settings, the docs and the test doubles."""

from __future__ import annotations

import importlib
import typing

import pytest

from app.adapters.crm.registry import CRMS, crm_spec
from app.settings import PROJECT_ROOT, CrmProvider, Settings


def test_every_crm_provider_value_has_an_entry_and_every_entry_is_a_value():
    assert set(typing.get_args(CrmProvider)) == set(CRMS)


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
