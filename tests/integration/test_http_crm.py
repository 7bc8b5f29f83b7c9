"""GET /api/crm: the CRM side of the deployment, read only, for any signed-in token."""

from __future__ import annotations

from tests.integration.asgi_api import VIEWER, api_settings, asgi_client, build_runtime


async def test_salesforce_object_and_rule_are_shown(database_url, engine):
    settings = api_settings(database_url, crm_provider="salesforce", salesforce_record_object="Opportunity",
                            salesforce_reopen_stage="Qualification")
    async with asgi_client(build_runtime(settings, engine), token=VIEWER) as client:
        response = await client.get("/api/crm")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["crm"] == "salesforce" and body["record_object"] == "Opportunity"
    assert "OpportunityHistory" in body["open_closed_rule"] and "'Qualification'" in body["open_closed_rule"]
    assert body["has_tags"] is False and "Salesforce has no tags" in body["tags"]


async def test_other_crms_and_no_token(database_url, engine):
    runtime = build_runtime(api_settings(database_url), engine)
    async with asgi_client(runtime) as client:
        body = (await client.get("/api/crm")).json()
    assert body["crm"] == "sandbox" and body["has_tags"] is True and body["record_object"] is None
    async with asgi_client(runtime, token=None) as client:
        assert (await client.get("/api/crm")).status_code == 401
