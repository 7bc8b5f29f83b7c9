"""The Salesforce adapter against the fake Salesforce org, over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone

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
from app.adapters.crm.salesforce import SalesforceAdapter, soql_literal, split_comment
from app.settings import Settings
from tests.fakes.salesforce import SalesforceFake

TIMEOUT = 0.5


@pytest.fixture
def fake() -> Iterator[SalesforceFake]:
    server = SalesforceFake()
    server.start()
    yield server
    server.stop()


def make_settings(fake: SalesforceFake, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "crm_provider": "salesforce",
        "salesforce_login_url": fake.base_url,
        "salesforce_client_id": fake.client_id,
        "salesforce_client_secret": fake.client_secret,
        "crm_timeout_seconds": TIMEOUT,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
async def adapter(fake: SalesforceFake) -> AsyncIterator[SalesforceAdapter]:
    crm = SalesforceAdapter.from_settings(make_settings(fake))
    yield crm
    await crm.aclose()


def new_record(session_id: str, contact_id: str, *, medium: str = "call") -> NewRecord:
    return NewRecord(
        session_id=session_id,
        title=f"IVR call {session_id}",
        description=f"Session: {session_id}\nSession type: Voice Inbound (IVR)",
        contact_id=contact_id,
        tags=[],
        medium=medium,
        queue_id="q-1",
        idempotency_key=f"record:{session_id}",
    )


async def a_contact(fake: SalesforceFake) -> str:
    return fake.add_contact(LastName="Lovelace", Phone="+15550001111")


# --- configuration and credentials --------------------------------------------------------------


def test_missing_client_id_names_the_variable(fake: SalesforceFake) -> None:
    with pytest.raises(CrmNotConfigured, match="SALESFORCE_CLIENT_ID"):
        SalesforceAdapter.from_settings(make_settings(fake, salesforce_client_id=None))
    with pytest.raises(CrmNotConfigured, match="SALESFORCE_CLIENT_SECRET"):
        SalesforceAdapter.from_settings(make_settings(fake, salesforce_client_secret=None))


async def test_check_credentials_accepts_good_credentials(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    await adapter.check_credentials()
    paths = [(r.method, r.path, r.status) for r in fake.requests]
    assert paths == [
        ("POST", "/services/oauth2/token", 200),
        ("GET", "/services/data/v60.0/sobjects/Case/describe", 200),
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"salesforce_client_secret": "wrong"}, "invalid_client: invalid client credentials"),
        ({"salesforce_client_id": "wrong"}, "invalid_client_id: client identifier invalid"),
    ],
)
async def test_wrong_credentials_raise_auth_error(fake: SalesforceFake, overrides: dict, expected: str) -> None:
    crm = SalesforceAdapter.from_settings(make_settings(fake, **overrides))
    try:
        with pytest.raises(CrmAuthError) as caught:
            await crm.check_credentials()
        assert expected in caught.value.message
        assert fake.token_requests() == 0
    finally:
        await crm.aclose()


async def test_expired_session_fetches_a_new_token_and_retries_once(
    fake: SalesforceFake, adapter: SalesforceAdapter
) -> None:
    contact = await a_contact(fake)
    ref = await adapter.create_record(new_record("s-exp", contact))
    fake.expire_tokens()
    existing = await adapter.get_record(ref.record_id)
    assert existing is not None and existing.status == "New"
    assert fake.token_requests() == 2
    refused = [r for r in fake.requests if r.status == 401]
    assert len(refused) == 1


async def test_concurrent_first_calls_fetch_one_token(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    await asyncio.gather(*(adapter.find_record_by_session(f"s-{i}") for i in range(5)))
    assert fake.token_requests() == 1


# --- end users ----------------------------------------------------------------------------------


async def test_end_user_found_by_phone_then_email_else_created(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    older_by_phone = fake.add_contact(LastName="Old", Phone="+15550000001")
    by_phone = fake.add_contact(LastName="Byphone", Phone="+15550000001")
    by_email = fake.add_contact(LastName="Byemail", Email="grace@example.com")

    found = await adapter.find_or_create_end_user(
        EndUserInfo(id="u1", name="A", phone="+15550000001", email="grace@example.com")
    )
    assert found == by_phone != older_by_phone  # newest match first

    found = await adapter.find_or_create_end_user(
        EndUserInfo(id="u2", name="G", phone="+15559999999", email="grace@example.com")
    )
    assert found == by_email

    created = await adapter.find_or_create_end_user(
        EndUserInfo(id="u3", name="Ada King Lovelace", phone="+15557777777", email="ada@example.com")
    )
    assert created not in (by_phone, by_email, older_by_phone)
    contact = next(c for c in fake.users() if c["Id"] == created)
    assert (contact["FirstName"], contact["LastName"]) == ("Ada King", "Lovelace")
    assert (contact["Phone"], contact["Email"]) == ("+15557777777", "ada@example.com")

    again = await adapter.find_or_create_end_user(
        EndUserInfo(id="u3", name="Ada King Lovelace", phone="+15557777777", email="ada@example.com")
    )
    assert again == created
    assert len(fake.users()) == 4


async def test_end_user_without_name_gets_a_last_name(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    created = await adapter.find_or_create_end_user(EndUserInfo(id="u9", name=None, phone=None, email="x@example.com"))
    contact = next(c for c in fake.users() if c["Id"] == created)
    assert contact["LastName"] == "x@example.com"


async def test_soql_values_are_escaped(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    tricky = "o'hara\\x@example.com"
    expected = fake.add_contact(LastName="O'Hara", Email=tricky)
    fake.add_contact(LastName="Other", Email="other@example.com")
    assert soql_literal("a'b\\c") == "'a\\'b\\\\c'"
    found = await adapter.find_or_create_end_user(EndUserInfo(id="u", name=None, phone=None, email=tricky))
    assert found == expected
    # An injection attempt is just a value that matches nobody: a new contact is made.
    injected = "x' OR Email != '"
    created = await adapter.find_or_create_end_user(EndUserInfo(id="u", name="Eve", phone=injected, email=None))
    assert created != expected


# --- records ------------------------------------------------------------------------------------


async def test_create_record_upserts_by_session_id(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    contact = await a_contact(fake)
    ref = await adapter.create_record(new_record("sess-1", contact))
    again = await adapter.create_record(new_record("sess-1", contact))
    assert again == ref
    [case] = fake.records()
    assert case["Id"] == ref.record_id
    assert case["Subject"] == "IVR call sess-1"
    assert case["Description"].startswith("Session: sess-1")
    assert case["ContactId"] == contact
    assert case["Origin"] == "Phone"
    assert case["CCAI_Session_Id__c"] == "sess-1"
    assert case["Status"] == "New" and case["tags"] == []
    assert ref.url == f"{fake.base_url}/lightning/r/Case/{ref.record_id}/view"
    upserts = [r for r in fake.requests if r.method == "PATCH"]
    assert [r.status for r in upserts] == [201, 200]
    assert upserts[0].path == "/services/data/v60.0/sobjects/Case/CCAI_Session_Id__c/sess-1"


async def test_chat_case_origin_and_long_subject(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    contact = await a_contact(fake)
    record = new_record("chat/1 x", contact, medium="chat")
    long = replace(record, title="T" * 300)
    ref = await adapter.create_record(long)
    [case] = fake.records()
    assert case["Origin"] == "Chat"
    assert case["Subject"] == "T" * 255
    assert case["CCAI_Session_Id__c"] == "chat/1 x"  # the session id survives the URL path
    assert await adapter.find_record_by_session("chat/1 x") == ref


async def test_find_record_by_session(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    contact = await a_contact(fake)
    assert await adapter.find_record_by_session("sess-2") is None
    ref = await adapter.create_record(new_record("sess-2", contact))
    assert await adapter.find_record_by_session("sess-2") == ref


async def test_create_survives_a_dropped_connection(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    contact = await a_contact(fake)
    fake.set_faults(drop_after_create_next=1)
    with pytest.raises(CrmTransientError):
        await adapter.create_record(new_record("sess-drop", contact))
    [created] = fake.records()
    ref = await adapter.create_record(new_record("sess-drop", contact))
    assert ref.record_id == created["Id"]
    assert len(fake.records()) == 1


async def test_create_survives_a_slow_answer(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    contact = await a_contact(fake)
    await adapter.check_credentials()  # the token first, so only the upsert is slow
    fake.set_faults(delay_seconds=TIMEOUT + 0.5)
    with pytest.raises(CrmTransientError, match="timed out"):
        await adapter.create_record(new_record("sess-slow", contact))
    fake.set_faults(delay_seconds=0)
    for _ in range(40):  # the fake finishes the slow upsert after the client gave up
        if fake.records():
            break
        await asyncio.sleep(0.05)
    [created] = fake.records()
    ref = await adapter.create_record(new_record("sess-slow", contact))
    assert ref.record_id == created["Id"]
    assert len(fake.records()) == 1


# --- errors -------------------------------------------------------------------------------------


async def test_429_with_retry_after_is_rate_limited(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    await adapter.check_credentials()
    fake.rate_limit_status = 429
    fake.set_faults(rate_limit_next=1, retry_after_seconds=7)
    with pytest.raises(CrmRateLimited) as caught:
        await adapter.find_record_by_session("s")
    assert caught.value.retry_after == 7
    assert caught.value.status == 429


async def test_request_limit_exceeded_is_rate_limited_and_pauses(
    fake: SalesforceFake, adapter: SalesforceAdapter
) -> None:
    await adapter.check_credentials()
    fake.api_usage = fake.api_limit  # the org's daily allocation is spent
    with pytest.raises(CrmRateLimited) as caught:
        await adapter.find_record_by_session("s")
    assert caught.value.status == 403
    assert caught.value.retry_after == 60
    assert "REQUEST_LIMIT_EXCEEDED" in caught.value.message
    sent = fake.api_requests()
    with pytest.raises(asyncio.TimeoutError):  # the budget holds the next call back
        await asyncio.wait_for(adapter.find_record_by_session("s"), 0.3)
    assert fake.api_requests() == sent


async def test_server_error_is_transient(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    await adapter.check_credentials()
    fake.set_faults(server_error_next=1)
    with pytest.raises(CrmTransientError) as caught:
        await adapter.find_record_by_session("s")
    assert caught.value.status == 503 and "SERVER_UNAVAILABLE" in caught.value.message
    assert await adapter.find_record_by_session("s") is None


async def test_validation_error_is_permanent_with_salesforce_words(
    fake: SalesforceFake, adapter: SalesforceAdapter
) -> None:
    with pytest.raises(CrmPermanentError) as caught:
        await adapter.create_record(new_record("sess-bad", "not-a-contact-id"))
    assert caught.value.retryable is False
    assert "MALFORMED_ID: Contact ID: id value of incorrect type: not-a-contact-id" in caught.value.message
    assert "(fields: ContactId)" in caught.value.message
    assert fake.records() == []


# --- status, reopen, notes ----------------------------------------------------------------------


async def test_get_record_open_closed_and_unknown(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    contact = await a_contact(fake)
    ref = await adapter.create_record(new_record("sess-st", contact))

    open_case = await adapter.get_record(ref.record_id)
    assert open_case is not None
    assert (open_case.status, open_case.is_closed, open_case.closed_at) == ("New", False, None)
    assert open_case.can_reopen is True and open_case.url == ref.url

    closed_at = datetime(2024, 1, 15, 10, 30, 5, 123000, tzinfo=timezone.utc)
    fake.close_record(ref.record_id, closed_at)
    closed = await adapter.get_record(ref.record_id)
    assert closed is not None
    assert (closed.status, closed.is_closed, closed.closed_at) == ("Closed", True, closed_at)
    assert closed.closed_at.utcoffset() == timedelta(0)
    assert closed.can_reopen is True

    assert await adapter.get_record("500000000000000AAA") is None


async def test_reopen_sets_new(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    contact = await a_contact(fake)
    ref = await adapter.create_record(new_record("sess-re", contact))
    fake.set_status(ref.record_id, "Closed", datetime.now(timezone.utc))
    await adapter.reopen_record(ref.record_id)
    [case] = fake.records()
    assert (case["Status"], case["IsClosed"], case["ClosedDate"]) == ("New", False, None)
    reopened = await adapter.get_record(ref.record_id)
    assert reopened is not None and not reopened.is_closed


async def test_attach_session_and_add_note_are_private_comments(
    fake: SalesforceFake, adapter: SalesforceAdapter
) -> None:
    contact = await a_contact(fake)
    ref = await adapter.create_record(new_record("sess-n", contact))
    await adapter.attach_session(ref.record_id, "Attached session sess-2.", ["ignored_tag"])
    await adapter.add_note(ref.record_id, "Session sess-n ended.")
    notes = fake.notes_for(ref.record_id)
    assert [n["CommentBody"] for n in notes] == ["Attached session sess-2.", "Session sess-n ended."]
    assert all(n["IsPublished"] is False for n in notes)
    [case] = fake.records()
    assert case["tags"] == [] and len(case["comments"]) == 2


async def test_long_note_is_split_into_comments(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    contact = await a_contact(fake)
    ref = await adapter.create_record(new_record("sess-long", contact))
    transcript = "\n".join(f"[2024-01-01T00:00:{i % 60:02d}Z] End user: héllo {i}" for i in range(300))
    await adapter.add_note(ref.record_id, transcript)
    bodies = [n["CommentBody"] for n in fake.notes_for(ref.record_id)]
    assert len(bodies) > 1
    assert all(len(b.encode()) <= 4000 for b in bodies)
    assert "".join(bodies) == transcript


def test_split_comment_cuts_an_overlong_line_by_bytes() -> None:
    text = "é" * 3000  # 6000 bytes, no line end
    parts = split_comment(text)
    assert [len(p.encode()) for p in parts] == [4000, 2000]
    assert "".join(parts) == text


# --- request budget -----------------------------------------------------------------------------


async def test_request_budget_limits_rest_calls(fake: SalesforceFake) -> None:
    crm = SalesforceAdapter.from_settings(make_settings(fake, salesforce_requests_per_minute=3))
    try:
        for i in range(3):
            await crm.find_record_by_session(f"s-{i}")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(crm.find_record_by_session("s-4"), 0.4)
        assert fake.api_requests() == 3
        assert fake.requests_in_window(60) == 4  # the three calls and the (unbudgeted) token
    finally:
        await crm.aclose()
