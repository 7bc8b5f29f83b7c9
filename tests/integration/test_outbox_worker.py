"""The outbox worker against a fake CRM over real HTTP: retries with backoff, parking
with the CRM's own reason, slowing down on 429, and every attempt in the trace."""

from __future__ import annotations

import pytest

from tests.factories import call_events
from tests.helpers import eventually, new_topics, run_in_process, service_settings
from tests.integration.crm_backends import ZendeskBackend
from tests.integration.kafka_helpers import publish


@pytest.fixture(scope="module")
async def zendesk_service(database_url, kafka_bootstrap):
    backend = ZendeskBackend()
    backend.start()
    settings = service_settings(database_url, kafka_bootstrap, await new_topics(kafka_bootstrap),
                                outbox_max_attempts=4, **backend.settings())
    async with run_in_process(settings) as service:
        backend.service = service
        yield backend
    backend.stop()


async def trace(service, session_id: str) -> dict:
    async with service.client() as client:
        response = await client.get(f"/api/sessions/{session_id}")
    return response.json() if response.status_code == 200 else {}


async def record_row(service, session_id: str, status: str):
    body = await trace(service, session_id)
    rows = [o for o in body.get("outbox", []) if o["kind"] == "record" and o["status"] == status]
    return body if rows else None


async def settled(service, session_id: str):
    """True once none of the session's outbox rows is still to run (a fault switched on
    after that cannot hit the earlier test's end-of-session note)."""
    body = await trace(service, session_id)
    return bool(body) and all(o["status"] in ("done", "parked") for o in body.get("outbox", []))


async def send(crm, documents):
    settings = crm.service.settings
    await publish(settings.kafka_bootstrap_servers, settings.kafka_topic, documents)


async def test_server_errors_are_retried_until_the_record_is_made(zendesk_service):
    crm = zendesk_service
    crm.fake.set_faults(server_error_next=2)
    await send(crm, call_events("retry-5xx"))
    body = await eventually(lambda: record_row(crm.service, "retry-5xx", "done"))
    failed = [c for c in body["crm_calls"] if c["outcome"] == "failed"]
    assert [c["status_code"] for c in failed] == [503, 503]
    assert body["outbox"][0]["attempts"] == 3
    assert len([r for r in crm.fake.records() if r.get("external_id") == "retry-5xx"]) == 1


async def test_validation_error_is_parked_with_the_crms_message(zendesk_service, engine):
    crm = zendesk_service
    # Zendesk refuses the ticket as invalid (a validation error retrying cannot fix).
    await eventually(lambda: settled(crm.service, "retry-5xx"))
    crm.fake.set_faults(invalid_next=1)
    await send(crm, call_events("parked-1", end_user_id="eu-parked"))
    body = await eventually(lambda: record_row(crm.service, "parked-1", "parked"))
    parked = [d for d in body["decisions"] if d["kind"] == "record_parked"]
    assert parked and "422" in parked[0]["reason"] and "subject" in parked[0]["reason"].lower()
    assert body["outbox"][0]["attempts"] == 1  # not retried: retrying cannot help
    async with crm.service.client() as client:
        metrics = (await client.get("/metrics")).text
    assert 'crm_records_outbox_parked_total{crm="zendesk",kind="record"}' in metrics
    assert 'crm_records_crm_validation_errors_total{crm="zendesk"}' in metrics


async def test_rate_limit_storm_slows_down_without_using_up_attempts(zendesk_service):
    crm = zendesk_service
    await eventually(lambda: settled(crm.service, "parked-1"))
    crm.fake.set_faults(rate_limit_next=6, retry_after_seconds=0.2)
    await send(crm, call_events("storm-1"))
    body = await eventually(lambda: record_row(crm.service, "storm-1", "done"))
    limited = [c for c in body["crm_calls"] if c["status_code"] == 429]
    assert len(limited) == 6  # more than outbox_max_attempts (4), yet not parked
    assert [o["status"] for o in body["outbox"]][0] == "done"

