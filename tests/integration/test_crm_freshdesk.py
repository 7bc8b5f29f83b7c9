"""The Freshdesk adapter against the fake Freshdesk (a real HTTP server on a loopback port)."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta

import pytest

from app.adapters.crm.base import (
    CrmAuthError,
    CrmNotConfigured,
    CrmPermanentError,
    CrmRateLimited,
    CrmTransientError,
    EndUserInfo,
    NewRecord,
)
from app.adapters.crm.freshdesk import FreshdeskAdapter
from app.adapters.crm.http import RequestBudget
from app.settings import Settings
from tests.fakes.freshdesk import FreshdeskFake
from tests.integration import crm_contract as contract

CRM = "freshdesk"
TIMEOUT = contract.TIMEOUT


def settings_for(fake: FreshdeskFake, **overrides) -> Settings:
    # A high ceiling: the adapter's own budget must not slow these tests down.
    return contract.settings_for(fake, **{"freshdesk_requests_per_minute": 1000, **overrides})


def new_record(contact_id: str, session_id: str = "sess-1", **changes) -> NewRecord:
    values = dict(
        session_id=session_id,
        title="Inbound call (Web) sess-1",
        description="Session: sess-1\nEnd user: Ann <ann@example.com> & co",
        contact_id=contact_id,
        tags=["Voice Inbound (Web)", "UJET"],
        medium="call",
        queue_id="q-1",
        idempotency_key=f"record:{session_id}",
    )
    values.update(changes)
    return NewRecord(**values)


async def contact(fake: FreshdeskFake) -> str:
    return str(fake.add_contact(name="Ann", email="ann@example.com", phone="+15550001"))



def retry(record: NewRecord) -> NewRecord:
    """The same record, as the worker sends it when an earlier attempt's outcome is unknown."""
    return dataclasses.replace(record, retrying_unknown_outcome=True)


# --- configuration and credentials -----------------------------------------------------------


async def test_missing_url_or_key_is_not_configured(fake):
    with pytest.raises(CrmNotConfigured, match="FRESHDESK_URL"):
        FreshdeskAdapter.from_settings(settings_for(fake, freshdesk_url=None))
    with pytest.raises(CrmNotConfigured, match="FRESHDESK_API_KEY"):
        FreshdeskAdapter.from_settings(settings_for(fake, freshdesk_api_key=None))


async def test_wrong_api_key_is_refused(fake, adapter):
    await adapter.check_credentials()  # the right key passes
    wrong = FreshdeskAdapter.from_settings(settings_for(fake, freshdesk_api_key="not-the-key"))
    try:
        with pytest.raises(CrmAuthError, match="invalid_credentials.*You have to be logged in"):
            await wrong.check_credentials()
    finally:
        await wrong.aclose()


# --- end users ---------------------------------------------------------------------------------


async def test_end_user_found_by_phone_then_mobile_then_email(fake, adapter):
    by_phone = fake.add_contact(name="P", phone="+15550001")
    by_mobile = fake.add_contact(name="M", mobile="+15550002")
    by_email = fake.add_contact(name="E", email="e@example.com")

    found = await adapter.find_or_create_end_user(EndUserInfo("u1", "P", "+15550001", "other@example.com"))
    assert found == str(by_phone)
    assert await adapter.find_or_create_end_user(EndUserInfo("u2", "M", "+15550002", None)) == str(by_mobile)
    assert await adapter.find_or_create_end_user(EndUserInfo("u3", "E", "+15559999", "e@example.com")) == str(by_email)
    assert len(fake.users()) == 3


async def test_end_user_created_with_details_once(fake, adapter):
    user = EndUserInfo("platform-7", "Ann Lee", "+15550007", "ann@example.com")
    first = await adapter.find_or_create_end_user(user)
    second = await adapter.find_or_create_end_user(user)

    assert first == second
    [created] = fake.users()
    assert str(created["id"]) == first
    assert (created["name"], created["phone"], created["email"]) == ("Ann Lee", "+15550007", "ann@example.com")
    assert created["unique_external_id"] == "platform-7"


async def test_end_user_without_name_is_named_after_phone(fake, adapter):
    await adapter.find_or_create_end_user(EndUserInfo("u9", None, "+15550009", None))
    assert fake.users()[0]["name"] == "+15550009"


async def test_end_user_known_only_by_platform_id_is_not_created_twice(fake, adapter):
    # No phone, no email: only the unique external id ties the second call to the first,
    # through Freshdesk's 409 duplicate_value answer.
    user = EndUserInfo("platform-only", "Nameless", None, None)
    first = await adapter.find_or_create_end_user(user)
    second = await adapter.find_or_create_end_user(user)
    assert first == second
    assert len(fake.users()) == 1


async def test_end_user_created_where_external_ids_are_off(fake, adapter):
    fake.unique_external_id_enabled = False
    contact_id = await adapter.find_or_create_end_user(EndUserInfo("u5", "Bo", "+15550005", None))
    [created] = fake.users()
    assert str(created["id"]) == contact_id
    assert created["unique_external_id"] is None


async def test_validation_error_carries_freshdesk_words(fake, adapter):
    with pytest.raises(CrmPermanentError) as refused:
        await adapter.find_or_create_end_user(EndUserInfo("u6", "Bad", None, "not-an-email"))
    assert "It should be in the 'valid email address' format" in refused.value.message
    assert "invalid_value" in refused.value.message
    assert fake.users() == []


# --- creating tickets ----------------------------------------------------------------------------


async def test_create_record_sends_every_field(fake, adapter):
    contact_id = await contact(fake)
    ref = await adapter.create_record(new_record(contact_id))

    [ticket] = fake.records()
    assert ref.record_id == str(ticket["id"])
    assert ref.url == f"{fake.base_url}/a/tickets/{ticket['id']}"
    assert ticket["subject"] == "Inbound call (Web) sess-1"
    assert ticket["description"] == "Session: sess-1<br>End user: Ann &lt;ann@example.com&gt; &amp; co"
    assert ticket["requester_id"] == int(contact_id)
    assert (ticket["status"], ticket["priority"], ticket["source"]) == (2, 1, 3)
    assert ticket["tags"] == ["Voice Inbound (Web)", "UJET"]
    assert ticket["custom_fields"]["cf_ccai_session_id"] == "sess-1"


async def test_chat_ticket_has_chat_source(fake, adapter):
    await adapter.create_record(new_record(await contact(fake), medium="chat"))
    assert fake.records()[0]["source"] == 7


async def test_create_record_twice_makes_one_ticket(fake, adapter):
    record = new_record(await contact(fake))
    first = await adapter.create_record(record)
    second = await adapter.create_record(retry(record))
    assert first == second
    assert len(fake.records()) == 1


async def test_create_after_dropped_connection_returns_the_created_ticket(fake, adapter):
    record = new_record(await contact(fake))
    fake.set_faults(drop_after_create_next=1)
    with pytest.raises(CrmTransientError):
        await adapter.create_record(record)
    assert len(fake.records()) == 1

    again = await adapter.create_record(retry(record))
    assert again.record_id == str(fake.records()[0]["id"])
    assert len(fake.records()) == 1


async def test_create_after_timeout_returns_the_created_ticket(fake, adapter):
    record = new_record(await contact(fake))
    fake.slow_create_seconds = TIMEOUT + 0.3  # the ticket is made, its answer comes too late
    with pytest.raises(CrmTransientError, match="timed out"):
        await adapter.create_record(record)
    fake.slow_create_seconds = 0
    assert len(fake.records()) == 1

    again = await adapter.create_record(retry(record))
    assert again.record_id == str(fake.records()[0]["id"])
    assert len(fake.records()) == 1


async def test_create_when_every_answer_is_slow_leaves_no_duplicate(fake, adapter):
    record = new_record(await contact(fake))
    fake.set_faults(delay_seconds=TIMEOUT + 0.2)
    with pytest.raises(CrmTransientError, match="timed out"):
        await adapter.create_record(record)
    fake.set_faults(delay_seconds=0)
    await contract.answered(fake, "POST", "/api/v2/tickets")  # the slow request finishes on the server
    first = await adapter.create_record(retry(record))
    assert await adapter.create_record(retry(record)) == first
    assert len(fake.records()) == 1


async def test_missing_custom_field_is_a_permanent_error(fake):
    adapter = FreshdeskAdapter.from_settings(settings_for(fake, freshdesk_external_id_field="cf_not_created"))
    try:
        with pytest.raises(CrmPermanentError, match="cf_not_created: Unexpected/invalid field in request"):
            await adapter.create_record(new_record(await contact(fake)))
    finally:
        await adapter.aclose()
    assert fake.records() == []


# --- finding a session's ticket ------------------------------------------------------------------


async def test_find_record_by_session_reads_past_the_search_lag(fake, adapter):
    fake.search_lag_seconds = 300  # the filter API does not know the new ticket yet
    ref = await adapter.create_record(new_record(await contact(fake), session_id="fresh"))
    found = await adapter.find_record_by_session("fresh")
    assert found is not None and (found.record_id, found.url) == (ref.record_id, ref.url)
    assert await adapter.find_record_by_session("never-made") is None


async def test_find_record_by_session_finds_older_tickets_through_the_filter_api(fake, adapter):
    requester = fake.add_contact(name="Old", email="old@example.com")
    old_id = fake.add_ticket(
        requester, created_at=datetime.now(UTC) - timedelta(days=2),
        custom_fields={"cf_ccai_session_id": "old-session"},
    )
    fake.add_ticket(requester, custom_fields={"cf_ccai_session_id": "old-session-2"})

    ref = await adapter.find_record_by_session("old-session")
    assert ref is not None and ref.record_id == str(old_id)
    assert any(r.path == "/api/v2/search/tickets" for r in fake.requests)


# --- errors and limits ---------------------------------------------------------------------------


async def test_rate_limit_answer_is_rate_limited_with_retry_after(fake, adapter):
    fake.set_faults(rate_limit_next=1, retry_after_seconds=7)
    with pytest.raises(CrmRateLimited) as limited:
        await adapter.check_credentials()
    assert limited.value.retry_after == 7


async def test_server_error_is_transient(fake, adapter):
    fake.set_faults(server_error_next=1)
    with pytest.raises(CrmTransientError) as failed:
        await adapter.check_credentials()
    assert failed.value.status == 500
    assert not isinstance(failed.value, CrmRateLimited)


async def test_fake_enforces_its_per_minute_limit_with_the_documented_headers(fake, adapter):
    fake.rate_limit_per_minute = 2
    adapter.http.budget = None  # the fake itself is under test: nothing holds the requests back
    await adapter.check_credentials()
    await adapter.check_credentials()
    with pytest.raises(CrmRateLimited) as limited:
        await adapter.check_credentials()
    assert 50 <= limited.value.retry_after <= 60


async def test_request_budget_spaces_requests(fake):
    adapter = FreshdeskAdapter.from_settings(settings_for(fake, freshdesk_requests_per_minute=5))
    try:
        assert adapter.http.budget is not None and adapter.http.budget.per_minute == 5
        # The same budget with a half-second window, so the test is quick.
        adapter.http.budget = RequestBudget(3, window_seconds=0.5)
        started = time.monotonic()
        for _ in range(7):
            await adapter.check_credentials()
        elapsed = time.monotonic() - started
    finally:
        await adapter.aclose()
    assert elapsed >= 1.0  # 7 requests at 3 per half second need two full windows
    # Where the fake received them: a window shorter than the budget's leaves room for a
    # request that arrives late on a busy machine. With no budget all seven arrive at once.
    assert fake.requests_in_window(0.3) <= 3


# --- reading, reopening, notes and tags ------------------------------------------------------------


async def test_get_record_open_pending_and_custom_statuses(fake, adapter):
    ref = await adapter.create_record(new_record(await contact(fake)))
    opened = await adapter.get_record(ref.record_id)
    assert (opened.status, opened.is_closed, opened.closed_at) == ("Open", False, None)
    assert opened.url == ref.url

    fake.set_status(ref.record_id, 3)
    assert (await adapter.get_record(ref.record_id)).is_closed is False

    fake.custom_statuses[6] = "Waiting on Customer"
    fake.set_status(ref.record_id, 6)
    custom = await adapter.get_record(ref.record_id)
    assert (custom.status, custom.is_closed) == ("6", False)


async def test_get_record_resolved_and_closed_with_closing_time(fake, adapter):
    ref = await adapter.create_record(new_record(await contact(fake)))
    resolved_at = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
    fake.set_status(ref.record_id, 4, closed_at=resolved_at)
    resolved = await adapter.get_record(ref.record_id)
    assert (resolved.status, resolved.is_closed, resolved.closed_at, resolved.can_reopen) == (
        "Resolved", True, resolved_at, True
    )

    closed_at = datetime(2024, 3, 2, 12, 0, tzinfo=UTC)
    fake.close_record(ref.record_id, closed_at)
    closed = await adapter.get_record(ref.record_id)
    assert (closed.status, closed.is_closed, closed.closed_at, closed.can_reopen) == ("Closed", True, closed_at, True)


async def test_get_record_unknown_is_none(adapter):
    assert await adapter.get_record("987654") is None


async def test_reopen_sets_open(fake, adapter):
    ref = await adapter.create_record(new_record(await contact(fake)))
    fake.close_record(ref.record_id, datetime.now(UTC))
    await adapter.reopen_record(ref.record_id)
    [ticket] = fake.records()
    assert ticket["status"] == 2
    assert ticket["stats"]["reopened_at"] is not None


async def test_attach_session_adds_private_note_and_adds_tags(fake, adapter):
    ref = await adapter.create_record(new_record(await contact(fake)))
    fake.set_tags(ref.record_id, ["Voice Inbound (Web)", "UJET", "vip"])  # an agent added one

    await adapter.attach_session(ref.record_id, "Attached session sess-2 <web>\nline two", ["Voice Outbound", "ujet"])

    [ticket] = fake.records()
    assert ticket["tags"] == ["Voice Inbound (Web)", "UJET", "vip", "Voice Outbound"]
    [note] = fake.notes_for(ref.record_id)
    assert note["private"] is True
    assert note["body"] == "Attached session sess-2 &lt;web&gt;<br>line two"


async def test_attach_session_with_known_tags_writes_no_tags(fake, adapter):
    ref = await adapter.create_record(new_record(await contact(fake)))
    await adapter.attach_session(ref.record_id, "note", ["UJET"])
    assert not any(r.method == "PUT" for r in fake.requests)
    assert len(fake.notes_for(ref.record_id)) == 1


async def test_add_note_is_private(fake, adapter):
    ref = await adapter.create_record(new_record(await contact(fake)))
    await adapter.add_note(ref.record_id, "Session sess-1 ended.\nDuration: 1m 05s")
    [note] = fake.notes_for(ref.record_id)
    assert note["private"] is True
    assert note["body_text"] == "Session sess-1 ended.\nDuration: 1m 05s"


async def test_note_on_unknown_ticket_is_permanent(adapter):
    with pytest.raises(CrmPermanentError) as refused:
        await adapter.add_note("987654", "x")
    assert refused.value.status == 404
