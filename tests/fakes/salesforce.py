"""A fake Salesforce org (Service Cloud) for the Salesforce adapter, following the REST API
documentation: the OAuth 2.0 client credentials token endpoint, SOQL queries on Contact
and Case, Contact create, Case upsert/retrieve by external id, Case retrieve/update by id,
CaseComment create and Case describe.

Faithful details:
* POST /services/oauth2/token (form: grant_type=client_credentials, client_id,
  client_secret) -> {"access_token", "signature", "scope", "instance_url", "id",
  "token_type": "Bearer", "issued_at"}; a wrong client id -> 400 invalid_client_id,
  a wrong secret -> 400 invalid_client, another grant type -> 400 unsupported_grant_type.
  The instance URL is this server's own base URL.
* /services/data/vNN.N/... needs `Authorization: Bearer <token>`; a missing, unknown or
  expired token -> 401 [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}].
* Errors are arrays of {"message", "errorCode", "fields"}: REQUIRED_FIELD_MISSING,
  INVALID_FIELD, STRING_TOO_LONG, MALFORMED_ID, INVALID_EMAIL_ADDRESS, MALFORMED_QUERY,
  INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST, NOT_FOUND (404).
* Upsert: PATCH /sobjects/Case/{external_id_field}/{value} -> 201 {"id", "success": true,
  "errors": [], "created": true} when created, 200 with "created": false when the Case
  existed (API 46.0 and later). Record updates by id -> 204.
* Every REST answer carries `Sforce-Limit-Info: api-usage=N/LIMIT`; when the daily
  allocation is spent (`api_usage >= api_limit`) -> 403 REQUEST_LIMIT_EXCEEDED.
* Case statuses: New, Working, Escalated (open) and Closed (closed); a new Case is New.
  Closing sets IsClosed and ClosedDate (`2024-01-15T10:00:00.000+0000`); reopening clears them.

Faults (see tests.fakes.base.Faults): `rate_limit_next` answers like Salesforce does, with
403 REQUEST_LIMIT_EXCEEDED and no Retry-After; set `fake.rate_limit_status = 429` to answer
429 with `Retry-After: <retry_after_seconds>` instead. `server_error_next` answers 503.
`drop_after_create_next` drops the connection after a Case upsert that created the Case.

Helpers for tests:
* `records()` -> list of Case dicts (Id, CaseNumber, Subject, Description, ContactId,
  Origin, Status, IsClosed, ClosedDate, CreatedDate, the external-id field, plus
  "comments": [CaseComment dicts] and "tags": [] since Salesforce has none).
* `notes_for(record_id)` -> the Case's CaseComments: dicts with Id, ParentId, CommentBody,
  IsPublished, CreatedDate.
* `set_status(record_id, status, closed_at=None)` -> set a Case's Status (one of the
  statuses above); a closed status stamps ClosedDate with `closed_at` (default now).
* `close_record(record_id, closed_at)` -> `set_status(record_id, "Closed", closed_at)`.
* `users()` -> list of Contact dicts (Id, FirstName, LastName, Phone, Email, CreatedDate).
* `add_contact(**fields)` -> seed a Contact, returns its Id.
* `expire_tokens()` -> every issued access token stops working (session timeout).
* `token_requests()` -> how many token requests were answered with a token.
* `api_requests()` -> how many REST API (/services/data) requests were logged.
"""

from __future__ import annotations

import copy
import itertools
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, unquote

from tests.fakes.base import DropConnection, FakeServer, Request, Response

API = r"/services/data/(?P<version>v\d+\.\d+)"
ORG_ID = "00D5g000004FAKE"
USER_ID = "0055g00000FAKEA"

DEFAULT_STATUSES = {"New": False, "Working": False, "Escalated": False, "Closed": True}

CASE_WRITABLE = {
    "Subject",
    "Description",
    "ContactId",
    "AccountId",
    "Origin",
    "Status",
    "Priority",
    "Type",
    "Reason",
    "OwnerId",
    "SuppliedName",
    "SuppliedEmail",
    "SuppliedPhone",
}
CASE_READ_ONLY = {"Id", "CaseNumber", "IsClosed", "ClosedDate", "CreatedDate"}
CONTACT_WRITABLE = {"FirstName", "LastName", "Phone", "MobilePhone", "Email", "AccountId", "Description", "Title"}
FIELD_LIMITS = {"Subject": 255, "Description": 32000, "LastName": 80, "FirstName": 40, "Phone": 40, "Email": 80}
COMMENT_MAX_BYTES = 4000

SOQL = re.compile(
    r"^\s*SELECT\s+(?P<fields>[\w\s,.]+?)\s+FROM\s+(?P<object>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+ORDER\s+BY\s+(?P<order>\w+)(?:\s+(?P<direction>ASC|DESC))?)?"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
CONDITION = re.compile(r"^\s*(?P<field>\w+)\s*=\s*'(?P<value>(?:[^'\\]|\\.)*)'\s*$", re.DOTALL)
SOQL_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
ID_SHAPE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")


def sf_datetime(moment: datetime) -> str:
    """Salesforce's dateTime form: milliseconds and a +0000 offset."""
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}+0000"


def now_text() -> str:
    return sf_datetime(datetime.now(timezone.utc))


def error(status: int, code: str, message: str, fields: list[str] | None = None) -> Response:
    return Response(status, [{"message": message, "errorCode": code, "fields": fields or []}])


def not_found() -> Response:
    return Response(404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])


def unescape_soql(literal: str) -> str:
    return re.sub(r"\\(.)", lambda m: SOQL_ESCAPES.get(m.group(1), m.group(1)), literal, flags=re.DOTALL)


class SalesforceFake(FakeServer):
    name = "salesforce"

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        external_id_field: str = "CCAI_Session_Id__c",
        api_limit: int = 100_000,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.external_id_field = external_id_field
        self.statuses = dict(DEFAULT_STATUSES)
        self.api_limit = api_limit
        self.api_usage = 0
        self.rate_limit_status = 403
        self._tokens: set[str] = set()
        self._token_count = 0
        self._cases: dict[str, dict[str, Any]] = {}
        self._contacts: dict[str, dict[str, Any]] = {}
        self._comments: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._case_numbers = itertools.count(1001)
        super().__init__()

    # --- routes -------------------------------------------------------------------------------
    def setup_routes(self) -> None:
        self.route("POST", r"/services/oauth2/token", self.token, authenticated=False)
        self.route("GET", API + r"/query/?", self._rest(self.query))
        self.route("GET", API + r"/sobjects/Case/describe/?", self._rest(self.describe_case))
        self.route("POST", API + r"/sobjects/Contact/?", self._rest(self.create_contact))
        self.route("POST", API + r"/sobjects/CaseComment/?", self._rest(self.create_comment))
        self.route("PATCH", API + r"/sobjects/Case/(?P<field>[^/]+)/(?P<value>[^/]+)", self._rest(self.upsert_case))
        self.route("GET", API + r"/sobjects/Case/(?P<field>[^/]+)/(?P<value>[^/]+)", self._rest(self.get_case_by_field))
        self.route("GET", API + r"/sobjects/Case/(?P<id>[^/]+)", self._rest(self.get_case))
        self.route("PATCH", API + r"/sobjects/Case/(?P<id>[^/]+)", self._rest(self.update_case))

    def authenticate(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        token = header[len("Bearer "):] if header.startswith("Bearer ") else None
        if token is None or token not in self._tokens:
            return Response(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
        return None

    def rate_limited_response(self) -> Response:
        if self.rate_limit_status == 429:
            return super().rate_limited_response()
        return error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")

    def server_error_response(self) -> Response:
        return error(503, "SERVER_UNAVAILABLE", "The server is unavailable to handle the request. Try again later.")

    def _rest(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """Counts the call against the daily allocation and adds Sforce-Limit-Info."""

        def wrapped(request: Request) -> Response:
            if self.api_usage >= self.api_limit:
                response = error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            else:
                self.api_usage += 1
                response = handler(request)
            response.headers["Sforce-Limit-Info"] = f"api-usage={self.api_usage}/{self.api_limit}"
            return response

        return wrapped

    # --- OAuth --------------------------------------------------------------------------------
    def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return Response(400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"})
        if form.get("client_id") != self.client_id:
            return Response(400, {"error": "invalid_client_id", "error_description": "client identifier invalid"})
        if form.get("client_secret") != self.client_secret:
            return Response(400, {"error": "invalid_client", "error_description": "invalid client credentials"})
        token = f"{ORG_ID}!{secrets.token_urlsafe(32)}"
        self._tokens.add(token)
        self._token_count += 1
        return Response(
            200,
            {
                "access_token": token,
                "signature": secrets.token_urlsafe(32),
                "scope": "api",
                "instance_url": self.base_url,
                "id": f"{self.base_url}/id/{ORG_ID}/{USER_ID}",
                "token_type": "Bearer",
                "issued_at": str(int(time.time() * 1000)),
            },
        )

    # --- SOQL ---------------------------------------------------------------------------------
    def query(self, request: Request) -> Response:
        soql = request.arg("q") or ""
        match = SOQL.match(soql)
        if not match:
            return error(400, "MALFORMED_QUERY", f"unexpected token in query: {soql[:80]}")
        table = {"contact": self._contacts, "case": self._cases}.get(match["object"].lower())
        if table is None:
            return error(400, "INVALID_TYPE", f"sObject type '{match['object']}' is not supported.")
        conditions = []
        for part in re.split(r"\s+AND\s+", match["where"] or "", flags=re.IGNORECASE) if match["where"] else []:
            condition = CONDITION.match(part)
            if not condition:
                return error(400, "MALFORMED_QUERY", f"unexpected token: {part.strip()[:80]}")
            conditions.append((condition["field"], unescape_soql(condition["value"])))
        rows = [r for r in table.values() if all(r.get(f) == v for f, v in conditions)]
        if match["order"]:
            rows.sort(key=lambda r: (r.get(match["order"]) or "", r["Id"]), reverse=(match["direction"] or "").upper() == "DESC")
        if match["limit"]:
            rows = rows[: int(match["limit"])]
        object_name = "Contact" if table is self._contacts else "Case"
        fields = [f.strip() for f in match["fields"].split(",") if f.strip()]
        records = [self._view(object_name, row, fields, request.params["version"]) for row in rows]
        return Response(200, {"totalSize": len(records), "done": True, "records": records})

    def _view(self, object_name: str, row: dict[str, Any], fields: list[str] | None, version: str) -> dict[str, Any]:
        shown = {k: v for k, v in row.items() if k not in ("comments", "tags")}
        if fields:
            shown = {f: row.get(f) for f in fields}
        return {"attributes": {"type": object_name, "url": f"/services/data/{version}/sobjects/{object_name}/{row['Id']}"}, **shown}

    # --- Contact ------------------------------------------------------------------------------
    def create_contact(self, request: Request) -> Response:
        body = request.json() or {}
        refused = self._check_fields("Contact", body, CONTACT_WRITABLE, set())
        if refused:
            return refused
        if not str(body.get("LastName") or "").strip():
            return error(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]", ["LastName"])
        email = body.get("Email")
        if email and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", email):
            return error(400, "INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {email}", ["Email"])
        contact_id = self.add_contact(**body)
        return Response(201, {"id": contact_id, "success": True, "errors": []})

    # --- Case ---------------------------------------------------------------------------------
    def describe_case(self, request: Request) -> Response:
        names = sorted(CASE_WRITABLE | CASE_READ_ONLY | {self.external_id_field})
        fields = [
            {"name": n, "externalId": n == self.external_id_field, "unique": n == self.external_id_field}
            for n in names
        ]
        return Response(200, {"name": "Case", "label": "Case", "createable": True, "updateable": True, "fields": fields})

    def upsert_case(self, request: Request) -> Response:
        field, value = unquote(request.params["field"]), unquote(request.params["value"])
        if field != self.external_id_field:
            return error(404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {field}")
        body = {k: v for k, v in (request.json() or {}).items() if k != self.external_id_field}
        refused = self._check_case(body)
        if refused:
            return refused
        existing = self._case_by(field, value)
        if existing is not None:
            self._apply_case(existing, body)
            return Response(200, {"id": existing["Id"], "success": True, "errors": [], "created": False})
        case = self._new_case({**body, field: value})
        if self.take_drop_after_create():
            raise DropConnection()
        return Response(201, {"id": case["Id"], "success": True, "errors": [], "created": True})

    def get_case_by_field(self, request: Request) -> Response:
        field, value = unquote(request.params["field"]), unquote(request.params["value"])
        if field != self.external_id_field:
            return error(404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {field}")
        case = self._case_by(field, value)
        return self._case_answer(request, case)

    def get_case(self, request: Request) -> Response:
        return self._case_answer(request, self._cases.get(unquote(request.params["id"])))

    def _case_answer(self, request: Request, case: dict[str, Any] | None) -> Response:
        if case is None:
            return not_found()
        fields = [f.strip() for f in (request.arg("fields") or "").split(",") if f.strip()]
        known = CASE_WRITABLE | CASE_READ_ONLY | {self.external_id_field}
        unknown = [f for f in fields if f not in known]
        if unknown:
            return error(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on entity 'Case'.")
        shown = fields + ["Id"] if fields and "Id" not in fields else fields
        return Response(200, self._view("Case", case, shown or None, request.params["version"]))

    def update_case(self, request: Request) -> Response:
        case = self._cases.get(unquote(request.params["id"]))
        if case is None:
            return not_found()
        body = request.json() or {}
        refused = self._check_case(body)
        if refused:
            return refused
        self._apply_case(case, body)
        return Response(204)

    def _check_case(self, body: dict[str, Any]) -> Response | None:
        refused = self._check_fields("Case", body, CASE_WRITABLE | {self.external_id_field}, CASE_READ_ONLY)
        if refused:
            return refused
        if "Status" in body and body["Status"] not in self.statuses:
            return error(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"Status: bad value for restricted picklist field: {body['Status']}",
                ["Status"],
            )
        contact_id = body.get("ContactId")
        if contact_id:
            if not ID_SHAPE.match(str(contact_id)) or not str(contact_id).startswith("003"):
                return error(400, "MALFORMED_ID", f"Contact ID: id value of incorrect type: {contact_id}", ["ContactId"])
            if contact_id not in self._contacts:
                return error(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ["ContactId"])
        return None

    def _check_fields(self, object_name: str, body: dict[str, Any], writable: set[str], read_only: set[str]) -> Response | None:
        for name, value in body.items():
            if name in read_only:
                return error(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {name}. Please check the security settings of this field "
                    "and verify that it is read/write for your profile or permission set.",
                    [name],
                )
            if name not in writable:
                return error(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {object_name}")
            limit = FIELD_LIMITS.get(name)
            if limit is not None and isinstance(value, str) and len(value) > limit:
                return error(
                    400, "STRING_TOO_LONG", f"{name}: data value too large: {value[:40]} (max length={limit})", [name]
                )
        return None

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}5g0000{next(self._ids):09d}"

    def _new_case(self, fields: dict[str, Any]) -> dict[str, Any]:
        case: dict[str, Any] = {
            "Id": self._new_id("500"),
            "CaseNumber": f"{next(self._case_numbers):08d}",
            "Subject": None,
            "Description": None,
            "ContactId": None,
            "Origin": None,
            "Status": "New",
            "IsClosed": False,
            "ClosedDate": None,
            "CreatedDate": now_text(),
            self.external_id_field: None,
            "comments": [],
            "tags": [],
        }
        self._apply_case(case, fields)
        self._cases[case["Id"]] = case
        return case

    def _apply_case(self, case: dict[str, Any], fields: dict[str, Any], closed_at: datetime | None = None) -> None:
        previous = case["Status"]
        case.update(fields)
        if ("Status" in fields and fields["Status"] != previous) or closed_at is not None:
            closed = self.statuses[case["Status"]]
            case["IsClosed"] = closed
            case["ClosedDate"] = sf_datetime(closed_at or datetime.now(timezone.utc)) if closed else None

    def _case_by(self, field: str, value: str) -> dict[str, Any] | None:
        return next((c for c in self._cases.values() if c.get(field) == value), None)

    # --- CaseComment --------------------------------------------------------------------------
    def create_comment(self, request: Request) -> Response:
        body = request.json() or {}
        refused = self._check_fields("CaseComment", body, {"ParentId", "CommentBody", "IsPublished"}, set())
        if refused:
            return refused
        parent = body.get("ParentId")
        if not parent:
            return error(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [ParentId]", ["ParentId"])
        if parent not in self._cases:
            return error(400, "FIELD_INTEGRITY_EXCEPTION", f"Parent ID: id value of incorrect type: {parent}", ["ParentId"])
        text = body.get("CommentBody") or ""
        if len(text.encode()) > COMMENT_MAX_BYTES:
            return error(
                400, "STRING_TOO_LONG", f"Body: data value too large: {text[:40]} (max length={COMMENT_MAX_BYTES})", ["CommentBody"]
            )
        comment = {
            "Id": self._new_id("00a"),
            "ParentId": parent,
            "CommentBody": text,
            "IsPublished": bool(body.get("IsPublished", False)),
            "CreatedDate": now_text(),
        }
        self._comments.append(comment)
        self._cases[parent]["comments"].append(comment)
        return Response(201, {"id": comment["Id"], "success": True, "errors": []})

    # --- helpers for tests --------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._cases.values()))

    def notes_for(self, record_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy([c for c in self._comments if c["ParentId"] == record_id])

    def set_status(self, record_id: str, status: str, closed_at: datetime | None = None) -> None:
        if status not in self.statuses:
            raise ValueError(f"unknown Case status {status!r}; known: {sorted(self.statuses)}")
        with self.lock:
            self._apply_case(self._cases[record_id], {"Status": status}, closed_at if self.statuses[status] else None)

    def close_record(self, record_id: str, closed_at: datetime) -> None:
        self.set_status(record_id, "Closed", closed_at)

    def users(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._contacts.values()))

    def add_contact(self, **fields: Any) -> str:
        with self.lock:
            contact = {"Id": self._new_id("003"), "FirstName": None, "LastName": None, "Phone": None, "Email": None}
            contact.update(fields)
            contact["CreatedDate"] = now_text()
            self._contacts[contact["Id"]] = contact
            return contact["Id"]

    def expire_tokens(self) -> None:
        with self.lock:
            self._tokens.clear()

    def token_requests(self) -> int:
        return self._token_count

    def api_requests(self) -> int:
        return sum(1 for r in self.requests if r.path.startswith("/services/data/"))
