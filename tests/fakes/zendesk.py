"""A fake Zendesk Support account for the Zendesk adapter, following the Support API v2
documentation. Every path works with and without the `.json` suffix, as in Zendesk.

Faithful details:
* API token basic auth: username `{email}/token`, password the token. Wrong credentials
  -> 401 `{"error": "Couldn't authenticate you"}` with `WWW-Authenticate`. `GET /users/me`
  is allowed for anonymous users: without credentials it answers 200 with the anonymous
  user (`"id": null`); set `anonymous_on_bad_credentials = True` to answer wrong
  credentials that way too.
* `GET /users/search?query=...` (free text over name, email and phone, or `field:value`
  terms) and `?external_id=...` (exact); `POST /users` -> 201 `{"user"}`; a taken email or
  external id -> 422 with a `DuplicateValue` detail; a blank name -> 422.
* `GET /tickets` (optionally `?external_id=...`), `POST /tickets` -> 201 `{"ticket", "audit"}`,
  `GET /tickets/{id}`, `PUT /tickets/{id}` (status, subject, `comment` (public unless
  `"public": false`), `tags` replaces, `additional_tags` adds, `remove_tags` removes),
  `GET /tickets/{id}/metrics` -> `{"ticket_metric"}` with `solved_at` and `reopens`,
  `GET /tickets/{id}/comments`. Tags are lower-cased, split on spaces and de-duplicated.
* Idempotency on ticket create: the `Idempotency-Key` header; the first request answers
  `x-idempotency-lookup: miss`, the same key with the same body within two hours replays
  the original answer with `x-idempotency-lookup: hit`, the same key with another body
  -> 400 `{"error": "IdempotentRequestError", "description": "Request parameters don't
  match the given idempotency key"}`.
* Errors: 404 `{"error": "RecordNotFound", "description": "Not found"}`; 422
  `{"error": "RecordInvalid", "description": "Record validation errors", "details":
  {field: [{"description", "error"}]}}`: a ticket without a comment body
  ("Description: cannot be blank"), an unknown requester, an unknown status, and any
  update of a closed ticket ("Status: closed prevents ticket update").
* Statuses: new, open, pending, hold, solved, closed. A new ticket is `new`.
* Rate limit: at most `rate_limit_per_minute` requests per `rate_limit_window_seconds`
  (700 per 60 s by default); every answer carries `X-Rate-Limit`, `X-Rate-Limit-Remaining`,
  `ratelimit-limit`, `ratelimit-remaining`, `ratelimit-reset`; over the limit -> 429 with
  `Retry-After` (whole seconds).

Faults (see tests.fakes.base.Faults): `rate_limit_next` answers 429 with
`Retry-After: <retry_after_seconds>`; `server_error_next` answers 503 (with `Retry-After`
when `server_error_retry_after` is set); `drop_after_create_next` drops the connection
after a ticket create that made a ticket; `delay_seconds` delays every answer. Also
`create_answer_delay_seconds`: a ticket create makes the ticket at once but answers that
much later (a slow answer after the CRM did the work).

Helpers for tests:
* `records()` -> list of ticket dicts (id, subject, description, status, requester_id,
  external_id, tags, created_at, updated_at, solved_at, reopens, ... plus "comments":
  every comment as {id, body, public, author_id, created_at}).
* `notes_for(record_id)` -> the ticket's private comments (the description included:
  the adapter makes it a private first comment).
* `comments_for(record_id)` -> all the ticket's comments.
* `set_status(record_id, status, closed_at=None)` -> set a ticket's status as an agent
  would; solved/closed stamp `solved_at` with `closed_at` (default now; closing a solved
  ticket keeps its solved_at unless `closed_at` is given).
* `close_record(record_id, closed_at)` -> `set_status(record_id, "closed", closed_at)`.
* `users()` -> list of user dicts (id, name, email, phone, external_id, role, ...).
* `add_user(name, email=None, phone=None, external_id=None, role="end-user",
  searchable=True)` -> seed a user, returns its id; `searchable=False` keeps it out of
  `?query=` results (Zendesk's search index lags) while `?external_id=` still finds it.
* `reset()` -> back to a fresh account (the API agent only), no faults, empty request log:
  lets one started fake serve many tests.
* `create_requests()` -> one dict per `POST /tickets`: {"idempotency_key", "lookup"} with
  lookup "miss", "hit", "conflict" or None (no key sent).
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import json
import math
import re
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from tests.fakes.base import DropConnection, FakeServer, Faults, Request, Response

API = "/api/v2"
SUFFIX = r"(?:\.json)?"
STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
SOLVED_STATUSES = ("solved", "closed")
ROLES = ("end-user", "agent", "admin")
IDEMPOTENCY_WINDOW_SECONDS = 2 * 3600
ANONYMOUS_USER = {
    "id": None,
    "url": None,
    "name": "Anonymous user",
    "email": "invalid@example.com",
    "role": "end-user",
    "active": True,
}


def zendesk_time(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error(status: int, code: str, description: str) -> Response:
    return Response(status, {"error": code, "description": description})


def not_found() -> Response:
    return error(404, "RecordNotFound", "Not found")


def invalid(field: str, description: str, code: str = "InvalidValue") -> Response:
    return Response(
        422,
        {
            "error": "RecordInvalid",
            "description": "Record validation errors",
            "details": {field: [{"description": description, "error": code}]},
        },
    )


def normalize_tags(tags: Any) -> list[str]:
    """Zendesk tags: lower case, no spaces (a space separates two tags), each once."""
    if isinstance(tags, str):
        tags = [tags]
    words = (word.lower() for tag in tags or [] for word in str(tag).split())
    return list(dict.fromkeys(words))


def digits(value: Any) -> str:
    return re.sub(r"\D", "", str(value or ""))


class ZendeskFake(FakeServer):
    name = "zendesk"

    def __init__(self, email: str = "agent@example.com", api_token: str = "zendesk-test-token") -> None:
        self.email = email
        self.api_token = api_token
        super().__init__()
        self.reset()

    def reset(self) -> None:
        """Back to a fresh account (only the API agent), with no faults and an empty request log."""
        with self.lock:
            self._reset_state()

    def _reset_state(self) -> None:
        self.faults = Faults()
        self.requests.clear()
        self.anonymous_on_bad_credentials = False
        self.server_error_retry_after: float | None = None
        self.create_answer_delay_seconds = 0.0
        self.rate_limit_per_minute = 700
        self.rate_limit_window_seconds = 60.0
        self._recent: deque[float] = deque()
        self._users: dict[int, dict[str, Any]] = {}
        self._unindexed: set[int] = set()  # users the search index has not caught up with
        self._tickets: dict[int, dict[str, Any]] = {}
        self._idempotency: dict[str, tuple[float, str, dict[str, Any]]] = {}
        self._create_requests: list[dict[str, Any]] = []
        self._user_ids = itertools.count(1001)
        self._ticket_ids = itertools.count(101)
        self._comment_ids = itertools.count(5001)
        self.agent_id = self._new_user("API Agent", self.email, None, None, "admin")

    # --- routing, auth, rate limit ---------------------------------------------------------
    def setup_routes(self) -> None:
        self.route("GET", f"{API}/users/me{SUFFIX}", self.me, authenticated=False)
        self.route("GET", f"{API}/users/search{SUFFIX}", self.search_users)
        self.route("POST", f"{API}/users{SUFFIX}", self.create_user)
        self.route("GET", rf"{API}/users/(?P<id>\d+){SUFFIX}", self.show_user)
        self.route("GET", f"{API}/tickets{SUFFIX}", self.list_tickets)
        self.route("POST", f"{API}/tickets{SUFFIX}", self.create_ticket)
        self.route("GET", rf"{API}/tickets/(?P<id>\d+){SUFFIX}", self.show_ticket)
        self.route("PUT", rf"{API}/tickets/(?P<id>\d+){SUFFIX}", self.update_ticket)
        self.route("GET", rf"{API}/tickets/(?P<id>\d+)/metrics{SUFFIX}", self.ticket_metrics)
        self.route("GET", rf"{API}/tickets/(?P<id>\d+)/comments{SUFFIX}", self.ticket_comments)

    def _credentials(self, request: Request) -> tuple[str, str] | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            username, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ("", "")
        return username, password

    def authenticate(self, request: Request) -> Response | None:
        if self._credentials(request) == (f"{self.email}/token", self.api_token):
            return None
        return Response(
            401, {"error": "Couldn't authenticate you"}, {"WWW-Authenticate": 'Basic realm="Web Password"'}
        )

    def rate_limited_response(self, retry_after: float | None = None) -> Response:
        seconds = self.faults.retry_after_seconds if retry_after is None else retry_after
        return Response(
            429,
            {"error": "APIRateLimitExceeded", "description": "Number of allowed API requests per minute exceeded"},
            {"Retry-After": f"{seconds:g}"},
        )

    def invalid_response(self) -> Response:
        return invalid("subject", "Subject: is too long (maximum is 150 characters)", "TooLong")

    def server_error_response(self) -> Response:
        headers = {}
        if self.server_error_retry_after is not None:
            headers["Retry-After"] = f"{self.server_error_retry_after:g}"
        return Response(503, {"error": "ServiceUnavailable", "description": "Service temporarily unavailable"}, headers)

    def dispatch(self, request: Request) -> Response:
        if request.path.startswith("/__fake__"):
            return super().dispatch(request)
        with self.lock:
            refused = self._over_rate_limit()
        response = refused or super().dispatch(request)
        self._add_rate_limit_headers(response)
        made_ticket = response.status == 201 and isinstance(response.body, dict) and "ticket" in response.body
        if self.create_answer_delay_seconds and made_ticket:
            time.sleep(self.create_answer_delay_seconds)  # outside the lock: the ticket is visible meanwhile
        return response

    def _over_rate_limit(self) -> Response | None:
        now = time.monotonic()
        while self._recent and now - self._recent[0] >= self.rate_limit_window_seconds:
            self._recent.popleft()
        if len(self._recent) >= self.rate_limit_per_minute:
            wait = self._recent[0] + self.rate_limit_window_seconds - now
            return self.rate_limited_response(float(max(1, math.ceil(wait))))
        self._recent.append(now)
        return None

    def _add_rate_limit_headers(self, response: Response) -> None:
        with self.lock:
            remaining = max(0, self.rate_limit_per_minute - len(self._recent))
            reset = self._recent[0] + self.rate_limit_window_seconds - time.monotonic() if self._recent else 0.0
        limit = str(self.rate_limit_per_minute)
        response.headers.setdefault("X-Rate-Limit", limit)
        response.headers.setdefault("X-Rate-Limit-Remaining", str(remaining))
        response.headers.setdefault("ratelimit-limit", limit)
        response.headers.setdefault("ratelimit-remaining", str(remaining))
        response.headers.setdefault("ratelimit-reset", str(max(0, math.ceil(reset))))

    # --- users ---------------------------------------------------------------------------
    def me(self, request: Request) -> Response:
        credentials = self._credentials(request)
        if credentials is None or (self.anonymous_on_bad_credentials and self.authenticate(request)):
            return Response(200, {"user": dict(ANONYMOUS_USER)})
        refused = self.authenticate(request)
        return refused or Response(200, {"user": self._user_view(self._users[self.agent_id])})

    def search_users(self, request: Request) -> Response:
        external_id = request.arg("external_id")
        query = request.arg("query")
        if external_id is not None:
            found = [u for u in self._users.values() if u["external_id"] == external_id]
        elif query:
            indexed = (u for u in self._users.values() if u["id"] not in self._unindexed)
            found = [u for u in indexed if self._matches(u, query)]
        else:
            return error(400, "InvalidEndpoint", "query or external_id is required")
        views = [self._user_view(u) for u in found]
        return Response(200, {"users": views, "next_page": None, "previous_page": None, "count": len(views)})

    @staticmethod
    def _matches(user: dict[str, Any], query: str) -> bool:
        """Every term must match: `field:value` exactly (phone by its digits), free text as
        part of the name, email or phone."""
        for term in query.split():
            field, _, value = term.partition(":")
            if not value:
                field, value = "", term
            value = value.strip('"').lower()
            if field == "type":
                if value != "user":
                    return False
            elif field == "phone":
                if not digits(value) or digits(user["phone"]) != digits(value):
                    return False
            elif field:
                if str(user.get(field) or "").lower() != value:
                    return False
            else:
                texts = [str(user.get(k) or "").lower() for k in ("name", "email", "phone")]
                if not any(value in text for text in texts) and not (
                    digits(value) and digits(value) in digits(user["phone"])
                ):
                    return False
        return True

    def create_user(self, request: Request) -> Response:
        fields = (request.json() or {}).get("user") or {}
        name = str(fields.get("name") or "").strip()
        if not name:
            return invalid("name", "Name: is too short (minimum one character)", "BlankValue")
        role = fields.get("role") or "end-user"
        if role not in ROLES:
            return invalid("role", f"Role: {role} is not a valid role")
        email = fields.get("email")
        if email and any((u["email"] or "").lower() == str(email).lower() for u in self._users.values()):
            return invalid("email", f"Email: {email} is already being used by another user", "DuplicateValue")
        external_id = fields.get("external_id")
        if external_id and any(u["external_id"] == str(external_id) for u in self._users.values()):
            return invalid("external_id", "External has already been taken", "DuplicateValue")
        user_id = self._new_user(name, email, fields.get("phone"), external_id, role)
        return Response(201, {"user": self._user_view(self._users[user_id])})

    def show_user(self, request: Request) -> Response:
        user = self._users.get(int(request.params["id"]))
        return Response(200, {"user": self._user_view(user)}) if user else not_found()

    def _user_view(self, user: dict[str, Any]) -> dict[str, Any]:
        return {**copy.deepcopy(user), "url": f"{self.base_url}{API}/users/{user['id']}.json"}

    def _new_user(self, name: str, email: Any, phone: Any, external_id: Any, role: str) -> int:
        user_id = next(self._user_ids)
        now = zendesk_time()
        self._users[user_id] = {
            "id": user_id,
            "name": name,
            "email": str(email) if email else None,
            "phone": str(phone) if phone else None,
            "external_id": str(external_id) if external_id is not None else None,
            "role": role,
            "active": True,
            "verified": False,
            "tags": [],
            "created_at": now,
            "updated_at": now,
        }
        return user_id

    # --- tickets -------------------------------------------------------------------------
    def list_tickets(self, request: Request) -> Response:
        external_id = request.arg("external_id")
        tickets = [t for t in self._tickets.values() if external_id is None or t["external_id"] == external_id]
        views = [self._view(t) for t in tickets]
        return Response(200, {"tickets": views, "next_page": None, "previous_page": None, "count": len(views)})

    def create_ticket(self, request: Request) -> Response:
        key = request.headers.get("idempotency-key")
        payload = request.json() or {}
        fingerprint = json.dumps(payload, sort_keys=True)
        stored = self._stored_answer(key)
        if stored is not None:
            earlier, answer = stored
            if earlier != fingerprint:
                self._create_requests.append({"idempotency_key": key, "lookup": "conflict"})
                return error(400, "IdempotentRequestError", "Request parameters don't match the given idempotency key")
            self._create_requests.append({"idempotency_key": key, "lookup": "hit"})
            return Response(201, copy.deepcopy(answer), {"x-idempotency-lookup": "hit"})
        self._create_requests.append({"idempotency_key": key, "lookup": "miss" if key else None})
        fields = payload.get("ticket") or {}
        refused = self._check_new_ticket(fields)
        if refused is not None:
            return refused
        ticket = self._new_ticket(fields)
        answer = {"ticket": self._view(ticket), "audit": self._audit(ticket)}
        headers = {"Location": f"{self.base_url}{API}/tickets/{ticket['id']}.json"}
        if key:
            self._idempotency[key] = (time.monotonic(), fingerprint, copy.deepcopy(answer))
            headers["x-idempotency-lookup"] = "miss"
        if self.take_drop_after_create():
            raise DropConnection()
        return Response(201, answer, headers)

    def _stored_answer(self, key: str | None) -> tuple[str, dict[str, Any]] | None:
        """The fingerprint and answer of a create made with this key in the last two hours."""
        stored = self._idempotency.get(key) if key else None
        if stored is None or time.monotonic() - stored[0] > IDEMPOTENCY_WINDOW_SECONDS:
            return None
        return stored[1], stored[2]

    def _check_new_ticket(self, fields: dict[str, Any]) -> Response | None:
        comment = fields.get("comment") or {}
        if not str(comment.get("body") or comment.get("html_body") or fields.get("description") or "").strip():
            return invalid("base", "Description: cannot be blank", "BlankValue")
        requester = fields.get("requester_id")
        if requester is not None and self._users.get(self._int(requester)) is None:
            return invalid("requester", "Requester: is invalid")
        inline = fields.get("requester")
        if inline is not None and (not isinstance(inline, dict) or not str(inline.get("email") or "").strip()):
            # Zendesk identifies an inline requester by email.
            return invalid("requester", "Requester: Email is invalid")
        status = fields.get("status")
        if status is not None and status not in STATUSES:
            return invalid("status", f"Status: {status} is not valid")
        return None

    def _new_ticket(self, fields: dict[str, Any]) -> dict[str, Any]:
        ticket_id = next(self._ticket_ids)
        now = zendesk_time()
        comment = fields.get("comment") or {}
        body = str(comment.get("body") or comment.get("html_body") or fields.get("description"))
        requester = self._int(fields.get("requester_id")) or self._inline_requester(fields.get("requester")) \
            or self.agent_id
        ticket = {
            "id": ticket_id,
            "subject": fields.get("subject"),
            "raw_subject": fields.get("subject"),
            "description": body,
            "status": fields.get("status") or ("open" if fields.get("assignee_id") else "new"),
            "priority": fields.get("priority"),
            "type": fields.get("type"),
            "requester_id": requester,
            "submitter_id": self.agent_id,
            "assignee_id": fields.get("assignee_id"),
            "external_id": str(fields["external_id"]) if fields.get("external_id") is not None else None,
            "tags": normalize_tags(fields.get("tags")),
            "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
            "is_public": comment.get("public", True) is not False,
            "created_at": now,
            "updated_at": now,
            "solved_at": None,
            "reopens": 0,
            "comments": [],
        }
        self._tickets[ticket_id] = ticket
        self._add_comment(ticket, body, comment.get("public", True) is not False)
        if ticket["status"] in SOLVED_STATUSES:
            ticket["solved_at"] = now
        return ticket

    def _inline_requester(self, inline: Any) -> int | None:
        """`ticket.requester: {name, email, locale_id}`: the user holding the email, else a
        new end user with that name and email (Zendesk's "ticket with a new requester")."""
        if not isinstance(inline, dict) or not inline.get("email"):
            return None
        email = str(inline["email"]).lower()
        for user in self._users.values():
            if (user["email"] or "").lower() == email:
                return user["id"]
        return self._new_user(str(inline.get("name") or inline["email"]), inline["email"], None, None, "end-user")

    def show_ticket(self, request: Request) -> Response:
        ticket = self._tickets.get(int(request.params["id"]))
        return Response(200, {"ticket": self._view(ticket)}) if ticket else not_found()

    def update_ticket(self, request: Request) -> Response:
        ticket = self._tickets.get(int(request.params["id"]))
        if ticket is None:
            return not_found()
        if ticket["status"] == "closed":
            return invalid("status", "Status: closed prevents ticket update")
        fields = (request.json() or {}).get("ticket") or {}
        status = fields.get("status")
        if status is not None and status not in STATUSES:
            return invalid("status", f"Status: {status} is not valid")
        comment = fields.get("comment") or {}
        if comment.get("body") or comment.get("html_body"):
            self._add_comment(ticket, str(comment.get("body") or comment.get("html_body")),
                              comment.get("public", True) is not False)
        if "subject" in fields:
            ticket["subject"] = ticket["raw_subject"] = fields["subject"]
        if "tags" in fields:
            ticket["tags"] = normalize_tags(fields["tags"])
        ticket["tags"] = normalize_tags(ticket["tags"] + normalize_tags(fields.get("additional_tags")))
        removed = set(normalize_tags(fields.get("remove_tags")))
        ticket["tags"] = [t for t in ticket["tags"] if t not in removed]
        if status is not None:
            self._apply_status(ticket, status, None)
        ticket["updated_at"] = zendesk_time()
        return Response(200, {"ticket": self._view(ticket), "audit": self._audit(ticket)})

    def ticket_metrics(self, request: Request) -> Response:
        ticket = self._tickets.get(int(request.params["id"]))
        if ticket is None:
            return not_found()
        metric = {
            "id": ticket["id"] + 90000,
            "ticket_id": ticket["id"],
            "url": f"{self.base_url}{API}/ticket_metrics/{ticket['id'] + 90000}.json",
            "created_at": ticket["created_at"],
            "updated_at": ticket["updated_at"],
            "solved_at": ticket["solved_at"],
            "status_updated_at": ticket["updated_at"],
            "reopens": ticket["reopens"],
            "replies": 0,
        }
        return Response(200, {"ticket_metric": metric})

    def ticket_comments(self, request: Request) -> Response:
        ticket = self._tickets.get(int(request.params["id"]))
        if ticket is None:
            return not_found()
        comments = copy.deepcopy(ticket["comments"])
        return Response(200, {"comments": comments, "next_page": None, "previous_page": None, "count": len(comments)})

    def _add_comment(self, ticket: dict[str, Any], body: str, public: bool) -> None:
        ticket["comments"].append(
            {
                "id": next(self._comment_ids),
                "type": "Comment",
                "author_id": self.agent_id,
                "body": body,
                "plain_body": body,
                "public": public,
                "created_at": zendesk_time(),
            }
        )

    def _apply_status(self, ticket: dict[str, Any], status: str, closed_at: datetime | None) -> None:
        was_solved = ticket["status"] in SOLVED_STATUSES
        if status in SOLVED_STATUSES:
            if closed_at is not None or not was_solved:
                ticket["solved_at"] = zendesk_time(closed_at)
        elif was_solved:
            ticket["reopens"] += 1
        ticket["status"] = status

    def _view(self, ticket: dict[str, Any]) -> dict[str, Any]:
        """The ticket as the API shows it: no comments, no metrics."""
        view = {k: copy.deepcopy(v) for k, v in ticket.items() if k not in ("comments", "solved_at", "reopens")}
        view["url"] = f"{self.base_url}{API}/tickets/{ticket['id']}.json"
        return view

    def _audit(self, ticket: dict[str, Any]) -> dict[str, Any]:
        return {"id": next(self._comment_ids), "ticket_id": ticket["id"], "created_at": ticket["updated_at"],
                "author_id": self.agent_id, "events": []}

    @staticmethod
    def _int(value: Any) -> int | None:
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    # --- helpers for tests ---------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._tickets.values()))

    def comments_for(self, record_id: str | int) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._tickets[int(record_id)]["comments"])

    def notes_for(self, record_id: str | int) -> list[dict[str, Any]]:
        return [c for c in self.comments_for(record_id) if not c["public"]]

    def set_status(self, record_id: str | int, status: str, closed_at: datetime | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"not a Zendesk status: {status}")
        with self.lock:
            ticket = self._tickets[int(record_id)]
            self._apply_status(ticket, status, closed_at)
            ticket["updated_at"] = zendesk_time(closed_at)

    def close_record(self, record_id: str | int, closed_at: datetime) -> None:
        self.set_status(record_id, "closed", closed_at)

    def users(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._users.values()))

    def add_user(
        self,
        name: str,
        email: str | None = None,
        phone: str | None = None,
        external_id: str | None = None,
        role: str = "end-user",
        searchable: bool = True,
    ) -> int:
        with self.lock:
            user_id = self._new_user(name, email, phone, external_id, role)
            if not searchable:
                self._unindexed.add(user_id)
            return user_id

    def create_requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._create_requests)
