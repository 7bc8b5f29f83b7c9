"""The OpenAPI document says what the API really does (issue 9, item 3): checked by
reading it, and by schemathesis generating requests from it against the app over ASGI,
with the real database, the admin token, and every answer checked against the document."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.entrypoints.http import create_app
from app.service.consumer_health import ConsumerHealth
from app.service.readiness import CrmHealth
from app.service.startup import StartupProgress
from app.settings import normalize_database_url
from tests.integration.asgi_api import ADMIN, api_settings, build_runtime

# Bounded run time: a few dozen generated requests per operation.
EXAMPLES_PER_OPERATION = 30


def runtime_for(database_url: str):
    # The test client runs each call on an event loop of its own: no pooled connection may
    # outlive one, so every checkout opens a fresh one. Consumer and CRM count as ready:
    # /readyz's 503 is tested where a part is really missing.
    engine = create_async_engine(normalize_database_url(database_url), poolclass=NullPool)
    consumer = ConsumerHealth(stuck_after_seconds=60, joined=True)
    return build_runtime(
        api_settings(database_url), engine, consumer=consumer, startup=StartupProgress(waiting_for=None),
        crm_health=CrmHealth(ok=True, detail="ok"),
    )


def openapi_app(database_url: str):
    return create_app(runtime_for(database_url))


# The schema is read when the module is collected, before the test database exists: the
# app is built on a placeholder database, and the fixture below points it at the real one
# (routes find the runtime in app.state).
APP = openapi_app("postgresql+asyncpg://placeholder@127.0.0.1:1/none")
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture
def on_test_database(database_url, clean_db):
    APP.state.runtime = runtime_for(database_url)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_its_openapi_description(case, on_test_database):
    case.call_and_validate(
        headers={"Authorization": f"Bearer {ADMIN}"},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )


def test_the_document_describes_bodies_auth_and_errors(database_url):
    document = openapi_app(database_url).openapi()
    paths = document["paths"]
    put = paths["/api/settings"]["put"]
    body_schema = put["requestBody"]["content"]["application/json"]["schema"]
    assert "record_title_template" in body_schema["properties"] and body_schema["additionalProperties"] is False
    assert document["components"]["securitySchemes"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            answers = operation["responses"]
            assert "200" in answers, (method, path)
            if not path.startswith("/api/"):
                continue
            assert operation.get("security"), (method, path)
            assert {"401", "422"} <= set(answers), (method, path)
            assert answers["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ValidationErrors")
            if method in ("put", "post"):
                assert "403" in answers, (method, path)
            if "{" in path:
                assert "404" in answers, (method, path)
            assert answers["200"]["content"]["application/json"]["schema"], (method, path)
