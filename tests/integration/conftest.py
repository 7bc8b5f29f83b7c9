"""Fixtures of the CRM adapter tests (tests/integration/crm_contract.py): a module names its
CRM in `CRM`, and gets one fake server for the module (`server`: stopping one takes half a
second), reset for each test (`fake`), and the registry's adapter for it (`adapter`). A
module may define `settings_for` (e.g. with a setting of its own) for the adapter to use."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from app.adapters.crm.registry import crm_spec
from tests.integration import crm_contract


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[Any]:
    backend = crm_contract.backend_class(request.module.CRM)()
    backend.start()
    yield backend.fake
    backend.stop()


@pytest.fixture
def fake(server: Any) -> Any:
    if hasattr(server, "reset"):  # the Salesforce fake has none: its tests use fresh ids
        server.reset()
    return server


@pytest.fixture
async def adapter(request: pytest.FixtureRequest, fake: Any) -> AsyncIterator[Any]:
    settings_for = getattr(request.module, "settings_for", crm_contract.settings_for)
    built = crm_spec(fake.name).adapter_class().from_settings(settings_for(fake))
    yield built
    await built.aclose()
