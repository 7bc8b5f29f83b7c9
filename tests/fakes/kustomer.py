"""A local Kustomer for tests: the part of the REST API v1 the adapter uses, in memory.

Served (all under `Authorization: Bearer <api_key>`; anything else gets Kustomer's 401):

* `GET /v1/users/current`
* `GET /v1/customers/{phone|email|externalId}={value}` (404 when none), `POST /v1/customers`
  (emails, phones and external ids are unique in the org: a second customer with one is refused)
* `GET /v1/conversations/externalId={value}`, `POST /v1/conversations`,
  `GET|PUT|PATCH /v1/conversations/{id}`
* `POST /v1/conversations/{id}/tags` (a list of tag names or ids; unknown names become tags)
* `POST|GET /v1/conversations/{id}/notes`

Answers use JSON:API envelopes (`{"data": {"type", "id", "attributes", "relationships",
"links"}}`), errors the `{"errors": [{"status", "code", "title", "detail", "source"}]}`
shape, and every answer carries `x-ratelimit-limit` / `x-ratelimit-remaining`. More than
`rate_limit_per_minute` requests in 60 s, or a test's `rate_limit_next`, get a 429 with
`Retry-After` and `x-ratelimit-reset`. A conversation's `tags` attribute holds tag ids, as
Kustomer's does. A conversation marked `done` gets `closedAt` and `lastDone.createdAt`.

Helpers for tests (all thread-safe):

* `records()`: every conversation, oldest first, as dicts with `id`, `name`, `externalId`,
  `status`, `customer`, `tags` (tag names), `notes` (note bodies, oldest first; the first is
  the description the adapter writes), `createdAt` and `closedAt` (aware datetimes or None).
* `notes_for(record_id)`, `tags_for(record_id)`: note bodies and tag names of one conversation.
* `set_status(record_id, status, closed_at=None)`: `open`, `snoozed` or `done` (an agent's
  change; `done` closes at `closed_at`, default now). `close_record(record_id, closed_at)`
  is `set_status(record_id, "done", closed_at)`.
* `add_tag(record_id, name)`: an agent tagging the conversation.
* `users()`: every customer as `id`, `name`, `externalId`, `phones` and `emails` (strings).
* `add_customer(name=None, phone=None, email=None, external_id=None)`: a customer that
  already exists in Kustomer; returns its id.
* `slow_create_next(seconds)`: the next conversation is created, then answered that much
  later (outside the server lock), as when Kustomer is slow after the write.
* `reset()`: forget every customer, conversation, tag, request and fault (one server can
  then serve many tests).
Faults from `FakeServer` apply too; `drop_after_create_next` drops the connection after
`POST /v1/conversations` has created the conversation.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from tests.fakes.base import DropConnection, FakeServer, Faults, Request, Response

DEFAULT_API_KEY = "kustomer-test-api-key"
STATUSES = ("open", "snoozed", "done")
ORG_ID = "5f0c1d2e3a4b5c6d7e8f9012"
_OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _error(status: int, code: str, title: str, detail: str, pointer: str | None = None) -> Response:
    error: dict[str, Any] = {"status": str(status), "code": code, "title": title, "detail": detail}
    if pointer:
        error["source"] = {"pointer": pointer}
    return Response(status, {"errors": [error]})


def _bad_request(detail: str, pointer: str | None = None) -> Response:
    return _error(400, "bad_request", "Bad Request", detail, pointer)


def _not_found(kind: str, key: str) -> Response:
    return _error(404, "not_found", "Not Found", f"{kind} {key} not found")


def _relation(kind: str, resource_id: str) -> dict[str, Any]:
    return {"data": {"type": kind, "id": resource_id}, "links": {"self": f"/v1/{kind}s/{resource_id}"}}


class KustomerFake(FakeServer):
    name = "kustomer"

    def __init__(self, api_key: str = DEFAULT_API_KEY, *, rate_limit_per_minute: int = 1000):
        self.api_key = api_key
        self.rate_limit_per_minute = rate_limit_per_minute
        self._ids = itertools.count(1)
        self._customers: dict[str, dict[str, Any]] = {}
        self._conversations: dict[str, dict[str, Any]] = {}
        self._tag_ids: dict[str, str] = {}  # name -> id
        self._slow_creates: deque[float] = deque()
        self._recent: deque[float] = deque()
        self._window_lock = threading.Lock()
        super().__init__()

    # --- FakeServer hooks -----------------------------------------------------------------------

    def setup_routes(self) -> None:
        self.route("GET", r"/v1/users/current", self._current_user)
        self.route("GET", r"/v1/customers/(?P<field>phone|email|externalId)=(?P<value>[^/]+)", self._find_customer)
        self.route("POST", r"/v1/customers", self._create_customer)
        self.route("GET", r"/v1/conversations/externalId=(?P<value>[^/]+)", self._conversation_by_external_id)
        self.route("POST", r"/v1/conversations", self._create_conversation)
        self.route("GET", r"/v1/conversations/(?P<id>[^/=]+)", self._get_conversation)
        self.route("PUT", r"/v1/conversations/(?P<id>[^/=]+)", self._update_conversation)
        self.route("PATCH", r"/v1/conversations/(?P<id>[^/=]+)", self._update_conversation)
        self.route("POST", r"/v1/conversations/(?P<id>[^/=]+)/tags", self._append_tags)
        self.route("POST", r"/v1/conversations/(?P<id>[^/=]+)/notes", self._create_note)
        self.route("GET", r"/v1/conversations/(?P<id>[^/=]+)/notes", self._list_notes)

    def authenticate(self, request: Request) -> Response | None:
        if request.headers.get("authorization") == f"Bearer {self.api_key}":
            return None
        return _error(401, "unauthorized", "Unauthorized", "Invalid or missing API key")

    def rate_limited_response(self, retry_after: float | None = None) -> Response:
        wait = self.faults.retry_after_seconds if retry_after is None else retry_after
        response = _error(429, "too_many_requests", "Too Many Requests", "API rate limit exceeded")
        response.headers.update({"Retry-After": f"{wait:g}", "x-ratelimit-reset": f"{wait:g}",
                                 "x-ratelimit-remaining": "0"})
        return response

    def server_error_response(self) -> Response:
        return _error(503, "service_unavailable", "Service Unavailable", "The service is temporarily unavailable")

    def dispatch(self, request: Request) -> Response:
        if request.path.startswith("/__fake__"):
            return super().dispatch(request)
        remaining, wait = self._spend_budget()
        response = self.rate_limited_response(wait) if wait is not None else super().dispatch(request)
        response.headers.setdefault("x-ratelimit-limit", str(self.rate_limit_per_minute))
        response.headers.setdefault("x-ratelimit-remaining", str(max(0, remaining)))
        if request.method == "POST" and request.path == "/v1/conversations" and response.status == 201:
            self._answer_slowly()
        return response

    def _spend_budget(self) -> tuple[int, float | None]:
        """Kustomer's per-minute limit: (requests left, or seconds to wait when exceeded)."""
        with self._window_lock:
            now = time.monotonic()
            while self._recent and now - self._recent[0] >= 60:
                self._recent.popleft()
            if len(self._recent) >= self.rate_limit_per_minute:
                return 0, max(1.0, 60 - (now - self._recent[0]))
            self._recent.append(now)
            return self.rate_limit_per_minute - len(self._recent), None

    def _answer_slowly(self) -> None:
        with self.lock:
            delay = self._slow_creates.popleft() if self._slow_creates else 0.0
        if delay:
            time.sleep(delay)

    # --- resources ------------------------------------------------------------------------------

    def _new_id(self) -> str:
        return f"{0x600000000000000000000000 + next(self._ids):024x}"

    def _customer_resource(self, customer: dict[str, Any]) -> dict[str, Any]:
        attributes = {key: value for key, value in customer.items() if key != "id"}
        for key in ("createdAt", "updatedAt", "modifiedAt"):
            attributes[key] = _iso(customer[key])
        attributes["displayName"] = customer.get("name") or ""
        return {
            "type": "customer",
            "id": customer["id"],
            "attributes": attributes,
            "relationships": {"org": _relation("org", ORG_ID)},
            "links": {"self": f"/v1/customers/{customer['id']}"},
        }

    def _conversation_resource(self, conversation: dict[str, Any]) -> dict[str, Any]:
        last_done = conversation["lastDoneAt"]
        attributes = {
            "name": conversation["name"],
            "externalId": conversation["externalId"],
            "status": conversation["status"],
            "tags": list(conversation["tags"]),
            "channels": [],
            "messageCount": 0,
            "noteCount": len(conversation["notes"]),
            "createdAt": _iso(conversation["createdAt"]),
            "updatedAt": _iso(conversation["updatedAt"]),
            "modifiedAt": _iso(conversation["updatedAt"]),
            "closedAt": _iso(conversation["closedAt"]),
            "lastDone": {"createdAt": _iso(last_done)} if last_done else None,
        }
        return {
            "type": "conversation",
            "id": conversation["id"],
            "attributes": attributes,
            "relationships": {
                "org": _relation("org", ORG_ID),
                "customer": _relation("customer", conversation["customer"]),
            },
            "links": {"self": f"/v1/conversations/{conversation['id']}"},
        }

    def _note_resource(self, conversation: dict[str, Any], note: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "note",
            "id": note["id"],
            "attributes": {
                "body": note["body"],
                "createdAt": _iso(note["createdAt"]),
                "updatedAt": _iso(note["createdAt"]),
            },
            "relationships": {
                "conversation": _relation("conversation", conversation["id"]),
                "customer": _relation("customer", conversation["customer"]),
            },
            "links": {"self": f"/v1/notes/{note['id']}"},
        }

    def _set_status(self, conversation: dict[str, Any], status: str, at: datetime) -> None:
        if status == "done" and conversation["status"] != "done":
            conversation["closedAt"] = at
            conversation["lastDoneAt"] = at
        elif status != "done":
            conversation["closedAt"] = None
        conversation["status"] = status
        conversation["updatedAt"] = _now()

    def _tag_id(self, name_or_id: str) -> str:
        if name_or_id in self._tag_ids.values():
            return name_or_id
        return self._tag_ids.setdefault(name_or_id, self._new_id())

    def _tag_names(self, conversation: dict[str, Any]) -> list[str]:
        names = {tag_id: name for name, tag_id in self._tag_ids.items()}
        return [names[tag_id] for tag_id in conversation["tags"]]

    # --- handlers -------------------------------------------------------------------------------

    def _current_user(self, request: Request) -> Response:
        attributes = {"name": "CRM records integration", "userType": "machine", "roles": ["org.user"]}
        return Response(200, {"data": {"type": "user", "id": "5f0c1d2e3a4b5c6d7e8f9013", "attributes": attributes,
                                       "relationships": {"org": _relation("org", ORG_ID)}}})

    def _customer_matching(self, field: str, value: str) -> dict[str, Any] | None:
        for customer in self._customers.values():
            if field == "externalId" and customer["externalId"] == value:
                return customer
            if field == "phone" and value in (p["phone"] for p in customer["phones"]):
                return customer
            if field == "email" and value.lower() in (e["email"].lower() for e in customer["emails"]):
                return customer
        return None

    def _find_customer(self, request: Request) -> Response:
        field, value = request.params["field"], unquote(request.params["value"])
        customer = self._customer_matching(field, value)
        if customer is None:
            return _not_found("Customer", f"with {field} {value}")
        return Response(200, {"data": self._customer_resource(customer)})

    def _customer_problem(self, body: Any) -> Response | None:
        if not isinstance(body, dict):
            return _bad_request('"value" must be an object')
        for index, entry in enumerate(body.get("emails") or []):
            if "@" not in str(entry.get("email") or ""):
                return _bad_request('"email" must be a valid email', f"/emails/{index}/email")
        for index, entry in enumerate(body.get("phones") or []):
            if not entry.get("phone"):
                return _bad_request('"phone" is not allowed to be empty', f"/phones/{index}/phone")
        identifiers = [("externalId", body.get("externalId"))]
        identifiers += [("email", e["email"]) for e in body.get("emails") or []]
        identifiers += [("phone", p["phone"]) for p in body.get("phones") or []]
        for field, value in identifiers:
            if value and self._customer_matching(field, value):
                return _error(409, "conflict", "Conflict", f"A customer with {field} {value} already exists")
        return None

    def _create_customer(self, request: Request) -> Response:
        body = request.json()
        problem = self._customer_problem(body)
        if problem is not None:
            return problem
        now = _now()
        customer = {
            "id": self._new_id(),
            "name": body.get("name"),
            "externalId": body.get("externalId"),
            "emails": [
                {"type": e.get("type", "home"), "email": e["email"], "verified": False}
                for e in body.get("emails") or []
            ],
            "phones": [
                {"type": p.get("type", "mobile"), "phone": p["phone"], "verified": False}
                for p in body.get("phones") or []
            ],
            "createdAt": now,
            "updatedAt": now,
            "modifiedAt": now,
        }
        self._customers[customer["id"]] = customer
        return Response(201, {"data": self._customer_resource(customer)})

    def _conversation_by_external_id(self, request: Request) -> Response:
        value = unquote(request.params["value"])
        for conversation in self._conversations.values():
            if conversation["externalId"] == value:
                return Response(200, {"data": self._conversation_resource(conversation)})
        return _not_found("Conversation", f"with externalId {value}")

    def _conversation_problem(self, body: Any, *, creating: bool) -> Response | None:
        if not isinstance(body, dict):
            return _bad_request('"value" must be an object')
        if creating:
            customer = body.get("customer")
            if not isinstance(customer, str) or not _OBJECT_ID.match(customer):
                return _bad_request('"customer" must be a valid ObjectId', "/customer")
            if customer not in self._customers:
                return _bad_request(f"Customer {customer} does not exist", "/customer")
        if "status" in body and body["status"] not in STATUSES:
            return _bad_request('"status" must be one of [open, snoozed, done]', "/status")
        tags = body.get("tags", [])
        if not isinstance(tags, list) or any(t not in self._tag_ids.values() for t in tags):
            return _bad_request('"tags" must be an array of tag ids', "/tags")
        return None

    def _create_conversation(self, request: Request) -> Response:
        body = request.json()
        problem = self._conversation_problem(body, creating=True)
        if problem is not None:
            return problem
        now = _now()
        conversation = {
            "id": self._new_id(), "customer": body["customer"], "name": body.get("name") or "",
            "externalId": body.get("externalId"), "status": "open", "tags": list(body.get("tags", [])),
            "notes": [], "createdAt": now, "updatedAt": now, "closedAt": None, "lastDoneAt": None,
        }
        self._set_status(conversation, body.get("status", "open"), now)
        self._conversations[conversation["id"]] = conversation
        if self.take_drop_after_create():
            raise DropConnection()
        return Response(201, {"data": self._conversation_resource(conversation)})

    def _get_conversation(self, request: Request) -> Response:
        conversation = self._conversations.get(request.params["id"])
        if conversation is None:
            return _not_found("Conversation", request.params["id"])
        return Response(200, {"data": self._conversation_resource(conversation)})

    def _update_conversation(self, request: Request) -> Response:
        conversation = self._conversations.get(request.params["id"])
        if conversation is None:
            return _not_found("Conversation", request.params["id"])
        body = request.json()
        problem = self._conversation_problem(body, creating=False)
        if problem is not None:
            return problem
        if "name" in body:
            conversation["name"] = body["name"]
        if "tags" in body:
            conversation["tags"] = list(body["tags"])  # Kustomer replaces the whole list
        if "status" in body:
            self._set_status(conversation, body["status"], _now())
        conversation["updatedAt"] = _now()
        return Response(200, {"data": self._conversation_resource(conversation)})

    def _append_tags(self, request: Request) -> Response:
        conversation = self._conversations.get(request.params["id"])
        if conversation is None:
            return _not_found("Conversation", request.params["id"])
        body = request.json()
        if not isinstance(body, list) or not all(isinstance(t, str) and t for t in body):
            return _bad_request('"value" must be an array of tag names or ids')
        for name_or_id in body:
            tag_id = self._tag_id(name_or_id)
            if tag_id not in conversation["tags"]:
                conversation["tags"].append(tag_id)
        conversation["updatedAt"] = _now()
        return Response(200, {"data": self._conversation_resource(conversation)})

    def _create_note(self, request: Request) -> Response:
        conversation = self._conversations.get(request.params["id"])
        if conversation is None:
            return _not_found("Conversation", request.params["id"])
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("body"), str) or not body["body"]:
            return _bad_request('"body" is required', "/body")
        note = {"id": self._new_id(), "body": body["body"], "createdAt": _now()}
        conversation["notes"].append(note)
        return Response(201, {"data": self._note_resource(conversation, note)})

    def _list_notes(self, request: Request) -> Response:
        conversation = self._conversations.get(request.params["id"])
        if conversation is None:
            return _not_found("Conversation", request.params["id"])
        notes = [self._note_resource(conversation, note) for note in conversation["notes"]]
        path = f"/v1/conversations/{conversation['id']}/notes"
        return Response(200, {"data": notes, "links": {"self": path, "first": path, "prev": None, "next": None},
                              "meta": {"page": 1, "pageSize": len(notes)}})

    # --- helpers for tests ----------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {"id": c["id"], "name": c["name"], "externalId": c["externalId"], "status": c["status"],
                 "customer": c["customer"], "tags": self._tag_names(c), "notes": [n["body"] for n in c["notes"]],
                 "createdAt": c["createdAt"], "closedAt": c["closedAt"]}
                for c in self._conversations.values()
            ]

    def notes_for(self, record_id: str) -> list[str]:
        with self.lock:
            return [note["body"] for note in self._conversations[record_id]["notes"]]

    def tags_for(self, record_id: str) -> list[str]:
        with self.lock:
            return self._tag_names(self._conversations[record_id])

    def set_status(self, record_id: str, status: str, closed_at: datetime | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"Kustomer statuses are {STATUSES}, not {status!r}")
        with self.lock:
            self._set_status(self._conversations[record_id], status, closed_at or _now())

    def close_record(self, record_id: str, closed_at: datetime) -> None:
        self.set_status(record_id, "done", closed_at)

    def add_tag(self, record_id: str, name: str) -> None:
        with self.lock:
            conversation = self._conversations[record_id]
            tag_id = self._tag_id(name)
            if tag_id not in conversation["tags"]:
                conversation["tags"].append(tag_id)

    def users(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {"id": c["id"], "name": c["name"], "externalId": c["externalId"],
                 "phones": [p["phone"] for p in c["phones"]], "emails": [e["email"] for e in c["emails"]]}
                for c in self._customers.values()
            ]

    def add_customer(self, name: str | None = None, phone: str | None = None, email: str | None = None,
                     external_id: str | None = None) -> str:
        now = _now()
        customer = {
            "id": self._new_id(), "name": name, "externalId": external_id,
            "emails": [{"type": "home", "email": email, "verified": False}] if email else [],
            "phones": [{"type": "mobile", "phone": phone, "verified": False}] if phone else [],
            "createdAt": now, "updatedAt": now, "modifiedAt": now,
        }
        with self.lock:
            self._customers[customer["id"]] = customer
        return customer["id"]

    def reset(self) -> None:
        with self.lock, self._window_lock:
            self._customers.clear()
            self._conversations.clear()
            self._tag_ids.clear()
            self._slow_creates.clear()
            self._recent.clear()
            self.requests.clear()
            self.faults = Faults()

    def slow_create_next(self, seconds: float) -> None:
        with self.lock:
            self._slow_creates.append(seconds)
