"""The Salesforce adapter against the fake Salesforce org, over real HTTP, for each record
object (Case, Opportunity, Account): requests per step, linking, open/closed rules,
Tasks, retries after a lost answer, and Salesforce's errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
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
    SessionActivity,
)
from app.adapters.crm.salesforce import SalesforceAdapter, salesforce_quota, soql_literal, split_comment
from app.settings import Settings
from tests.fakes.salesforce import SalesforceFake
from tests.integration import crm_contract as contract

CRM = "salesforce"
TIMEOUT = 3.0  # generous: the machine is shared; no test here waits for it
OBJECTS = ("Case", "Opportunity", "Account")
STARTED = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)


def settings_for(fake: SalesforceFake, **overrides: object) -> Settings:
    return contract.settings_for(fake, crm_timeout_seconds=TIMEOUT, **overrides)



@pytest.fixture(params=OBJECTS)
def fake(request) -> Iterator[SalesforceFake]:
    server = SalesforceFake(record_object=request.param)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def case_fake() -> Iterator[SalesforceFake]:
    server = SalesforceFake()
    server.start()
    yield server
    server.stop()


def activity(session_id: str, *, medium: str = "call", session_type: str = "voice_inbound_ivr",
             contact: str | None = None) -> SessionActivity:
    return SessionActivity(session_id, f"IVR call {session_id}", medium, session_type, STARTED, contact,
                           duration_seconds=185.4, disposition="resolved")


def new_record(session_id: str, *, contact: str | None = None, user: EndUserInfo | None = None,
               medium: str = "call") -> NewRecord:
    return NewRecord(
        session_id=session_id, title=f"IVR call {session_id}",
        description=f"Session: {session_id}\nSession type: Voice Inbound (IVR)", contact_id=contact, tags=[],
        medium=medium, queue_id="q-1", idempotency_key=f"record:{session_id}",
        end_user=user or EndUserInfo("eu-1", "Ada King Lovelace", "+15550001111", "ada@example.com"),
        session=activity(session_id, medium=medium),
    )


def api_calls(fake: SalesforceFake) -> list[tuple[str, str]]:
    return [(r.method, r.path.split("/v60.0/")[-1]) for r in fake.requests if r.path.startswith("/services/data/")]


# --- configuration and credentials --------------------------------------------------------------


def test_missing_client_id_names_the_variable(case_fake: SalesforceFake) -> None:
    with pytest.raises(CrmNotConfigured, match="SALESFORCE_CLIENT_ID"):
        SalesforceAdapter.from_settings(settings_for(case_fake, salesforce_client_id=None))


def test_case_comment_log_is_for_cases_only(case_fake: SalesforceFake) -> None:
    with pytest.raises(ValueError, match="SALESFORCE_SESSION_LOG=case_comment needs SALESFORCE_RECORD_OBJECT=Case"):
        settings_for(case_fake, salesforce_record_object="Opportunity", salesforce_session_log="case_comment")
    with pytest.raises(ValueError, match="SALESFORCE_ACCOUNT_OPEN_VALUE is required"):
        settings_for(case_fake, salesforce_record_object="Account", salesforce_account_open_value=None)


async def test_check_credentials_describes_the_record_object(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    await adapter.check_credentials()
    assert [(r.method, r.path, r.status) for r in fake.requests] == [
        ("POST", "/services/oauth2/token", 200),
        ("GET", f"/services/data/v60.0/sobjects/{fake.record_object}/describe", 200),
    ]


async def test_wrong_secret_is_an_auth_error(case_fake: SalesforceFake) -> None:
    crm = SalesforceAdapter.from_settings(settings_for(case_fake, salesforce_client_secret="wrong"))
    try:
        with pytest.raises(CrmAuthError, match="invalid_client: invalid client credentials"):
            await crm.check_credentials()
    finally:
        await crm.aclose()


async def test_expired_session_fetches_a_new_token_once(case_fake: SalesforceFake) -> None:
    crm = SalesforceAdapter.from_settings(settings_for(case_fake))
    try:
        ref = await crm.create_record(new_record("s-exp"))
        case_fake.expire_tokens()
        await asyncio.gather(*(crm.get_record(ref.record_id) for _ in range(3)))
        assert case_fake.token_requests() == 2
    finally:
        await crm.aclose()


# --- creating records: cost, linking, the session's Task ----------------------------------------


async def test_new_end_user_costs_one_query_and_one_composite(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    ref = await adapter.create_record(new_record("sess-1"))
    assert api_calls(fake) == [("GET", "query"), ("POST", "composite")]
    [record] = fake.records()
    [contact] = fake.users()
    assert record["Id"] == ref.record_id and record["CCAI_Session_Id__c"] == "sess-1"
    assert (contact["FirstName"], contact["LastName"], contact["Phone"]) == ("Ada King", "Lovelace", "+15550001111")
    assert ref.contact_id is not None and ref.contact_id.startswith(contact["Id"])
    assert ref.url == f"{fake.base_url}/lightning/r/{fake.record_object}/{ref.record_id}/view"
    [task] = record["tasks"]
    assert (task["WhoId"], task["Subject"], task["TaskSubtype"], task["CallType"]) == (
        contact["Id"], "IVR call sess-1", "Call", "Inbound")
    assert task["Status"] == "Not Started" and task["ActivityDate"] == "2026-11-23"
    if fake.record_object == "Case":
        assert (record["Subject"], record["ContactId"], record["Origin"]) == ("IVR call sess-1", contact["Id"], "Phone")
    if fake.record_object == "Opportunity":
        assert (record["Name"], record["StageName"], record["ContactId"]) == ("IVR call sess-1", "Prospecting",
                                                                             contact["Id"])
        assert record["CloseDate"] == (datetime.now(UTC).date() + timedelta(days=30)).isoformat()
        [role] = fake.rows("OpportunityContactRole")
        assert (role["OpportunityId"], role["ContactId"], role["IsPrimary"]) == (ref.record_id, contact["Id"], True)
    if fake.record_object == "Account":
        assert (record["Name"], record["Status__c"]) == ("IVR call sess-1", "Active")
        assert contact["AccountId"] == ref.record_id


async def test_composite_graph_where_composite_is_not_found(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    fake.composite_supported = False
    await adapter.create_record(new_record("sess-g1"))
    await adapter.create_record(new_record("sess-g2"))
    assert api_calls(fake) == [("GET", "query"), ("POST", "composite"), ("POST", "composite/graph"),
                               ("GET", "query"), ("POST", "composite/graph")]
    assert {r["CCAI_Session_Id__c"] for r in fake.records()} == {"sess-g1", "sess-g2"}
    assert len(fake.users()) == 1 and len(fake.rows("Task")) == 2


async def test_returning_end_user_costs_one_request(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    first = await adapter.create_record(new_record("sess-a"))
    before = len(api_calls(fake))
    second = await adapter.create_record(new_record("sess-b", contact=first.contact_id))
    assert api_calls(fake)[before:] == [("POST", "composite")]
    assert second.record_id != first.record_id and len(fake.users()) == 1
    assert second.contact_id == first.contact_id or fake.record_object == "Account"


async def test_end_user_found_by_phone_or_email_in_one_query(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    account = fake.add_account(Name="Acme", Status__c="Active")
    by_email = fake.add_contact(LastName="Byemail", Email="ada@example.com", AccountId=account)
    by_phone = fake.add_contact(LastName="Byphone", Phone="+15550001111", AccountId=account)
    ref = await adapter.create_record(new_record("sess-f"))
    assert api_calls(fake)[0] == ("GET", "query")
    assert len(fake.users()) == 2  # nothing created
    assert ref.contact_id.startswith(by_phone) and by_email not in ref.contact_id
    [record] = [r for r in fake.records() if r["Id"] == ref.record_id]
    if fake.record_object == "Opportunity":
        assert record["AccountId"] == account  # the Contact's Account
    if fake.record_object == "Account":
        # The Contact already has an Account: a second one does not take it away.
        assert next(c for c in fake.users() if c["Id"] == by_phone)["AccountId"] == account
        assert record["tasks"][0]["WhoId"] == by_phone


async def test_end_user_without_phone_or_email_is_created_without_a_query(
    fake: SalesforceFake, adapter: SalesforceAdapter
) -> None:
    await adapter.create_record(new_record("sess-n", user=EndUserInfo("eu-9", None, None, None)))
    assert api_calls(fake) == [("POST", "composite")]
    assert fake.users()[0]["LastName"] == "eu-9"


async def test_soql_values_are_escaped(case_fake: SalesforceFake) -> None:
    crm = SalesforceAdapter.from_settings(settings_for(case_fake))
    try:
        tricky = "o'hara\\x@example.com"
        expected = case_fake.add_contact(LastName="O'Hara", Email=tricky)
        assert soql_literal("a'b\\c") == "'a\\'b\\\\c'"
        assert (await crm.find_or_create_end_user(EndUserInfo("u", None, None, tricky))).startswith(expected)
        injected = await crm.find_or_create_end_user(EndUserInfo("u", "Eve", "x' OR Email != '", None))
        assert not injected.startswith(expected)
    finally:
        await crm.aclose()


async def test_retry_after_a_lost_answer_makes_nothing_twice(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    fake.set_faults(drop_after_create_next=1)
    with pytest.raises(CrmTransientError):
        await adapter.create_record(new_record("sess-drop"))
    [made] = fake.records()
    found = await adapter.find_record_by_session("sess-drop")
    assert found is not None and found.record_id == made["Id"]
    # Even a blind resend of the graph, with a Contact to create in it, makes nothing new:
    # Salesforce refuses it for the create-only fields and it takes the existing record.
    before = len(api_calls(fake))
    again = await adapter.create_record(new_record("sess-drop", user=EndUserInfo("eu-x", "No Contact", None, None)))
    assert again.record_id == made["Id"]
    assert len(fake.records()) == 1 and len(fake.users()) == 1 and len(fake.rows("Task")) == 1
    assert api_calls(fake)[before:] == [
        ("POST", "composite"), ("GET", f"sobjects/{fake.record_object}/CCAI_Session_Id__c/sess-drop")]


async def test_a_failed_graph_leaves_nothing_behind(case_fake: SalesforceFake) -> None:
    crm = SalesforceAdapter.from_settings(settings_for(case_fake, salesforce_record_object="Opportunity",
                                                        salesforce_opportunity_stage="Won Somehow"))
    case_fake.record_object = "Opportunity"
    try:
        with pytest.raises(CrmPermanentError) as caught:
            await crm.create_record(new_record("sess-bad"))
        assert "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: StageName: bad value" in caught.value.message
        assert caught.value.retryable is False
        assert case_fake.rows("Opportunity") == [] and case_fake.users() == [] and case_fake.rows("Task") == []
    finally:
        await crm.aclose()


async def test_a_deleted_remembered_contact_is_found_again(case_fake: SalesforceFake) -> None:
    crm = SalesforceAdapter.from_settings(settings_for(case_fake))
    try:
        ref = await crm.create_record(new_record("sess-1"))
        gone = case_fake.users()[0]["Id"]
        with case_fake.lock:
            del case_fake._tables["Contact"][gone]
        second = await crm.create_record(new_record("sess-2", contact=ref.contact_id))
        [contact] = case_fake.users()
        assert contact["Id"] != gone and second.contact_id.startswith(contact["Id"])
    finally:
        await crm.aclose()


def test_opportunity_needs_name_stage_and_close_date(case_fake: SalesforceFake) -> None:
    import httpx

    token = httpx.post(f"{case_fake.base_url}/services/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": case_fake.client_id,
        "client_secret": case_fake.client_secret}).json()["access_token"]
    answer = httpx.post(f"{case_fake.base_url}/services/data/v60.0/sobjects/Opportunity",
                        json={"Name": "x", "StageName": "Prospecting"}, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 400
    assert answer.json()[0]["errorCode"] == "REQUIRED_FIELD_MISSING" and answer.json()[0]["fields"] == ["CloseDate"]


# --- open, closed, reopen -----------------------------------------------------------------------


async def test_open_closed_and_closed_at_per_object(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    ref = await adapter.create_record(new_record("sess-st"))
    opened = await adapter.get_record(ref.record_id)
    assert opened is not None and not opened.is_closed and opened.closed_at is None and opened.url == ref.url
    # After the record was made, as an agent would (OpportunityHistory is in time order).
    now = datetime.now(UTC) + timedelta(seconds=1)
    closed_at = now.replace(microsecond=now.microsecond // 1000 * 1000)
    fake.close_record(ref.record_id, closed_at)
    if fake.record_object == "Opportunity":
        # Marked lost two days later: it closed when it first reached a closed stage.
        fake.set_stage(ref.record_id, "Closed Lost", closed_at + timedelta(days=2))
    closed = await adapter.get_record(ref.record_id)
    assert closed is not None and closed.is_closed and closed.closed_at == closed_at and closed.can_reopen
    await adapter.reopen_record(ref.record_id)
    reopened = await adapter.get_record(ref.record_id)
    assert reopened is not None and not reopened.is_closed
    assert reopened.status == {"Case": "New", "Opportunity": "Prospecting", "Account": "Active"}[fake.record_object]
    assert await adapter.get_record({"Case": "500", "Opportunity": "006", "Account": "001"}[fake.record_object]
                                    + "5g0000999999999") is None


async def test_account_without_a_status_field_is_always_open(case_fake: SalesforceFake) -> None:
    case_fake.record_object = "Account"
    crm = SalesforceAdapter.from_settings(settings_for(case_fake, salesforce_record_object="Account",
                                                        salesforce_account_status_field=None))
    try:
        ref = await crm.create_record(new_record("sess-acc"))
        existing = await crm.get_record(ref.record_id)
        assert existing is not None and not existing.is_closed
        assert "every Account counts as open" in crm.object.rule()
    finally:
        await crm.aclose()


# --- sessions as Tasks --------------------------------------------------------------------------


async def test_appended_session_is_a_task_and_reopen_rides_along(
    fake: SalesforceFake, adapter: SalesforceAdapter
) -> None:
    ref = await adapter.create_record(new_record("sess-1"))
    fake.close_record(ref.record_id, datetime.now(UTC))
    before = len(api_calls(fake))
    chat = activity("chat-2", medium="chat", session_type="messaging_inbound_web", contact=ref.contact_id)
    await adapter.attach_session_activity(ref.record_id, chat, "Attached session chat-2.", reopen=True)
    assert api_calls(fake)[before:] == [("POST", "composite")]
    assert not (await adapter.get_record(ref.record_id)).is_closed
    outbound = activity("call-3", session_type="voice_outbound", contact=ref.contact_id)
    await adapter.attach_session_activity(ref.record_id, outbound, "Attached session call-3.", reopen=False)
    assert api_calls(fake)[before + 2:] == [("PATCH", "sobjects/Task/CCAI_Session_Id__c/call-3")]
    tasks = {t["CCAI_Session_Id__c"]: t for t in fake.tasks_for(ref.record_id)}
    assert (tasks["chat-2"]["TaskSubtype"], tasks["chat-2"].get("CallType")) == ("Task", None)
    assert (tasks["call-3"]["TaskSubtype"], tasks["call-3"]["CallType"]) == ("Call", "Outbound")
    assert tasks["call-3"]["WhoId"] == fake.users()[0]["Id"]


async def test_end_of_session_note_completes_the_task_exactly_once(
    fake: SalesforceFake, adapter: SalesforceAdapter
) -> None:
    ref = await adapter.create_record(new_record("sess-e"))
    session = activity("sess-e", contact=ref.contact_id)
    for unknown in (False, True):  # the retry after a lost answer writes the same Task
        await adapter.complete_session_activity(ref.record_id, session, "Session sess-e ended.", key="note:sess-e",
                                                outcome_unknown=unknown)
    [task] = fake.tasks_for(ref.record_id)
    assert (task["Status"], task["Description"]) == ("Completed", "Session sess-e ended.")
    assert (task["CallDurationInSeconds"], task["CallDisposition"], task["TaskSubtype"]) == (185, "resolved", "Call")


async def test_a_session_already_over_gets_a_completed_task(fake: SalesforceFake, adapter: SalesforceAdapter) -> None:
    record = new_record("sess-ab")
    ref = await adapter.create_record(replace(record, session=replace(record.session, over=True)))
    [task] = fake.tasks_for(ref.record_id)
    assert task["Status"] == "Completed" and task["IsClosed"] is True


async def test_retried_attach_repairs_the_create_only_field(case_fake: SalesforceFake) -> None:
    crm = SalesforceAdapter.from_settings(settings_for(case_fake))
    try:
        ref = await crm.create_record(new_record("sess-1"))
        session = activity("sess-2", contact=ref.contact_id)
        for _ in range(2):
            await crm.attach_session_activity(ref.record_id, session, "Attached session sess-2.", reopen=False)
        assert len(case_fake.tasks_for(ref.record_id)) == 2
        statuses = [r.status for r in case_fake.requests if "Task/CCAI" in r.path]
        assert statuses == [201, 400, 200]  # the second upsert refused TaskSubtype, then sent without it
    finally:
        await crm.aclose()


async def test_case_comment_log_writes_each_note_once(case_fake: SalesforceFake) -> None:
    crm = SalesforceAdapter.from_settings(settings_for(case_fake, salesforce_session_log="case_comment"))
    try:
        ref = await crm.create_record(new_record("sess-c"))
        assert case_fake.rows("Task") == []
        await crm.attach_session_activity(ref.record_id, activity("sess-d"), "Attached session sess-d.", reopen=False)
        transcript = "\n".join(f"[2026-11-23T13:00:{i % 60:02d}Z] End user: héllo {i}" for i in range(300))
        session = activity("sess-c")
        await crm.complete_session_activity(ref.record_id, session, transcript, key="note:sess-c",
                                            outcome_unknown=False)
        written = len(case_fake.notes_for(ref.record_id))
        await crm.complete_session_activity(ref.record_id, session, transcript, key="note:sess-c",
                                            outcome_unknown=True)
        bodies = [n["CommentBody"] for n in case_fake.notes_for(ref.record_id)]
        assert len(bodies) == written > 2 and bodies[0] == "Attached session sess-d."
        assert all(len(b.encode()) <= 4000 and n["IsPublished"] is False
                   for b, n in zip(bodies, case_fake.notes_for(ref.record_id), strict=True))
        assert bodies[-1].endswith(f"[note:sess-c {written - 1}/{written - 1}]")
    finally:
        await crm.aclose()


def test_split_comment_cuts_an_overlong_line_by_bytes() -> None:
    text = "é" * 3000  # 6000 bytes, no line end
    parts = split_comment(text)
    assert [len(p.encode()) for p in parts] == [4000, 2000]
    assert "".join(parts) == text


# --- errors and limits --------------------------------------------------------------------------


async def test_rate_limits_and_server_errors(case_fake: SalesforceFake) -> None:
    crm = SalesforceAdapter.from_settings(settings_for(case_fake))
    try:
        await crm.check_credentials()
        case_fake.rate_limit_status = 429
        case_fake.set_faults(rate_limit_next=1, retry_after_seconds=7)
        with pytest.raises(CrmRateLimited) as caught:
            await crm.find_record_by_session("s")
        assert caught.value.retry_after == 7
        case_fake.set_faults(server_error_next=1)
        with pytest.raises(CrmTransientError, match="SERVER_UNAVAILABLE"):
            await crm.find_record_by_session("s")
        case_fake.api_usage = case_fake.api_limit  # the org's daily allocation is spent
        with pytest.raises(CrmRateLimited) as caught:
            await crm.find_record_by_session("s")
        assert caught.value.status == 403 and "REQUEST_LIMIT_EXCEEDED" in caught.value.message
    finally:
        await crm.aclose()


async def test_limit_info_header_feeds_the_budget(case_fake: SalesforceFake) -> None:
    crm = SalesforceAdapter.from_settings(settings_for(case_fake))
    try:
        case_fake.api_usage = 41
        await crm.find_record_by_session("s")
        state = crm.client.rest.budget.state()
        assert (state.vendor_limit, state.vendor_remaining) == (case_fake.api_limit, case_fake.api_limit - 42)
        assert salesforce_quota({"Sforce-Limit-Info": "api-usage=10018/100000; api-bursts=1/750"}).remaining == 89982
    finally:
        await crm.aclose()


async def test_validation_error_is_permanent_with_salesforce_words(case_fake: SalesforceFake) -> None:
    crm = SalesforceAdapter.from_settings(settings_for(case_fake))
    try:
        with pytest.raises(CrmPermanentError) as caught:
            await crm.create_record(replace(new_record("sess-bad"), contact_id="not-a-contact-id"))
        assert "MALFORMED_ID: ContactId: id value of incorrect type: not-a-contact-id" in caught.value.message
        assert case_fake.records() == []
    finally:
        await crm.aclose()


async def test_plain_protocol_notes_are_completed_tasks(case_fake: SalesforceFake) -> None:
    """Callers that pass only a note's text (no session details) still log it as activity."""
    crm = SalesforceAdapter.from_settings(settings_for(case_fake))
    try:
        ref = await crm.create_record(new_record("sess-p"))
        await crm.attach_session(ref.record_id, "Attached session sess-q.\nmore", ["ignored"])
        await crm.add_note(ref.record_id, "Session sess-p ended.")
        plain = [t for t in case_fake.tasks_for(ref.record_id) if t.get("CCAI_Session_Id__c") is None]
        assert [(t["Subject"], t["Status"]) for t in plain] == [
            ("Attached session sess-q.", "Completed"), ("Session sess-p ended.", "Completed")]
    finally:
        await crm.aclose()
