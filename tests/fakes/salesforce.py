"""A fake Salesforce org for the Salesforce adapter, following the REST API and object
reference: the OAuth 2.0 client credentials token endpoint, sObject create / retrieve /
update / upsert by external id / describe, SOQL queries, and composite graphs, over
Contact, Case, Opportunity, Account, Task, CaseComment, OpportunityContactRole,
OpportunityHistory and OpportunityStage (schemas in tests/fakes/salesforce_schema.py).

Faithful details:
* POST /services/oauth2/token (grant_type=client_credentials, client_id, client_secret)
  -> {"access_token", "instance_url", ...}; a wrong client id -> 400 invalid_client_id, a
  wrong secret -> 400 invalid_client, another grant type -> 400 unsupported_grant_type.
* /services/data/vNN.N/... needs `Authorization: Bearer <token>`, else 401 INVALID_SESSION_ID.
* Errors are arrays of {"message", "errorCode", "fields"}: REQUIRED_FIELD_MISSING,
  INVALID_FIELD, INVALID_FIELD_FOR_INSERT_UPDATE (a read-only field, or a create-only one
  on an update, including an upsert that updates), STRING_TOO_LONG, MALFORMED_ID,
  INVALID_CROSS_REFERENCE_KEY, INVALID_EMAIL_ADDRESS, MALFORMED_QUERY,
  INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST, NOT_FOUND (404).
* Upsert: PATCH /sobjects/{Object}/{externalIdField}/{value} -> 201 {"id", "success",
  "errors", "created": true}, or 200 with "created": false when a record had the value.
  Update by id -> 204.
* Composite: POST /composite (compositeRequest, allOrNone) and POST /composite/graph,
  each one request against the allocation; subrequests may reference earlier answers with
  @{referenceId.field}; all or nothing: a failing one rolls the others back; the answer is
  200 with the failing subrequest's errors and PROCESSING_HALTED for the others (a graph
  also says isSuccessful false).
* Every REST answer carries `Sforce-Limit-Info: api-usage=N/LIMIT`; when the allocation
  is spent -> 403 REQUEST_LIMIT_EXCEEDED.
* Case: Status New/Working/Escalated (open), Closed (closed) -> IsClosed, ClosedDate.
  Opportunity: Name, StageName, CloseDate required; IsClosed from the stage; every stage
  change adds an OpportunityHistory row; ContactId (create only) makes the primary
  OpportunityContactRole. Account: Name required; `account_status_field` (default
  Status__c) is a restricted picklist Active/Inactive/Closed; LastModifiedDate on writes.
  Task: Status defaults to Not Started, TaskSubtype is create only.

Faults (tests.fakes.base.Faults): `rate_limit_next` answers 403 REQUEST_LIMIT_EXCEEDED (or
429 with Retry-After when `rate_limit_status = 429`), `server_error_next` answers 503,
`drop_after_create_next` drops the connection after an upsert or graph that created;
`slow_graphs` / `slow_graph_seconds` answer the next graphs late, after applying them.

Helpers: records(), notes_for(id), tasks_for(id), set_status(id, status, closed_at),
set_stage(id, stage, at), set_account_status(id, value, at), close_record(id, closed_at),
users(), add_contact(**fields), add_account(**fields), rows(object), expire_tokens(),
token_requests(), api_requests().
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

from tests.fakes import salesforce_soql as soql
from tests.fakes.base import DropConnection, FakeServer, Request, Response
from tests.fakes.salesforce_schema import (
    CHILD_RELATIONSHIPS,
    OPPORTUNITY_STAGES,
    ObjectSpec,
    build_specs,
    error,
    not_found,
    sf_datetime,
)

API = r"/services/data/(?P<version>v\d+\.\d+)"
ORG_ID = "00D5g000004FAKE"
USER_ID = "0055g00000FAKEA"
REFERENCE = re.compile(r"@\{(?P<ref>\w+)\.(?P<field>\w+)\}")


class Refusal(Exception):
    def __init__(self, response: Response):
        self.response = response


class SalesforceFake(FakeServer):
    name = "salesforce"

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        external_id_field: str = "CCAI_Session_Id__c",
        record_object: str = "Case",
        account_status_field: str = "Status__c",
        api_limit: int = 100_000,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.external_id_field = external_id_field
        self.record_object = record_object
        self.account_status_field = account_status_field
        self.specs: dict[str, ObjectSpec] = build_specs(external_id_field, account_status_field)
        self.api_limit = api_limit
        self.api_usage = 0
        self.rate_limit_status = 403
        # Answer the next N composite graphs this many seconds late, after applying them
        # (a client that gave up meanwhile does not know the graph was applied).
        self.slow_graphs = 0
        self.slow_graph_seconds = 0.0
        # False: /composite answers 404, as behind a proxy that passes only composite graphs.
        self.composite_supported = True
        self._tokens: set[str] = set()
        self._token_count = 0
        self._tables: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.specs}
        self._ids = itertools.count(1)
        self._case_numbers = itertools.count(1001)
        for stage, closed, won in OPPORTUNITY_STAGES:
            self._insert("OpportunityStage", {"ApiName": stage, "MasterLabel": stage, "IsClosed": closed,
                                              "IsWon": won, "IsActive": True})
        super().__init__()

    # --- routes -------------------------------------------------------------------------------
    def setup_routes(self) -> None:
        self.route("POST", r"/services/oauth2/token", self.token, authenticated=False)
        self.route("POST", API + r"/composite/graph/?", self._rest(self.graph))
        self.route("POST", API + r"/composite/?", self._rest(self.composite))
        for method, pattern, handler in self._sobject_routes():
            self.route(method, API + pattern, self._rest(self._refusing(handler)))

    def _sobject_routes(self) -> list[tuple[str, str, Callable[[Request], Response]]]:
        return [
            ("GET", r"/query/?", self.query),
            ("GET", r"/sobjects/(?P<obj>\w+)/describe/?", self.describe),
            ("POST", r"/sobjects/(?P<obj>\w+)/?", self.create),
            ("GET", r"/sobjects/(?P<obj>\w+)/(?P<id>[^/]+)/?", self.get),
            ("PATCH", r"/sobjects/(?P<obj>\w+)/(?P<id>[^/]+)/?", self.update),
            ("GET", r"/sobjects/(?P<obj>\w+)/(?P<field>[^/]+)/(?P<value>[^/]+)/?", self.get_by_field),
            ("PATCH", r"/sobjects/(?P<obj>\w+)/(?P<field>[^/]+)/(?P<value>[^/]+)/?", self.upsert),
        ]

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

    def _refusing(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def wrapped(request: Request) -> Response:
            try:
                return handler(request)
            except Refusal as refusal:
                return refusal.response

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
        return Response(200, {
            "access_token": token, "signature": secrets.token_urlsafe(32), "scope": "api",
            "instance_url": self.base_url, "id": f"{self.base_url}/id/{ORG_ID}/{USER_ID}",
            "token_type": "Bearer", "issued_at": str(int(time.time() * 1000)),
        })

    # --- sObject rows -------------------------------------------------------------------------
    def _spec(self, name: str) -> ObjectSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise Refusal(not_found())
        return spec

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}5g0000{next(self._ids):09d}"

    def _insert(self, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        spec = self.specs[name]
        now = sf_datetime(datetime.now(UTC))
        row = {"Id": self._new_id(spec.prefix), **spec.defaults, "CreatedDate": now, "LastModifiedDate": now}
        if name == "Case":
            row["CaseNumber"] = f"{next(self._case_numbers):08d}"
        row.update(fields)
        self._tables[name][row["Id"]] = row
        self._derive(name, row, previous=None)
        return row

    def _derive(
        self, name: str, row: dict[str, Any], previous: dict[str, Any] | None, at: datetime | None = None
    ) -> None:
        """What Salesforce computes: IsClosed and ClosedDate, stage history, contact roles."""
        moment = sf_datetime(at or datetime.now(UTC))
        if previous is not None:
            row["LastModifiedDate"] = moment
        if name == "Case" and (previous is None or previous.get("Status") != row.get("Status")):
            closed = row.get("Status") == "Closed"
            row["IsClosed"], row["ClosedDate"] = closed, (moment if closed else None)
        if name == "Opportunity" and (previous is None or previous.get("StageName") != row.get("StageName")):
            stage = next((s for s in OPPORTUNITY_STAGES if s[0] == row["StageName"]), None)
            row["IsClosed"], row["IsWon"] = bool(stage and stage[1]), bool(stage and stage[2])
            self._insert("OpportunityHistory", {"OpportunityId": row["Id"], "StageName": row["StageName"],
                                                "CloseDate": row.get("CloseDate"), "CreatedDate": moment})
        if name == "Opportunity" and previous is None and row.get("ContactId"):
            self._insert("OpportunityContactRole", {"OpportunityId": row["Id"], "ContactId": row["ContactId"],
                                                    "IsPrimary": True})
        if name == "Task":
            row["IsClosed"] = row.get("Status") == "Completed"

    def _check(self, spec: ObjectSpec, body: dict[str, Any], *, creating: bool) -> None:
        for name, value in body.items():
            if name in spec.read_only or (name in spec.create_only and not creating):
                raise Refusal(error(
                    400, "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {name}. Please check the security settings of this field "
                    "and verify that it is read/write for your profile or permission set.", [name]))
            if name not in spec.writable and name not in spec.create_only:
                raise Refusal(error(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {spec.name}"))
            spec.check_value(name, value, self._tables)
        if creating:
            missing = [f for f in sorted(spec.required) if body.get(f) in (None, "")]
            if missing:
                raise Refusal(error(400, "REQUIRED_FIELD_MISSING",
                                    f"Required fields are missing: [{', '.join(missing)}]", missing))

    def _write(self, spec: ObjectSpec, row: dict[str, Any], body: dict[str, Any], at: datetime | None = None) -> None:
        previous = dict(row)
        row.update(body)
        self._derive(spec.name, row, previous, at)

    def _find(self, name: str, field: str, value: str) -> dict[str, Any] | None:
        return next((r for r in self._tables[name].values() if r.get(field) == value), None)

    def _view(self, spec: ObjectSpec, row: dict[str, Any], fields: list[str] | None, version: str) -> dict[str, Any]:
        shown = {f: row.get(f) for f in fields} if fields else dict(row)
        url = f"/services/data/{version}/sobjects/{spec.name}/{row['Id']}"
        return {"attributes": {"type": spec.name, "url": url}, **shown}

    def _fields_arg(self, spec: ObjectSpec, request: Request) -> list[str] | None:
        fields = [f.strip() for f in (request.arg("fields") or "").split(",") if f.strip()]
        unknown = [f for f in fields if f not in spec.all_fields]
        if unknown:
            raise Refusal(error(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on entity '{spec.name}'."))
        return (fields + ["Id"] if "Id" not in fields else fields) if fields else None

    # --- handlers -----------------------------------------------------------------------------
    def describe(self, request: Request) -> Response:
        spec = self._spec(request.params["obj"])
        fields = [{"name": n, "externalId": n == self.external_id_field, "unique": n == self.external_id_field,
                   "createable": n in spec.writable or n in spec.create_only, "updateable": n in spec.writable}
                  for n in sorted(spec.all_fields)]
        return Response(200, {"name": spec.name, "label": spec.name, "createable": True, "updateable": True,
                              "fields": fields})

    def create(self, request: Request) -> Response:
        spec = self._spec(request.params["obj"])
        body = request.json() or {}
        self._check(spec, body, creating=True)
        row = self._insert(spec.name, body)
        return Response(201, {"id": row["Id"], "success": True, "errors": []})

    def get(self, request: Request) -> Response:
        spec = self._spec(request.params["obj"])
        row = self._tables[spec.name].get(unquote(request.params["id"]))
        if row is None:
            return not_found()
        return Response(200, self._view(spec, row, self._fields_arg(spec, request), request.params["version"]))

    def update(self, request: Request) -> Response:
        spec = self._spec(request.params["obj"])
        row = self._tables[spec.name].get(unquote(request.params["id"]))
        if row is None:
            return not_found()
        body = request.json() or {}
        self._check(spec, body, creating=False)
        self._write(spec, row, body)
        return Response(204)

    def _external(self, request: Request) -> tuple[ObjectSpec, str, str]:
        spec = self._spec(request.params["obj"])
        field, value = unquote(request.params["field"]), unquote(request.params["value"])
        if field != self.external_id_field or field not in spec.writable:
            raise Refusal(error(404, "NOT_FOUND",
                                f"Provided external ID field does not exist or is not accessible: {field}"))
        return spec, field, value

    def get_by_field(self, request: Request) -> Response:
        spec, field, value = self._external(request)
        row = self._find(spec.name, field, value)
        if row is None:
            return not_found()
        return Response(200, self._view(spec, row, self._fields_arg(spec, request), request.params["version"]))

    def upsert(self, request: Request) -> Response:
        spec, field, value = self._external(request)
        body = {k: v for k, v in (request.json() or {}).items() if k != field}
        row = self._find(spec.name, field, value)
        if row is not None:
            self._check(spec, body, creating=False)
            self._write(spec, row, body)
            return Response(200, {"id": row["Id"], "success": True, "errors": [], "created": False})
        self._check(spec, body, creating=True)
        row = self._insert(spec.name, {**body, field: value})
        if request.headers.get("x-fake-graph") is None and self.take_drop_after_create():
            raise DropConnection()
        return Response(201, {"id": row["Id"], "success": True, "errors": [], "created": True})

    def query(self, request: Request) -> Response:
        try:
            query = soql.parse(request.arg("q") or "")
        except soql.SoqlError as exc:
            return error(400, exc.code, exc.message)
        spec = self.specs.get(query.object)
        if spec is None:
            return error(400, "INVALID_TYPE", f"sObject type '{query.object}' is not supported.")
        for conjunction in query.where:
            for field, _, _ in conjunction:
                if field not in spec.all_fields:
                    return error(400, "INVALID_FIELD", f"No such column '{field}' on entity '{spec.name}'.")
                if field in spec.not_filterable:
                    return error(400, "INVALID_FIELD", f"field '{field}' can not be filtered in a query call")
        version = request.params["version"]
        records = []
        for row in soql.select(list(self._tables[spec.name].values()), query):
            view = self._view(spec, row, query.fields, version)
            for child in query.children:
                child_object, parent_field = CHILD_RELATIONSHIPS[(spec.name, child.object)]
                child_rows = [r for r in self._tables[child_object].values() if r.get(parent_field) == row["Id"]]
                chosen = soql.select(child_rows, child)
                view[child.object] = None if not chosen else {
                    "totalSize": len(chosen), "done": True,
                    "records": [self._view(self.specs[child_object], r, child.fields, version) for r in chosen]}
            records.append(view)
        return Response(200, {"totalSize": len(records), "done": True, "records": records})

    # --- composite graph ----------------------------------------------------------------------
    def graph(self, request: Request) -> Response:
        graphs = (request.json() or {}).get("graphs") or []
        if not graphs:
            return error(400, "JSON_PARSER_ERROR", "graphs is required")
        answers = [self._run_graph(g, request) for g in graphs]
        created = any(a.pop("_created") for a in answers)
        if self.slow_graphs > 0:
            self.slow_graphs -= 1
            time.sleep(self.slow_graph_seconds)
        if created and self.take_drop_after_create():
            raise DropConnection()
        return Response(200, {"graphs": answers})

    def composite(self, request: Request) -> Response:
        """POST /composite: the same subrequests; with allOrNone a failure rolls back all."""
        if not self.composite_supported:
            return not_found()
        body = request.json() or {}
        if not body.get("compositeRequest"):
            return error(400, "JSON_PARSER_ERROR", "compositeRequest is required")
        answer = self._run_graph(body, request, all_or_none=bool(body.get("allOrNone")))
        if answer.pop("_created") and self.take_drop_after_create():
            raise DropConnection()
        if self.slow_graphs > 0:
            self.slow_graphs -= 1
            time.sleep(self.slow_graph_seconds)
        return Response(200, {"compositeResponse": answer["graphResponse"]["compositeResponse"]})

    def _run_graph(self, graph: dict[str, Any], request: Request, all_or_none: bool = True) -> dict[str, Any]:
        snapshot = copy.deepcopy(self._tables)
        results: list[dict[str, Any]] = []
        answers: dict[str, Any] = {}
        failed = False
        for node in graph.get("compositeRequest") or []:
            reference = str(node.get("referenceId"))
            if failed:
                results.append(self._halted(reference))
                continue
            response = self._run_node(node, answers, request)
            answers[reference] = response.body
            results.append({"body": response.body, "httpHeaders": {}, "httpStatusCode": response.status,
                            "referenceId": reference})
            failed = response.status >= 400 and all_or_none
        if failed:
            self._tables = snapshot
            results = [r if r["httpStatusCode"] >= 400 else self._halted(r["referenceId"]) for r in results]
        created = not failed and any(r["httpStatusCode"] == 201 for r in results)
        return {"graphId": graph.get("graphId"), "graphResponse": {"compositeResponse": results},
                "isSuccessful": not failed, "_created": created}

    @staticmethod
    def _halted(reference: str) -> dict[str, Any]:
        return {"body": [{"errorCode": "PROCESSING_HALTED",
                          "message": "The transaction was rolled back since another operation in the same "
                                     "transaction failed."}],
                "httpHeaders": {}, "httpStatusCode": 400, "referenceId": reference}

    def _run_node(self, node: dict[str, Any], answers: dict[str, Any], request: Request) -> Response:
        def resolve(value: Any) -> Any:
            if isinstance(value, str):
                def one(match: re.Match[str]) -> str:
                    answer = answers.get(match["ref"])
                    if not isinstance(answer, dict) or answer.get(match["field"]) is None:
                        raise Refusal(error(400, "INVALID_REFERENCE",
                                            f"Invalid reference specified. No value for {match[0][2:-1]} found."))
                    return str(answer[match["field"]])
                return REFERENCE.sub(one, value)
            if isinstance(value, dict):
                return {k: resolve(v) for k, v in value.items()}
            return value

        try:
            url, body = resolve(str(node.get("url") or "")), resolve(node.get("body"))
        except Refusal as refusal:
            return refusal.response
        path, _, query = url.partition("?")
        sub = Request(method=str(node.get("method")), path=path, query=parse_qs(query),
                      headers={**request.headers, "x-fake-graph": "1"},
                      body=b"" if body is None else json.dumps(body).encode())
        for method, pattern, handler in self._sobject_routes():
            match = re.match("^" + API + pattern + "$", path)
            if match and method == sub.method:
                sub.params = match.groupdict()
                return self._refusing(handler)(sub)
        return error(400, "INVALID_URL", f"{sub.method} {path} is not supported in a composite graph")

    # --- helpers for tests --------------------------------------------------------------------
    def rows(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._tables[name].values()))

    def records(self) -> list[dict[str, Any]]:
        """The records of the object in use, with their CaseComments, Tasks and no tags."""
        with self.lock:
            out = []
            for row in self._tables[self.record_object].values():
                view = copy.deepcopy(row)
                view["comments"] = self.notes_for(row["Id"])
                view["tasks"] = self.tasks_for(row["Id"])
                view["tags"] = []
                out.append(view)
            return out

    def notes_for(self, record_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy([c for c in self._tables["CaseComment"].values() if c["ParentId"] == record_id])

    def tasks_for(self, record_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy([t for t in self._tables["Task"].values() if t.get("WhatId") == record_id])

    def set_status(self, record_id: str, status: str, closed_at: datetime | None = None) -> None:
        spec = self.specs["Case"]
        spec.check_value("Status", status, self._tables, raising=ValueError)
        with self.lock:
            self._write(spec, self._tables["Case"][record_id], {"Status": status}, closed_at)

    def set_stage(self, record_id: str, stage: str, at: datetime | None = None) -> None:
        spec = self.specs["Opportunity"]
        spec.check_value("StageName", stage, self._tables, raising=ValueError)
        with self.lock:
            self._write(spec, self._tables["Opportunity"][record_id], {"StageName": stage}, at)

    def set_account_status(self, record_id: str, value: str, at: datetime | None = None) -> None:
        spec = self.specs["Account"]
        spec.check_value(self.account_status_field, value, self._tables, raising=ValueError)
        with self.lock:
            self._write(spec, self._tables["Account"][record_id], {self.account_status_field: value}, at)

    def close_record(self, record_id: str, closed_at: datetime) -> None:
        """Close a record of the object in use as an agent would, at `closed_at`."""
        if self.record_object == "Opportunity":
            self.set_stage(record_id, "Closed Won", closed_at)
        elif self.record_object == "Account":
            self.set_account_status(record_id, "Closed", closed_at)
        else:
            self.set_status(record_id, "Closed", closed_at)

    def users(self) -> list[dict[str, Any]]:
        return self.rows("Contact")

    def add_contact(self, **fields: Any) -> str:
        with self.lock:
            return self._insert("Contact", {"FirstName": None, "LastName": None, "Phone": None, "Email": None,
                                            "AccountId": None, **fields})["Id"]

    def add_account(self, **fields: Any) -> str:
        with self.lock:
            return self._insert("Account", fields)["Id"]

    def expire_tokens(self) -> None:
        with self.lock:
            self._tokens.clear()

    def token_requests(self) -> int:
        return self._token_count

    def api_requests(self) -> int:
        return sum(1 for r in self.requests if r.path.startswith("/services/data/"))
