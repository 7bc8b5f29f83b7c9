"""The HTTP API: auth, the settings document and its history, readiness, metrics."""

from __future__ import annotations

import httpx
import pytest

from app.domain.record_settings import RecordSettings
from tests.helpers import ADMIN_TOKEN, eventually, run_in_process
from tests.integration.asgi_api import api_settings, asgi_client, build_runtime
from tests.integration.crm_backends import ZendeskBackend


@pytest.fixture
async def runtime(clean_db, database_url):
    """The API in-process over ASGI, on the real database, signed in with ADMIN_API_TOKEN."""
    return build_runtime(api_settings(database_url, admin_api_token=ADMIN_TOKEN, admin_api_tokens=None), clean_db)


@pytest.fixture
async def service(runtime):
    return AsgiService(runtime)


class AsgiService:
    def __init__(self, runtime):
        self.runtime = runtime

    def client(self):
        return asgi_client(self.runtime, ADMIN_TOKEN)


async def test_admin_endpoints_need_the_bearer_token(runtime):
    async with asgi_client(runtime, token=None) as anonymous:
        for path in ("/api/settings", "/api/settings/history", "/api/sessions/x"):
            assert (await anonymous.get(path)).status_code == 401
        assert (await anonymous.put("/api/settings", json={})).status_code == 401
        wrong = await anonymous.get("/api/settings", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await anonymous.get("/healthz")).status_code == 200


async def test_admin_api_refuses_everything_without_a_configured_token(clean_db, database_url):
    unconfigured = build_runtime(api_settings(database_url, admin_api_tokens=None), clean_db)
    for token in ("anything", ADMIN_TOKEN):
        async with asgi_client(unconfigured, token) as client:
            response = await client.get("/api/settings")
            assert response.status_code == 401
            assert "ADMIN_API_TOKEN" in response.json()["detail"]


async def test_the_running_service_serves_the_api_and_the_legacy_token(clean_db, make_settings):
    async with run_in_process(make_settings()) as running:
        async with running.client() as client:
            assert (await client.get("/api/settings")).status_code == 200
            assert (await client.get("/readyz")).json()["status"] == "ready"


async def test_settings_document_round_trip_and_history(service):
    async with service.client() as client:
        defaults = (await client.get("/api/settings")).json()
        assert defaults == RecordSettings().model_dump()
        document = {**defaults, "append_to_open_record_in_leaf_queue": True, "append_to_closed_record_within_days": 7,
                    "record_title_template": "{CALL_TYPE} from {PHONE_NUMBER}"}
        saved = await client.put("/api/settings", json=document, headers={"X-Actor": "ana@example.com"})
        assert saved.status_code == 200 and saved.json() == document
        assert (await client.get("/api/settings")).json() == document
        second = await client.put("/api/settings", json={**document, "add_platform_tag": True})
        assert second.status_code == 200
        history = (await client.get("/api/settings/history")).json()
    assert [h["version"] for h in history] == [2, 1]
    assert history[0]["changes"] == {"add_platform_tag": {"from": False, "to": True}}
    assert history[0]["actor"] == "admin" and history[0]["note"] is None  # ADMIN_API_TOKEN's name
    assert history[1]["actor"] == "admin" and history[1]["note"] == "ana@example.com"
    assert history[1]["changes"]["append_to_closed_record_within_days"] == {"from": None, "to": 7}
    assert history[1]["saved_at"]


@pytest.mark.parametrize(
    ("document", "field", "reason"),
    [
        ({"record_title_template": "{CALL_TYPE} {AGENT}"}, "record_title_template", "{AGENT}"),
        ({"add_platform_tag": "yes"}, "add_platform_tag", "boolean"),
        ({"chat_short_abandon_seconds": -1}, "chat_short_abandon_seconds", "greater than or equal"),
        ({"create_records_for_abandoned_chats": "some"}, "create_records_for_abandoned_chats", "'min_messages'"),
        ({"delay_chat_record_until_consumer_messages": "3"}, "delay_chat_record_until_consumer_messages", "integer"),
        ({"append_to_open_record": True}, "append_to_open_record", "unknown setting"),
    ],
)
async def test_invalid_settings_are_refused_with_field_and_reason_and_nothing_is_saved(
    service, document, field, reason
):
    async with service.client() as client:
        response = await client.put("/api/settings", json=document)
        history = (await client.get("/api/settings/history")).json()
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(e["field"] == field and reason in e["reason"] for e in errors), errors
    assert history == []


async def test_invalid_json_body_is_refused(service):
    async with service.client() as client:
        response = await client.put("/api/settings", content=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "invalid JSON" in response.json()["detail"][0]["reason"]


async def test_unknown_session_is_404(service):
    async with service.client() as client:
        assert (await client.get("/api/sessions/never-seen")).status_code == 404


async def test_metrics_are_prometheus_text(runtime):
    async with asgi_client(runtime, token=None) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    body = response.text
    for name in ("crm_records_events_consumed_total", "crm_records_events_dead_lettered_total",
                 "crm_records_crm_records_total", "crm_records_outbox_rows",
                 "crm_records_outbox_oldest_due_age_seconds", "crm_records_crm_request_duration_seconds"):
        assert f"# TYPE {name.removesuffix('_total')}" in body, name


async def test_readyz_names_a_crm_that_refuses_the_credentials(clean_db, make_settings):
    zendesk = ZendeskBackend()
    zendesk.start()
    try:
        settings = make_settings(**{**zendesk.settings(), "zendesk_api_token": "wrong-token"})
        async with run_in_process(settings, wait_ready=False) as running:
            async with httpx.AsyncClient(base_url=running.base_url) as client:
                async def crm_refused():
                    try:
                        response = await client.get("/readyz")
                    except httpx.HTTPError:
                        return None
                    body = response.json()
                    return (response, body) if "refused" in body["checks"]["crm"].get("detail", "") else None

                response, body = await eventually(crm_refused)
        assert response.status_code == 503
        assert body["not_ready"] == ["crm"] or "crm" in body["not_ready"]
        assert "wrong-token" not in response.text  # secrets are never returned
    finally:
        zendesk.stop()
