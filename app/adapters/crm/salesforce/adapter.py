"""The Salesforce adapter: records are Cases, Opportunities or Accounts
(SALESFORCE_RECORD_OBJECT), end users are Contacts, each session is a Task on its record
(or a CaseComment, SALESFORCE_SESSION_LOG=case_comment). Salesforce has no tags, so tags
passed in are ignored.

Requests (see docs/crm/salesforce.md for the table per object):
* a new end user: one SOQL query matching phone OR email, then one composite request
  (all or nothing, one call) that creates the Contact if none matched, upserts the record by the session id and upserts
  the session's Task: 2 requests (1 when the end user has neither phone nor email);
* a returning end user (the Contact remembered): the composite alone, 1 request;
* an appended session: the record's status (1), then the Task upsert, with the reopen in
  the same composite when the record was closed (1);
* the end-of-session note: one Task upsert (1).
A composite is all or nothing, so a failed one leaves no Contact or record behind; one whose
answer was lost is found by the session id on the retry (`find_record_by_session`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from app.adapters.crm.base import (
    EndUserInfo,
    NewRecord,
    RecordRef,
    SessionActivity,
    required_setting,
)
from app.adapters.crm.budget import RateBudget
from app.adapters.crm.salesforce import activity
from app.adapters.crm.salesforce.client import (
    CRM,
    SalesforceClient,
    SalesforceRefused,
    Subrequest,
    TokenStore,
    soql_literal,
)
from app.adapters.crm.salesforce.objects import ContactLink, RecordObject, build_record_object, quoted
from app.domain.policy import ExistingRecord

if TYPE_CHECKING:
    from app.settings import Settings  # a Settings part lives in this package: no import cycle

FIRST_NAME_MAX = 40
LAST_NAME_MAX = 80
# Salesforce refuses a field it accepts on create only when an upsert updates.
CREATE_ONLY_REFUSED = "INVALID_FIELD_FOR_INSERT_UPDATE"
# A remembered Contact that was deleted or merged away.
CONTACT_GONE = {"INVALID_CROSS_REFERENCE_KEY", "ENTITY_IS_DELETED"}
CONTACT_FIELDS = {"ContactId", "WhoId"}


def contact_ref(contact_id: str, account_id: str | None, account_known: bool) -> str:
    """The end user's CRM reference the service remembers: the Contact id, and after a
    colon its AccountId once read (empty: it has none)."""
    return f"{contact_id}:{account_id or ''}" if account_known else contact_id


def parse_contact_ref(ref: str) -> tuple[str, str | None, bool]:
    contact_id, colon, account_id = ref.partition(":")
    return contact_id, (account_id or None), bool(colon)


def contact_fields(user: EndUserInfo) -> dict[str, str]:
    """LastName is required on Contact: the last word of the name, else whatever
    identifies the end user."""
    words = (user.name or "").split()
    fields: dict[str, str] = {}
    if words:
        fields["LastName"] = words[-1][:LAST_NAME_MAX]
        if len(words) > 1:
            fields["FirstName"] = " ".join(words[:-1])[:FIRST_NAME_MAX]
    else:
        fields["LastName"] = (user.phone or user.email or user.id)[:LAST_NAME_MAX]
    if user.phone:
        fields["Phone"] = user.phone
    if user.email:
        fields["Email"] = user.email
    return fields


class SalesforceAdapter:
    name = CRM
    # The end user's Contact is found and made inside create_record (one query, one composite).
    resolves_end_user = True

    def __init__(
        self,
        client: SalesforceClient,
        record_object: RecordObject,
        *,
        session_log: str = "task",
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
    ):
        self.client = client
        self.object = record_object
        self.session_log = session_log
        self._field = record_object.external_id_field
        self._today = today
        # The CRM account: the key of the end-user mapping and of the rate budget.
        self.account = CRM

    @classmethod
    def from_settings(
        cls, settings: Settings, *, budget: RateBudget | None = None, token_store: TokenStore | None = None,
        **client_options: Any,
    ) -> SalesforceAdapter:
        account = budget.account if budget is not None else f"{CRM}:{settings.salesforce_login_url}"
        client = SalesforceClient(
            login_url=required_setting(settings, "salesforce_login_url"),
            client_id=required_setting(settings, "salesforce_client_id"),
            client_secret=required_setting(settings, "salesforce_client_secret"),
            api_version=settings.salesforce_api_version,
            timeout_seconds=settings.crm_timeout_seconds,
            requests_per_minute=settings.salesforce_requests_per_minute,
            budget=budget,
            token_store=token_store,
            account=account,
            **client_options,
        )
        adapter = cls(client, build_record_object(settings), session_log=settings.salesforce_session_log)
        adapter.account = account
        return adapter

    @property
    def _tasks(self) -> bool:
        return self.session_log == "task"

    # --- credentials and end users ------------------------------------------------------------

    async def check_credentials(self) -> None:
        """Describing the record object with the token in use proves API access; a refused
        token is renewed once (the credentials are then what is proven). No new token is
        asked for while the shared one is accepted: token requests are not free."""
        await self.client.call("check_credentials", "GET", f"sobjects/{self.object.name}/describe")

    async def _match_contact(self, user: EndUserInfo) -> tuple[str, str | None] | None:
        """One query for phone OR email; a phone match wins over an email match, the newest
        Contact over older ones. None without asking when there is nothing to match on."""
        conditions = [f"{f} = {soql_literal(v)}" for f, v in (("Phone", user.phone), ("Email", user.email)) if v]
        if not conditions:
            return None
        rows = await self.client.query(
            "find_end_user",
            f"SELECT Id, AccountId, Phone, Email FROM Contact WHERE {' OR '.join(conditions)} "
            "ORDER BY CreatedDate DESC LIMIT 20",
        )
        for field, value in (("Phone", user.phone), ("Email", user.email)):
            for row in rows:
                if value and row.get(field) == value:
                    return str(row["Id"]), (str(row["AccountId"]) if row.get("AccountId") else None)
        return None

    async def find_or_create_end_user(self, user: EndUserInfo) -> str:
        found = await self._match_contact(user)
        if found is not None:
            return contact_ref(found[0], found[1], True)
        response = await self.client.call("create_end_user", "POST", "sobjects/Contact", json=contact_fields(user))
        return contact_ref(str(response.json()["id"]), None, True)

    # --- records ------------------------------------------------------------------------------

    def _ref(self, record_id: str, contact: str | None = None) -> RecordRef:
        return RecordRef(
            record_id=record_id, url=self.object.url(self.client.instance_url, record_id), contact_id=contact
        )

    async def find_record_by_session(self, session_id: str) -> RecordRef | None:
        fields = ",".join(f for f in ("Id", self.object.contact_field) if f)
        response = await self.client.call(
            "find_record_by_session", "GET", self.object.by_session_path(session_id), params={"fields": fields},
            accept=(404,),
        )
        if response.status_code == 404:
            return None
        body = response.json()
        contact = body.get(self.object.contact_field) if self.object.contact_field else None
        return self._ref(str(body["Id"]), str(contact) if contact else None)

    async def _contact_link(self, record: NewRecord) -> tuple[ContactLink, dict[str, str] | None]:
        """The Contact the record links to, and the fields of one to create when none is known."""
        if record.contact_id:
            contact_id, account_id, known = parse_contact_ref(record.contact_id)
            return ContactLink(contact_id, account_id, known, False), None
        user = record.end_user or EndUserInfo(record.session_id, None, None, None)
        found = await self._match_contact(user)
        if found is not None:
            return ContactLink(found[0], found[1], True, False), None
        return ContactLink("@{Contact.id}", None, True, True), contact_fields(user)

    def _create_nodes(
        self, record: NewRecord, contact: ContactLink, new_contact: dict[str, str] | None
    ) -> list[Subrequest]:
        record_node = Subrequest("Record", "PATCH", self.object.by_session_path(record.session_id),
                                self.object.record_body(record, contact, self._today()))
        contact_node = None
        if new_contact is not None:
            if self.object.name == "Account":  # the Contact is made in the new Account
                new_contact = {**new_contact, "AccountId": "@{Record.id}"}
            contact_node = Subrequest("Contact", "POST", "sobjects/Contact", new_contact)
        ordered = [record_node, contact_node] if self.object.name == "Account" else [contact_node, record_node]
        nodes = [n for n in ordered if n is not None] + self.object.contact_nodes_after(contact)
        if self._tasks and record.session is not None:
            body = activity.task_body("@{Record.id}", contact.value, record.session, record.description)
            nodes.append(Subrequest("Task", "PATCH", activity.task_path(self._field, record.session_id), body))
        return nodes

    async def create_record(self, record: NewRecord) -> RecordRef:
        """One composite request: [Contact] + record upsert + Task upsert, all or nothing.
        Only when an earlier attempt's outcome is unknown is the record looked up first."""
        if record.retrying_unknown_outcome:
            found = await self.find_record_by_session(record.session_id)
            if found is not None:
                return found
        contact, new_contact = await self._contact_link(record)
        nodes = self._create_nodes(record, contact, new_contact)
        result = await self.client.composite("create_record", nodes)
        if not result.ok and CREATE_ONLY_REFUSED in {e.get("errorCode") for e in result.errors}:
            # The record (or its Task) exists: an earlier attempt made it and its answer was
            # lost. Take that record rather than resend (a resend would make a second Contact).
            found = await self.find_record_by_session(record.session_id)
            if found is not None:
                return found
            result = await self.client.composite("create_record", self._without_create_only(nodes))
        if not result.ok and record.contact_id and self._contact_gone(result.errors):
            # The remembered Contact was deleted or merged: find or make it again.
            return await self.create_record(replace(record, contact_id=""))
        if not result.ok:
            raise self.client.composite_error("create_record", result)
        record_id = result.created_id("Record")
        contact_id = result.created_id("Contact") if new_contact is not None else contact.value
        account_id = contact.account_id
        if self.object.name == "Account" and (new_contact is not None or "ContactAccount" in result.bodies):
            account_id = record_id
        return self._ref(record_id, contact_ref(contact_id, account_id, contact.account_known))

    def _without_create_only(self, nodes: list[Subrequest]) -> list[Subrequest]:
        fields = self.object.create_only | activity.TASK_CREATE_ONLY
        return [replace(n, body=activity.without(n.body, fields)) if n.method == "PATCH" and n.body else n
                for n in nodes]

    @staticmethod
    def _contact_gone(errors: list[dict[str, Any]]) -> bool:
        """Refused for the Contact: a reference error naming ContactId or WhoId, or one
        naming no field (ENTITY_IS_DELETED often does not)."""
        return any(e.get("errorCode") in CONTACT_GONE
                   and (CONTACT_FIELDS & set(e.get("fields") or []) or not e.get("fields"))
                   for e in errors)

    async def get_record(self, record_id: str) -> ExistingRecord | None:
        return await self.object.status(self.client, record_id)

    async def reopen_record(self, record_id: str) -> None:
        await self.client.call("reopen_record", "PATCH", self.object.path(record_id), json=self.object.reopen_body())

    # --- sessions on a record -----------------------------------------------------------------

    async def attach_session_activity(
        self, record_id: str, session: SessionActivity, note: str, *, reopen: bool
    ) -> None:
        """The appended session's Task (or CaseComment), with the reopen in the same composite."""
        nodes = []
        if reopen:
            nodes.append(Subrequest("Reopen", "PATCH", self.object.path(record_id), self.object.reopen_body()))
        if self._tasks:
            contact = parse_contact_ref(session.contact_id)[0] if session.contact_id else None
            nodes.append(Subrequest("Task", "PATCH", activity.task_path(self._field, session.session_id),
                                   activity.task_body(record_id, contact, session, note)))
        else:
            nodes.extend(self._comment_nodes(record_id, activity.split_comment(note)))
        await self._send("attach_session", nodes)

    async def complete_session_activity(
        self, record_id: str, session: SessionActivity, note: str, *, key: str, outcome_unknown: bool
    ) -> None:
        """Task mode: the session's Task upserted as Completed, exactly once by nature.
        CaseComment mode: comments marked with `key`, looked up first when an earlier
        attempt's outcome is unknown, so none is written twice."""
        if self._tasks:
            contact = parse_contact_ref(session.contact_id)[0] if session.contact_id else None
            body = activity.completed_task_body(record_id, replace(session, contact_id=contact), note)
            await self.client.call("add_note", "PATCH", activity.task_path(self._field, session.session_id), json=body)
            return
        parts = activity.marked_comments(note, key)
        if outcome_unknown:
            rows = await self.client.query(
                "find_note",
                f"SELECT Id, CommentBody FROM CaseComment WHERE ParentId = {soql_literal(record_id)} "
                "ORDER BY CreatedDate DESC LIMIT 200",
            )
            present = {str(r.get("CommentBody")) for r in rows}
            parts = [p for p in parts if p not in present]
        await self._send("add_note", self._comment_nodes(record_id, parts))

    def _comment_nodes(self, record_id: str, bodies: list[str]) -> list[Subrequest]:
        return [Subrequest(f"Comment{i}", "POST", "sobjects/CaseComment",
                          {"ParentId": record_id, "CommentBody": body, "IsPublished": False})
                for i, body in enumerate(bodies)]

    async def _send(self, operation: str, nodes: list[Subrequest]) -> None:
        """One node alone as a plain request, several as one composite; a Task upsert refused
        for a create-only field (a retry after a lost answer) is sent again without it."""
        if not nodes:
            return
        if len(nodes) == 1:
            node = nodes[0]
            try:
                await self.client.call(operation, node.method, node.path, json=node.body)
            except SalesforceRefused as refused:
                if CREATE_ONLY_REFUSED not in refused.codes or node.method != "PATCH":
                    raise
                [node] = self._without_create_only(nodes)
                await self.client.call(operation, node.method, node.path, json=node.body)
            return
        result = await self.client.composite(operation, nodes)
        if not result.ok and CREATE_ONLY_REFUSED in {e.get("errorCode") for e in result.errors}:
            result = await self.client.composite(operation, self._without_create_only(nodes))
        if not result.ok:
            raise self.client.composite_error(operation, result)

    # --- the plain CrmAdapter protocol (callers without the session's details) ----------------

    async def attach_session(self, record_id: str, note: str, tags: list[str]) -> None:
        await self._plain_note("attach_session", record_id, note)

    async def add_note(self, record_id: str, note: str) -> None:
        await self._plain_note("add_note", record_id, note)

    async def _plain_note(self, operation: str, record_id: str, note: str) -> None:
        if self._tasks:
            first_line = (note.splitlines() or [""])[0]
            body = {"WhatId": record_id, "Subject": first_line[:255] or "Session", "Status": activity.COMPLETED,
                    "Description": activity.truncate(note, 32000)}
            await self.client.call(operation, "POST", "sobjects/Task", json=body)
        else:
            await self._send(operation, self._comment_nodes(record_id, activity.split_comment(note)))

    async def aclose(self) -> None:
        await self.client.aclose()


__all__ = ["SalesforceAdapter", "contact_ref", "parse_contact_ref", "quoted"]
