"""The objects the Salesforce fake holds, with the field properties of Salesforce's object
reference: which fields can be set on create and update (Create, Update), on create only
(Create without Update), never (read only), which are required, restricted picklists,
lengths, references, and long text areas that cannot be filtered in SOQL."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from tests.fakes.base import Response

ID_SHAPE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# The standard sales process: (API name, IsClosed, IsWon).
OPPORTUNITY_STAGES = [
    ("Prospecting", False, False), ("Qualification", False, False), ("Needs Analysis", False, False),
    ("Value Proposition", False, False), ("Id. Decision Makers", False, False),
    ("Perception Analysis", False, False), ("Proposal/Price Quote", False, False),
    ("Negotiation/Review", False, False), ("Closed Won", True, True), ("Closed Lost", True, False),
]
# (parent object, relationship name) -> (child object, the child's field naming the parent)
CHILD_RELATIONSHIPS = {
    ("Opportunity", "OpportunityHistories"): ("OpportunityHistory", "OpportunityId"),
    ("Opportunity", "OpportunityContactRoles"): ("OpportunityContactRole", "OpportunityId"),
    ("Case", "CaseComments"): ("CaseComment", "ParentId"),
}
ACCOUNT_STATUSES = {"Active", "Inactive", "Closed"}
SYSTEM_FIELDS = {"Id", "CreatedDate", "LastModifiedDate"}


def sf_datetime(moment: datetime) -> str:
    """Salesforce's dateTime form: milliseconds and a +0000 offset."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}+0000"


def error(status: int, code: str, message: str, fields: list[str] | None = None) -> Response:
    return Response(status, [{"message": message, "errorCode": code, "fields": fields or []}])


def not_found() -> Response:
    return Response(404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])


@dataclass
class ObjectSpec:
    name: str
    prefix: str  # the key prefix of its ids
    writable: set[str]  # Create and Update
    create_only: set[str] = field(default_factory=set)
    read_only: set[str] = field(default_factory=set)
    required: set[str] = field(default_factory=set)
    picklists: dict[str, set[str]] = field(default_factory=dict)  # restricted
    limits: dict[str, int] = field(default_factory=dict)  # characters (bytes for CommentBody)
    references: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dates: set[str] = field(default_factory=set)
    not_filterable: set[str] = field(default_factory=set)
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def all_fields(self) -> set[str]:
        return self.writable | self.create_only | self.read_only | SYSTEM_FIELDS

    def check_value(
        self, name: str, value: Any, tables: dict[str, dict[str, Any]], raising: type | None = None
    ) -> None:
        problem = self._problem(name, value, tables)
        if problem is None:
            return
        if raising is not None:
            raise raising(problem.body[0]["message"])
        from tests.fakes.salesforce import Refusal

        raise Refusal(problem)

    def _problem(self, name: str, value: Any, tables: dict[str, dict[str, Any]]) -> Response | None:
        if name in self.picklists and value not in (None, "") and value not in self.picklists[name]:
            return error(400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                         f"{name}: bad value for restricted picklist field: {value}", [name])
        limit = self.limits.get(name)
        size = len(value.encode()) if name == "CommentBody" and isinstance(value, str) else len(str(value or ""))
        if limit is not None and isinstance(value, str) and size > limit:
            return error(400, "STRING_TOO_LONG", f"{name}: data value too large: {value[:40]} (max length={limit})",
                         [name])
        if name == "Email" and value and not EMAIL.match(str(value)):
            return error(400, "INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {value}", [name])
        if name in self.dates and value:
            try:
                date.fromisoformat(str(value))
            except ValueError:
                return error(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of date from VALUE_STRING "
                             f"value {value}", [name])
        targets = self.references.get(name)
        if targets and value:
            text = str(value)
            prefixes = {_PREFIXES[t] for t in targets}
            if not ID_SHAPE.match(text) or text[:3] not in prefixes:
                return error(400, "MALFORMED_ID", f"{name}: id value of incorrect type: {text}", [name])
            if not any(text in tables[t] for t in targets):
                return error(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [name])
        return None


_PREFIXES = {"Contact": "003", "Case": "500", "Opportunity": "006", "Account": "001", "Task": "00T",
             "CaseComment": "00a", "OpportunityContactRole": "00K", "OpportunityHistory": "008",
             "OpportunityStage": "01J"}


def build_specs(external_id_field: str, account_status_field: str) -> dict[str, ObjectSpec]:
    ext = external_id_field
    specs = [
        ObjectSpec(
            "Contact", "003", {"FirstName", "LastName", "Phone", "MobilePhone", "Email", "AccountId", "Description",
                               "Title"},
            required={"LastName"}, limits={"LastName": 80, "FirstName": 40, "Phone": 40, "Email": 80},
            references={"AccountId": ("Account",)}, not_filterable={"Description"},
        ),
        ObjectSpec(
            "Case", "500", {"Subject", "Description", "ContactId", "AccountId", "Origin", "Status", "Priority",
                            "Type", "Reason", "OwnerId", "SuppliedName", "SuppliedEmail", "SuppliedPhone", ext},
            read_only={"CaseNumber", "IsClosed", "ClosedDate"},
            picklists={"Status": {"New", "Working", "Escalated", "Closed"},
                       "Origin": {"Phone", "Email", "Web", "Chat"}},
            limits={"Subject": 255, "Description": 32000},
            references={"ContactId": ("Contact",), "AccountId": ("Account",)},
            not_filterable={"Description"}, defaults={"Status": "New", "IsClosed": False, "ClosedDate": None},
        ),
        ObjectSpec(
            "Opportunity", "006", {"Name", "Description", "StageName", "CloseDate", "AccountId", "Amount", "Type",
                                   "LeadSource", ext},
            create_only={"ContactId"}, read_only={"IsClosed", "IsWon"},
            required={"Name", "StageName", "CloseDate"},
            picklists={"StageName": {s for s, _, _ in OPPORTUNITY_STAGES}},
            limits={"Name": 120, "Description": 32000}, dates={"CloseDate"},
            references={"AccountId": ("Account",), "ContactId": ("Contact",)}, not_filterable={"Description"},
        ),
        ObjectSpec(
            "Account", "001", {"Name", "Description", "Phone", "Type", "Industry", account_status_field, ext},
            required={"Name"}, picklists={account_status_field: ACCOUNT_STATUSES},
            limits={"Name": 255, "Description": 32000}, not_filterable={"Description"},
        ),
        ObjectSpec(
            "Task", "00T", {"WhatId", "WhoId", "Subject", "Status", "Priority", "Description", "ActivityDate",
                            "CallType", "CallDurationInSeconds", "CallDisposition", "CallObject", "OwnerId", ext},
            create_only={"TaskSubtype"}, read_only={"IsClosed"},
            picklists={"Status": {"Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"},
                       "TaskSubtype": {"Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"},
                       "CallType": {"Internal", "Inbound", "Outbound"}, "Priority": {"High", "Normal", "Low"}},
            limits={"Subject": 255, "Description": 32000, "CallDisposition": 255}, dates={"ActivityDate"},
            references={"WhoId": ("Contact",), "WhatId": ("Case", "Opportunity", "Account")},
            not_filterable={"Description"},
            defaults={"Status": "Not Started", "Priority": "Normal", "TaskSubtype": "Task", "IsClosed": False},
        ),
        ObjectSpec(
            "CaseComment", "00a", {"CommentBody", "IsPublished"}, create_only={"ParentId"}, required={"ParentId"},
            limits={"CommentBody": 4000}, references={"ParentId": ("Case",)}, not_filterable={"CommentBody"},
            defaults={"IsPublished": False},
        ),
        ObjectSpec(
            "OpportunityContactRole", "00K", {"ContactId", "IsPrimary", "Role"}, create_only={"OpportunityId"},
            required={"OpportunityId", "ContactId"},
            references={"OpportunityId": ("Opportunity",), "ContactId": ("Contact",)},
            defaults={"IsPrimary": False},
        ),
        ObjectSpec("OpportunityHistory", "008", set(),
                   read_only={"OpportunityId", "StageName", "CloseDate", "Amount", "Probability"}),
        ObjectSpec("OpportunityStage", "01J", set(),
                   read_only={"ApiName", "MasterLabel", "IsClosed", "IsWon", "IsActive"}),
    ]
    return {spec.name: spec for spec in specs}
