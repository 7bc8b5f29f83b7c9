"""What a record is in Salesforce: a Case, an Opportunity or an Account
(SALESFORCE_RECORD_OBJECT), and for each what "open", "closed at" and "reopen" mean and how
the record reaches the end user's Contact.

| object | open when | closed at | reopened by |
| --- | --- | --- | --- |
| Case | IsClosed = false | ClosedDate | Status = SALESFORCE_REOPEN_STATUS |
| Opportunity | IsClosed = false | when its stage became a closed one (OpportunityHistory) | StageName = SALESFORCE_REOPEN_STAGE |
| Account | the status picklist is not a closed value | LastModifiedDate while closed | that picklist = SALESFORCE_ACCOUNT_OPEN_VALUE |

Every record carries the session id in the external-id field and is written by upsert on
it, so a retried create updates the record the first attempt made.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

from app.adapters.crm.base import NewRecord
from app.adapters.crm.salesforce.client import (
    SalesforceClient,
    Subrequest,
    parse_salesforce_datetime,
    soql_literal,
)
from app.domain.field_limits import cut
from app.domain.policy import ExistingRecord

# Field sizes Salesforce enforces; longer values would be refused with STRING_TOO_LONG.
SUBJECT_MAX = 255  # Case.Subject, Task.Subject
NAME_MAX = 120  # Opportunity.Name
ACCOUNT_NAME_MAX = 255
DESCRIPTION_MAX = 32000

_ORIGIN_BY_MEDIUM = {"call": "Phone", "chat": "Chat"}

# How far back OpportunityHistory is read to find when the current closed run began.
HISTORY_ROWS = 50


def quoted(value: str) -> str:
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class ContactLink:
    """The end user's Contact as the record creation sees it: an id (or a graph
    reference to the Contact created in the same graph) and, when known, its AccountId."""

    value: str  # "003..." or "@{Contact.id}"
    account_id: str | None
    account_known: bool
    created_in_graph: bool


@dataclass(frozen=True, slots=True)
class RecordObject:
    name: str
    external_id_field: str
    # Fields Salesforce accepts on create only: a retried upsert (an update) must leave them out.
    create_only: frozenset[str] = frozenset()

    # --- shared -------------------------------------------------------------------------------
    def by_session_path(self, session_id: str) -> str:
        return f"sobjects/{self.name}/{quoted(self.external_id_field)}/{quoted(session_id)}"

    def path(self, record_id: str) -> str:
        return f"sobjects/{self.name}/{quoted(record_id)}"

    def url(self, instance_url: str, record_id: str) -> str:
        return f"{instance_url}/lightning/r/{self.name}/{record_id}/view"

    # Where the record names its Contact, for the look-up by session id (None: it does not).
    contact_field: str | None = None

    # --- per object ---------------------------------------------------------------------------
    def rule(self) -> str:
        raise NotImplementedError

    def record_body(self, record: NewRecord, contact: ContactLink, today: date) -> dict[str, Any]:
        raise NotImplementedError

    def contact_nodes_after(self, contact: ContactLink) -> list[Subrequest]:
        """Nodes that link the Contact to the record once it exists (Account only)."""
        return []

    def reopen_body(self) -> dict[str, Any]:
        raise NotImplementedError

    async def status(self, client: SalesforceClient, record_id: str) -> ExistingRecord | None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class CaseObject(RecordObject):
    reopen_status: str = "New"
    contact_field: str | None = "ContactId"

    def rule(self) -> str:
        return f"open while IsClosed is false; closed at ClosedDate; reopened by setting Status to {self.reopen_status!r}"

    def record_body(self, record: NewRecord, contact: ContactLink, today: date) -> dict[str, Any]:
        return {
            "Subject": cut(record.title, SUBJECT_MAX),
            "Description": record.description[:DESCRIPTION_MAX],
            "Origin": _ORIGIN_BY_MEDIUM.get(record.medium, "Phone"),
            "ContactId": contact.value,
        }

    def reopen_body(self) -> dict[str, Any]:
        return {"Status": self.reopen_status}

    async def status(self, client: SalesforceClient, record_id: str) -> ExistingRecord | None:
        response = await client.call(
            "get_record", "GET", self.path(record_id), params={"fields": "Status,IsClosed,ClosedDate"}, accept=(404,)
        )
        if response.status_code == 404:
            return None
        case = response.json()
        closed = bool(case.get("IsClosed"))
        return ExistingRecord(
            record_id=record_id,
            status=str(case.get("Status") or ""),
            is_closed=closed,
            closed_at=parse_salesforce_datetime(case.get("ClosedDate")) if closed else None,
            can_reopen=True,  # any closed Case can be set back to an open status
            url=self.url(client.instance_url, record_id),
        )


@dataclass(frozen=True, slots=True)
class OpportunityObject(RecordObject):
    new_stage: str = "Prospecting"
    reopen_stage: str = "Prospecting"
    close_days: int = 30
    create_only: frozenset[str] = frozenset({"ContactId"})
    contact_field: str | None = "ContactId"

    def rule(self) -> str:
        return (
            "open while IsClosed is false (its StageName is not a closed stage); closed at the moment "
            "its stage became a closed one (OpportunityHistory); reopened by setting StageName to "
            f"{self.reopen_stage!r}; a new Opportunity gets StageName {self.new_stage!r} and "
            f"CloseDate today + {self.close_days} days"
        )

    def record_body(self, record: NewRecord, contact: ContactLink, today: date) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Name": cut(record.title, NAME_MAX),
            "Description": record.description[:DESCRIPTION_MAX],
            "StageName": self.new_stage,
            "CloseDate": (today + timedelta(days=self.close_days)).isoformat(),
            # Create-only: Salesforce makes the Contact the primary OpportunityContactRole.
            "ContactId": contact.value,
        }
        if contact.account_id:
            body["AccountId"] = contact.account_id
        return body

    def reopen_body(self) -> dict[str, Any]:
        return {"StageName": self.reopen_stage}

    async def status(self, client: SalesforceClient, record_id: str) -> ExistingRecord | None:
        soql = (
            "SELECT Id, StageName, IsClosed, LastModifiedDate, "
            f"(SELECT StageName, CreatedDate FROM OpportunityHistories ORDER BY CreatedDate DESC LIMIT {HISTORY_ROWS}) "
            f"FROM Opportunity WHERE Id = {soql_literal(record_id)}"
        )
        rows = await client.query("get_record", soql)
        if not rows:
            return None
        opportunity = rows[0]
        closed = bool(opportunity.get("IsClosed"))
        closed_at = None
        if closed:
            history = (opportunity.get("OpportunityHistories") or {}).get("records") or []
            closed_stages = await closed_stage_names(client)
            closed_at = became_closed_at(history, closed_stages) or parse_salesforce_datetime(
                opportunity.get("LastModifiedDate")
            )
        return ExistingRecord(
            record_id=record_id,
            status=str(opportunity.get("StageName") or ""),
            is_closed=closed,
            closed_at=closed_at,
            can_reopen=True,
            url=self.url(client.instance_url, record_id),
        )


async def closed_stage_names(client: SalesforceClient) -> frozenset[str]:
    """The org's closed Opportunity stages (OpportunityStage.IsClosed), read once per process."""
    known = client.cache.get("closed_stages")
    if known is None:
        rows = await client.query("opportunity_stages", "SELECT ApiName FROM OpportunityStage WHERE IsClosed = true")
        known = frozenset(str(r.get("ApiName")) for r in rows)
        client.cache["closed_stages"] = known
    return known


def became_closed_at(history: list[dict[str, Any]], closed_stages: frozenset[str]):
    """From OpportunityHistory rows, newest first: when the current run of closed stages
    began (a Closed Won later marked Closed Lost closed at the first of the two)."""
    began = None
    for row in history:
        if row.get("StageName") not in closed_stages:
            break
        began = parse_salesforce_datetime(row.get("CreatedDate")) or began
    return began


@dataclass(frozen=True, slots=True)
class AccountObject(RecordObject):
    status_field: str | None = None
    closed_values: frozenset[str] = frozenset()
    open_value: str | None = None

    def rule(self) -> str:
        if not self.status_field:
            return (
                "every Account counts as open (SALESFORCE_ACCOUNT_STATUS_FIELD is not set), so a session "
                "is appended to the newest Account whenever appending is on"
            )
        closed = ", ".join(sorted(self.closed_values))
        return (
            f"open while {self.status_field} is not one of {closed}; closed at LastModifiedDate while closed "
            f"(Accounts have no close date); reopened by setting {self.status_field} to {self.open_value!r}; "
            f"a new Account gets {self.status_field} = {self.open_value!r}"
        )

    def record_body(self, record: NewRecord, contact: ContactLink, today: date) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Name": cut(record.title, ACCOUNT_NAME_MAX),
            "Description": record.description[:DESCRIPTION_MAX],
        }
        if self.status_field and self.open_value:
            body[self.status_field] = self.open_value
        return body

    def contact_nodes_after(self, contact: ContactLink) -> list[Subrequest]:
        """A Contact has one AccountId: it is set to the new Account only when the Contact
        has none yet (a Contact made in the same graph is created with it). A second
        Account for the same end user leaves the Contact where it is; the Account still
        reaches the end user through its Tasks (WhoId)."""
        if contact.created_in_graph or not contact.account_known or contact.account_id:
            return []
        return [Subrequest("ContactAccount", "PATCH", f"sobjects/Contact/{quoted(contact.value)}",
                          {"AccountId": "@{Record.id}"})]

    def reopen_body(self) -> dict[str, Any]:
        return {self.status_field: self.open_value} if self.status_field else {}

    async def status(self, client: SalesforceClient, record_id: str) -> ExistingRecord | None:
        fields = ",".join(f for f in (self.status_field, "LastModifiedDate") if f)
        response = await client.call("get_record", "GET", self.path(record_id), params={"fields": fields}, accept=(404,))
        if response.status_code == 404:
            return None
        account = response.json()
        value = str(account.get(self.status_field) or "") if self.status_field else ""
        closed = bool(self.status_field) and value in self.closed_values
        return ExistingRecord(
            record_id=record_id,
            status=value or "open",
            is_closed=closed,
            closed_at=parse_salesforce_datetime(account.get("LastModifiedDate")) if closed else None,
            can_reopen=bool(self.open_value),
            url=self.url(client.instance_url, record_id),
        )


def build_record_object(settings: Any) -> RecordObject:
    """The object SALESFORCE_RECORD_OBJECT names, with its settings."""
    field = settings.salesforce_external_id_field
    kind = settings.salesforce_record_object
    if kind == "Opportunity":
        return OpportunityObject(
            "Opportunity", field, new_stage=settings.salesforce_opportunity_stage,
            reopen_stage=settings.salesforce_reopen_stage, close_days=settings.salesforce_opportunity_close_days,
        )
    if kind == "Account":
        closed = frozenset(v.strip() for v in (settings.salesforce_account_closed_values or "").split(",") if v.strip())
        return AccountObject(
            "Account", field, status_field=settings.salesforce_account_status_field or None,
            closed_values=closed, open_value=settings.salesforce_account_open_value or None,
        )
    return CaseObject("Case", field, reopen_status=settings.salesforce_reopen_status)
