"""The service against a rate-limited fake Zendesk (issues 10 and 11): a returning end
user costs one request, a remembered user the CRM lost is looked up again, rows that wait
for the budget longer than their lease are not run (nor published) twice, and two
replicas' budgets together hold the account's limit."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter

import orjson
import pytest
from sqlalchemy import text

from app.adapters.crm.budget import RateBudget, VendorQuota
from app.adapters.crm.factory import crm_account_for
from app.adapters.crm.zendesk import ZendeskAdapter, zendesk_quota
from app.adapters.db import end_users_repo
from app.adapters.db.rate_budget_repo import PostgresBudgetStore
from tests.factories import event_doc, header
from tests.helpers import eventually, new_topics, run_in_process, service_settings
from tests.integration.crm_backends import ZendeskBackend
from tests.integration.kafka_helpers import publish, read_all


def assigned(session_id: str, end_user_id: str, *, email: str | None = "x@example.com") -> list[dict]:
    """A call that is queued and assigned (no end: no summary note, only the record)."""
    session = header(session_id, medium="call", end_user_id=end_user_id,
                     end_user_phone=f"+1555{abs(hash(end_user_id)) % 10**7:07d}", end_user_email=email)
    return [event_doc(session, "queued", 0), event_doc(session, "assigned", 20)]


@pytest.fixture
async def zendesk():
    backend = ZendeskBackend()
    backend.start()
    yield backend
    backend.stop()


async def ticket_of(backend, session_id: str):
    return [t for t in backend.fake.records() if t.get("external_id") == session_id] or None


async def test_returning_end_user_costs_one_request_and_a_lost_user_is_found_again(
    database_url, kafka_bootstrap, zendesk, engine
):
    topics = await new_topics(kafka_bootstrap)
    settings = service_settings(database_url, kafka_bootstrap, topics, **zendesk.settings())
    async with run_in_process(settings) as service:
        await publish(kafka_bootstrap, topics.events, assigned("ret-1", "eu-ret", email="ret@example.com"))
        [first] = await eventually(lambda: ticket_of(zendesk, "ret-1"))
        before = len(zendesk.fake.requests)
        await publish(kafka_bootstrap, topics.events, assigned("ret-2", "eu-ret", email="ret@example.com"))
        [second] = await eventually(lambda: ticket_of(zendesk, "ret-2"))
        await asyncio.sleep(0.5)
        made = [(r.method, r.path) for r in zendesk.fake.requests[before:] if "users/me" not in r.path]
        assert made == [("POST", "/api/v2/tickets")]  # the record itself, nothing else
        assert second["requester_id"] == first["requester_id"]
        async with service.client() as client:
            ready = (await client.get("/readyz")).json()
            scraped = (await client.get("/metrics")).text
            trace = (await client.get("/api/sessions/ret-2")).json()
        quota = ready["checks"]["crm"]["quota"]
        assert quota["vendor_limit"] == zendesk.fake.rate_limit_per_minute and quota["vendor_remaining"] > 0
        assert 'crm_records_crm_quota_remaining{crm="zendesk",window="minute"}' in scraped
        assert 'crm_records_crm_requests_total{crm="zendesk",kind="record",operation="create_record"}' in scraped
        [created] = [d for d in trace["decisions"] if d["kind"] == "record_created"]
        assert "(1 CRM request: create_record POST /tickets)" in created["reason"]

        # The CRM lost that user (deleted, merged): the remembered id is refused, the
        # end user is looked up again, and the new id is remembered.
        account = crm_account_for(service.settings)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE crm_end_users SET crm_user_id = '999999' WHERE crm_account = :a"),
                               {"a": account})
        await publish(kafka_bootstrap, topics.events, assigned("ret-3", "eu-ret", email="ret@example.com"))
        [third] = await eventually(lambda: ticket_of(zendesk, "ret-3"))
        assert third["requester_id"] == first["requester_id"]

        async def remembered():
            async with engine.connect() as conn:
                return await end_users_repo.lookup(conn, account, "eu-ret") == str(first["requester_id"])

        await eventually(remembered)


async def test_rows_waiting_longer_than_their_lease_run_and_publish_once(database_url, kafka_bootstrap, zendesk):
    # 40 requests a minute and a one-second lease: most rows wait for the budget far longer
    # than their lease. Without the heartbeat and the claim fence they were claimed again
    # and their record.created published twice.
    topics = await new_topics(kafka_bootstrap)
    settings = service_settings(database_url, kafka_bootstrap, topics, outbox_lease_seconds=1.0,
                                zendesk_requests_per_minute=40, **zendesk.settings())
    sessions = [f"lease-{n}" for n in range(8)]
    async with run_in_process(settings):
        documents = [d for n, s in enumerate(sessions) for d in assigned(s, f"eu-lease-{n}")]
        await publish(kafka_bootstrap, topics.events, documents)
        await eventually(lambda: _all_made(zendesk, sessions), timeout=90)
        messages = await read_all(kafka_bootstrap, topics.output, expect=len(sessions) + 4, timeout=8)
    created = Counter(orjson.loads(m.value)["session_id"] for m in messages
                      if orjson.loads(m.value)["event_type"] == "record.created")
    assert created == Counter({s: 1 for s in sessions})
    tickets = Counter(t["external_id"] for t in zendesk.fake.records())
    assert tickets == Counter({s: 1 for s in sessions})
    assert not [r for r in zendesk.fake.requests if r.status == 429]


async def _all_made(backend, sessions):
    made = {t.get("external_id") for t in backend.fake.records()}
    return set(sessions) <= made


async def test_two_replicas_share_one_budget_that_holds_the_accounts_limit(zendesk, engine):
    # The account allows 30 requests per 6 s window (a short window stands in for
    # Zendesk's minute) and says so in its headers. Two replicas (two adapters, each with
    # its own budget object, one schedule in PostgreSQL) send 30 requests each at once.
    fake = zendesk.fake
    fake.rate_limit_per_minute, fake.rate_limit_window_seconds = 30, 6.0
    store = PostgresBudgetStore(engine)
    replicas = []
    for _ in range(2):
        budget = RateBudget("zendesk", "zendesk:shared-test", store=store)
        adapter = ZendeskAdapter(fake.base_url, fake.email, fake.api_token, timeout_seconds=5.0,
                                 requests_per_minute=None, budget=budget)
        adapter.http.read_quota = lambda headers: dataclasses.replace(zendesk_quota(headers), window_seconds=6.0)
        replicas.append(adapter)
    # Learn the limit first (the first answer), as a running service would have.
    await replicas[0].check_credentials()
    await asyncio.sleep(0.3)  # the learned pace reaches the shared row
    started = time.monotonic()
    try:
        await asyncio.gather(*(a.check_credentials() for a in replicas for _ in range(30)))
    finally:
        for adapter in replicas:
            await adapter.aclose()
    elapsed = time.monotonic() - started
    assert not [r for r in fake.requests if r.status == 429]
    assert fake.requests_in_window(6.0) <= 30
    # 61 requests at 95 % of 5 per second: the two replicas did not each spend the limit.
    assert elapsed >= 9.0


async def test_the_shared_budget_lets_a_few_requests_go_at_once_and_then_holds_the_pace(engine):
    # Freshdesk's 200 a minute: evenly spaced slots would be 0.32 s apart, so a second
    # record arriving with the first waited that long for nothing. The limit leaves room
    # for a few at once (every minute still holds at most 200); beyond them, the pace.
    store = PostgresBudgetStore(engine)
    budget = RateBudget("freshdesk", f"freshdesk:burst-{time.monotonic_ns()}", store=store)
    budget.observe(VendorQuota(limit=200, remaining=200))
    await asyncio.sleep(0.2)  # the learned pace reaches the shared row
    burst = budget.burst()
    assert burst >= 3
    slots = []  # when each request may go (monotonic seconds)
    for _ in range(burst + 3):
        reservation = await budget.store.reserve(budget.account, budget.pace(), 30.0, burst)
        assert reservation.booked
        slots.append(time.monotonic() + reservation.wait_seconds)
    started = slots[0]
    assert max(slots[:burst + 1]) - started < 0.5  # together, as soon as they asked
    slot = 60.0 / budget.pace()
    assert [slots[burst + 1] - started, slots[burst + 2] - started] == pytest.approx([slot, 2 * slot], abs=0.05)
