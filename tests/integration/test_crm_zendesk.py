"""The Zendesk adapter against the fake Zendesk account, over real HTTP."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import Any

import httpx
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
from app.adapters.crm.http import RequestBudget
from app.adapters.crm.zendesk import ZendeskAdapter
from tests.fakes.zendesk import ZendeskFake
from tests.integration.crm_contract import TIMEOUT, answered, settings_for

CRM = "zendesk"
CLOSED_AT = datetime(2026, 1, 5, 10, 30, tzinfo=UTC)


async def end_user(adapter: ZendeskAdapter) -> str:
    return await adapter.find_or_create_end_user(EndUserInfo("eu-1", "Ada Caller", "+15550100001", "ada@example.com"))


def new_record(contact_id: str, session_id: str = "sess-1", **changes: Any) -> NewRecord:
    values: dict[str, Any] = {
        "session_id": session_id,
        "title": f"Voice Inbound call {session_id}",
        "description": f"Session: {session_id}\nSession type: Voice Inbound",
        "contact_id": contact_id,
        "tags": ["voice_inbound", "UJET"],
        "medium": "call",
        "queue_id": "q-1",
        "idempotency_key": f"record-{session_id}",
        **changes,
    }
    return NewRecord(**values)


async def created_ticket(adapter: ZendeskAdapter, session_id: str = "sess-1") -> str:
    ref = await adapter.create_record(new_record(await end_user(adapter), session_id))
    return ref.record_id



def retry(record: NewRecord) -> NewRecord:
    """The same record, as the worker sends it when an earlier attempt's outcome is unknown."""
    return dataclasses.replace(record, retrying_unknown_outcome=True)


# --- configuration and credentials ------------------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "variable"),
    [("zendesk_url", "ZENDESK_URL"), ("zendesk_email", "ZENDESK_EMAIL"), ("zendesk_api_token", "ZENDESK_API_TOKEN")],
)
def test_from_settings_names_the_missing_variable(fake: ZendeskFake, missing: str, variable: str) -> None:
    with pytest.raises(CrmNotConfigured, match=variable):
        ZendeskAdapter.from_settings(settings_for(fake, **{missing: None}))


async def test_check_credentials_accepts_the_api_token(adapter: ZendeskAdapter) -> None:
    await adapter.check_credentials()


async def test_wrong_token_is_refused(fake: ZendeskFake) -> None:
    adapter = ZendeskAdapter.from_settings(settings_for(fake, zendesk_api_token="not-the-token"))
    try:
        with pytest.raises(CrmAuthError, match="Couldn't authenticate you"):
            await adapter.check_credentials()
    finally:
        await adapter.aclose()


async def test_anonymous_user_answer_counts_as_refused(fake: ZendeskFake) -> None:
    fake.anonymous_on_bad_credentials = True
    adapter = ZendeskAdapter.from_settings(settings_for(fake, zendesk_email="someone@example.com"))
    try:
        with pytest.raises(CrmAuthError, match="anonymous"):
            await adapter.check_credentials()
    finally:
        await adapter.aclose()


# --- end users -----------------------------------------------------------------------------


async def test_end_user_found_by_exact_phone(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    # Free-text search also returns this longer number; only the exact phone may match.
    fake.add_user("Longer Number", phone="+155501000019")
    wanted = fake.add_user("Ada Caller", phone="+1 555 010 0001")
    found = await adapter.find_or_create_end_user(EndUserInfo("eu-1", "Ada", "+15550100001", "other@example.com"))
    assert found == str(wanted)
    assert len(fake.users()) == 3  # the API agent and the two seeded users: nobody created


async def test_end_user_found_by_email_when_phone_unknown(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    wanted = fake.add_user("Ada Caller", email="ada@example.com")
    found = await adapter.find_or_create_end_user(EndUserInfo("eu-1", "Ada", "+15550100001", "ADA@example.com"))
    assert found == str(wanted)
    assert len(fake.users()) == 2


async def test_end_user_created_once_with_name_phone_email_and_external_id(
    adapter: ZendeskAdapter, fake: ZendeskFake
) -> None:
    info = EndUserInfo("eu-42", "Ada Caller", "+15550100001", "ada@example.com")
    first = await adapter.find_or_create_end_user(info)
    second = await adapter.find_or_create_end_user(info)
    assert first == second
    created = [u for u in fake.users() if u["external_id"] == "eu-42"]
    assert len(created) == 1
    assert {k: created[0][k] for k in ("id", "name", "phone", "email", "role")} == {
        "id": int(first), "name": "Ada Caller", "phone": "+15550100001", "email": "ada@example.com", "role": "end-user",
    }


async def test_end_user_not_yet_searchable_is_found_by_external_id(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    wanted = fake.add_user("Ada Caller", phone="+15550100001", external_id="eu-1", searchable=False)
    found = await adapter.find_or_create_end_user(EndUserInfo("eu-1", "Ada", "+15550100001", None))
    assert found == str(wanted)
    assert len(fake.users()) == 2


async def test_email_taken_by_a_user_search_misses_is_retryable(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    fake.add_user("Ada Caller", email="ada@example.com", searchable=False)
    with pytest.raises(CrmTransientError, match="already being used"):
        await adapter.find_or_create_end_user(EndUserInfo("eu-9", "Ada", None, "ada@example.com"))
    assert len(fake.users()) == 2


# --- creating tickets ------------------------------------------------------------------------


async def test_create_record_sends_subject_private_description_requester_tags_external_id(
    adapter: ZendeskAdapter, fake: ZendeskFake
) -> None:
    contact = await end_user(adapter)
    ref = await adapter.create_record(new_record(contact))
    [ticket] = fake.records()
    assert ref.record_id == str(ticket["id"])
    assert ref.url == f"{fake.base_url}/agent/tickets/{ticket['id']}"
    assert ticket["subject"] == "Voice Inbound call sess-1"
    assert ticket["description"] == "Session: sess-1\nSession type: Voice Inbound"
    assert ticket["requester_id"] == int(contact)
    assert ticket["external_id"] == "sess-1"
    assert ticket["tags"] == ["voice_inbound", "ujet"]
    assert ticket["status"] == "new"
    assert [(c["body"], c["public"]) for c in ticket["comments"]] == [(ticket["description"], False)]
    assert fake.create_requests() == [{"idempotency_key": "record-sess-1", "lookup": "miss"}]


async def test_create_record_twice_gives_one_ticket(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    record = new_record(await end_user(adapter))
    first = await adapter.create_record(record)
    second = await adapter.create_record(record)  # the idempotency key replays the first answer
    assert first == second
    assert len(fake.records()) == 1
    found = await adapter.find_record_by_session("sess-1")
    assert found is not None and found.record_id == first.record_id
    assert await adapter.find_record_by_session("sess-other") is None


async def test_connection_dropped_after_create_then_retry_finds_the_ticket(
    adapter: ZendeskAdapter, fake: ZendeskFake
) -> None:
    record = new_record(await end_user(adapter))
    fake.set_faults(drop_after_create_next=1)
    with pytest.raises(CrmTransientError):
        await adapter.create_record(record)
    [ticket] = fake.records()
    ref = await adapter.create_record(retry(record))
    assert ref.record_id == str(ticket["id"])
    assert len(fake.records()) == 1


async def test_slow_answer_after_create_then_retry_finds_the_ticket(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    record = new_record(await end_user(adapter))
    fake.create_answer_delay_seconds = TIMEOUT * 2
    with pytest.raises(CrmTransientError, match="timed out"):
        await adapter.create_record(record)
    fake.create_answer_delay_seconds = 0.0
    [ticket] = fake.records()  # Zendesk made it; only the answer was late
    ref = await adapter.create_record(retry(record))
    assert ref.record_id == str(ticket["id"])
    assert len(fake.records()) == 1
    assert len(fake.create_requests()) == 1  # the retry found it without posting again
    await answered(fake, "POST", "/api/v2/tickets")  # the late answer, before the next test resets the fake


async def test_every_answer_slow_then_retry_creates_one_ticket(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    record = new_record(await end_user(adapter))
    fake.set_faults(delay_seconds=TIMEOUT * 2)
    with pytest.raises(CrmTransientError, match="timed out"):
        await adapter.create_record(record)
    fake.set_faults(delay_seconds=0.0)
    await answered(fake, "POST", "/api/v2/tickets")  # the late request finishes on the server
    first = await adapter.create_record(retry(record))
    second = await adapter.create_record(retry(record))
    assert first == second
    assert len(fake.records()) == 1


async def test_idempotency_key_reused_for_another_session_is_refused(
    adapter: ZendeskAdapter, fake: ZendeskFake
) -> None:
    contact = await end_user(adapter)
    await adapter.create_record(new_record(contact, "sess-1", idempotency_key="shared-key"))
    with pytest.raises(CrmPermanentError, match="IdempotentRequestError"):
        await adapter.create_record(new_record(contact, "sess-2", idempotency_key="shared-key"))
    assert len(fake.records()) == 1


async def test_fake_replays_a_repeated_create_and_refuses_another_body(fake: ZendeskFake) -> None:
    """Zendesk's documented idempotency, which the adapter relies on for the create itself."""
    body = {"ticket": {"subject": "Hi", "comment": {"body": "Hello", "public": False}}}
    auth = (f"{fake.email}/token", fake.api_token)
    async with httpx.AsyncClient(base_url=fake.base_url, auth=auth) as client:
        first = await client.post("/api/v2/tickets", json=body, headers={"Idempotency-Key": "k1"})
        again = await client.post("/api/v2/tickets", json=body, headers={"Idempotency-Key": "k1"})
        changed = {"ticket": {**body["ticket"], "subject": "Other"}}
        other = await client.post("/api/v2/tickets", json=changed, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, first.headers["x-idempotency-lookup"]) == (201, "miss")
    assert (again.status_code, again.headers["x-idempotency-lookup"]) == (201, "hit")
    assert again.json()["ticket"]["id"] == first.json()["ticket"]["id"]
    assert other.status_code == 400
    assert other.json()["error"] == "IdempotentRequestError"
    assert len(fake.records()) == 1


# --- errors ------------------------------------------------------------------------------------


async def test_rate_limited_answer_gives_retry_after_and_holds_the_next_request(
    adapter: ZendeskAdapter, fake: ZendeskFake
) -> None:
    fake.set_faults(rate_limit_next=1, retry_after_seconds=0.6)
    with pytest.raises(CrmRateLimited) as caught:
        await adapter.check_credentials()
    assert caught.value.retry_after == pytest.approx(0.6)
    started = time.monotonic()
    await adapter.check_credentials()
    assert time.monotonic() - started >= 0.5  # the budget waited out Retry-After


async def test_server_error_is_transient(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    fake.set_faults(server_error_next=1)
    with pytest.raises(CrmTransientError) as caught:
        await adapter.get_record("101")
    assert not isinstance(caught.value, CrmRateLimited)
    assert caught.value.status == 503


async def test_unavailable_with_retry_after_asks_to_wait(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    fake.server_error_retry_after = 3
    fake.set_faults(server_error_next=1)
    with pytest.raises(CrmRateLimited) as caught:
        await adapter.get_record("101")
    assert (caught.value.status, caught.value.retry_after) == (503, 3.0)


async def test_validation_error_is_permanent_with_zendesk_words(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    contact = await end_user(adapter)
    with pytest.raises(CrmPermanentError) as caught:
        await adapter.create_record(new_record(contact, description=""))
    assert not caught.value.retryable
    assert "RecordInvalid" in caught.value.message
    assert "Description: cannot be blank" in caught.value.message
    assert fake.records() == []


# --- reading and updating tickets ----------------------------------------------------------------


async def test_get_record_open_ticket(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    ticket_id = await created_ticket(adapter)
    fake.set_status(ticket_id, "pending")
    existing = await adapter.get_record(ticket_id)
    assert existing is not None
    assert (existing.record_id, existing.status, existing.is_closed) == (ticket_id, "pending", False)
    assert existing.closed_at is None and existing.can_reopen
    assert existing.url == f"{fake.base_url}/agent/tickets/{ticket_id}"


async def test_get_record_solved_ticket_has_solved_time_and_can_reopen(
    adapter: ZendeskAdapter, fake: ZendeskFake
) -> None:
    ticket_id = await created_ticket(adapter)
    fake.set_status(ticket_id, "solved", closed_at=CLOSED_AT)
    await adapter.add_note(ticket_id, "A later note")  # moves updated_at, not the solved time
    existing = await adapter.get_record(ticket_id)
    assert existing is not None
    assert (existing.status, existing.is_closed, existing.closed_at, existing.can_reopen) == (
        "solved", True, CLOSED_AT, True,
    )


async def test_get_record_closed_ticket_cannot_reopen(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    ticket_id = await created_ticket(adapter)
    fake.set_status(ticket_id, "solved", closed_at=CLOSED_AT)
    fake.close_record(ticket_id, datetime(2026, 1, 9, tzinfo=UTC))
    existing = await adapter.get_record(ticket_id)
    assert existing is not None
    assert (existing.status, existing.is_closed, existing.can_reopen) == ("closed", True, False)
    assert existing.closed_at == datetime(2026, 1, 9, tzinfo=UTC)


async def test_get_record_unknown_ticket_is_none(adapter: ZendeskAdapter) -> None:
    assert await adapter.get_record("999999") is None


async def test_reopen_solved_ticket_sets_open(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    ticket_id = await created_ticket(adapter)
    fake.set_status(ticket_id, "solved", closed_at=CLOSED_AT)
    await adapter.reopen_record(ticket_id)
    [ticket] = fake.records()
    assert (ticket["status"], ticket["reopens"]) == ("open", 1)


async def test_reopen_closed_ticket_is_refused_permanently(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    ticket_id = await created_ticket(adapter)
    fake.close_record(ticket_id, CLOSED_AT)
    with pytest.raises(CrmPermanentError, match="Status: closed prevents ticket update"):
        await adapter.reopen_record(ticket_id)


async def test_attach_session_adds_private_note_and_adds_tags(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    ticket_id = await created_ticket(adapter)
    await adapter.attach_session(ticket_id, "Attached session sess-2", ["chat", "voice_inbound"])
    [ticket] = fake.records()
    assert ticket["tags"] == ["voice_inbound", "ujet", "chat"]
    assert [n["body"] for n in fake.notes_for(ticket_id)][-1] == "Attached session sess-2"
    assert all(not c["public"] for c in ticket["comments"])


async def test_add_note_adds_private_comment(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    ticket_id = await created_ticket(adapter)
    await adapter.add_note(ticket_id, "Session sess-1 ended.")
    comments = fake.comments_for(ticket_id)
    assert [(c["body"], c["public"]) for c in comments][-1] == ("Session sess-1 ended.", False)
    assert len(comments) == 2
    assert fake.records()[0]["tags"] == ["voice_inbound", "ujet"]  # a note leaves the tags alone


# --- the request budget --------------------------------------------------------------------------


async def test_requests_per_minute_setting_sets_the_budget(fake: ZendeskFake) -> None:
    adapter = ZendeskAdapter.from_settings(settings_for(fake, zendesk_requests_per_minute=5))
    try:
        assert adapter.http.budget is not None and adapter.http.budget.per_minute == 5
    finally:
        await adapter.aclose()


async def test_budget_keeps_under_the_account_limit(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    # The account allows 5 requests per window; a short window stands in for Zendesk's minute.
    # The fake's window is shorter than the budget's, leaving 300 ms for a request that
    # arrives late on a busy machine: a budget that let 6 through would still be refused.
    fake.rate_limit_per_minute, fake.rate_limit_window_seconds = 5, 0.7
    adapter.http.budget = RequestBudget(5, window_seconds=1.0)
    started = time.monotonic()
    for _ in range(8):
        await adapter.check_credentials()
    assert time.monotonic() - started >= 0.95
    assert fake.requests_in_window(0.7) <= 5
    assert all(r.status == 200 for r in fake.requests)


async def test_without_budget_the_account_limit_answers_429(adapter: ZendeskAdapter, fake: ZendeskFake) -> None:
    fake.rate_limit_per_minute, fake.rate_limit_window_seconds = 5, 0.9
    adapter.http.budget = RequestBudget(100, window_seconds=1.0)
    with pytest.raises(CrmRateLimited) as caught:
        for _ in range(8):
            await adapter.check_credentials()
    assert caught.value.retry_after >= 1
