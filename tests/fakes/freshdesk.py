"""A fake Freshdesk helpdesk for the Freshdesk adapter, following the API v2 documentation:
the current agent, contacts (list with filters, create), tickets (list with filters, create,
view with `include=stats`, update), private notes, and the ticket filter (search) API.

Faithful details:
* Basic auth with the API key as user name (the password is not checked, as Freshdesk
  ignores it). A missing or wrong key -> 401
  {"code": "invalid_credentials", "message": "You have to be logged in to perform this action."}.
* A refused request -> 400 {"description": "Validation failed", "errors": [{"field",
  "message", "code"}]} with the documented codes (missing_field, invalid_value,
  invalid_field, datatype_mismatch). A second contact with the same email or
  unique_external_id -> 409 with code "duplicate_value" and `additional_info.user_id`.
* An unknown ticket -> 404 with an empty body.
* Every answer carries X-RateLimit-Total, X-RateLimit-Remaining,
  X-RateLimit-Used-CurrentRequest; each `include=` embed costs extra calls. With
  `rate_limit_per_minute` set, requests past it in a rolling minute get 429 with Retry-After.
* Ticket list: `requester_id`, `email`, `updated_since`, `order_by`, `order_type`, `page`,
  `per_page` (at most 100, default 30), `include`; without `updated_since` only tickets
  created in the last 30 days; a `Link: <...>; rel="next"` header when another page exists.
* Filter API: GET /api/v2/search/tickets?query="..." with clauses `field:value` or
  `field:'text'` joined by AND / OR, over status, priority, tag, type, group_id, agent_id and
  custom fields; answers {"results": [...], "total": n}, 30 a page, pages 1..10. Its index
  lags: tickets created in the last `search_lag_seconds` (default 0) are not found yet.
* Statuses 2 Open, 3 Pending, 4 Resolved, 5 Closed (plus any in `custom_statuses`); the
  ticket's `stats` record resolved_at, closed_at, reopened_at and status_updated_at.

Faults (see tests.fakes.base.Faults): `rate_limit_next` answers 429 with Retry-After and the
rate-limit headers; `server_error_next` answers 500; `drop_after_create_next` drops the
connection after a ticket was created.

Helpers for tests:
* `records()` -> list of ticket dicts (id, subject, description (HTML), description_text,
  requester_id, status, priority, source, tags, custom_fields, created_at, updated_at,
  "stats": {...}, "notes": [note dicts]).
* `notes_for(record_id)` -> the ticket's notes: dicts with id, ticket_id, body (HTML),
  body_text, private, incoming, user_id, created_at.
* `set_status(record_id, status, closed_at=None)` -> set a ticket's status (2, 3, 4, 5 or
  a custom one); 4 stamps stats.resolved_at, 5 stamps stats.closed_at (and resolved_at when
  unset) with `closed_at` (default now); 2 or 3 after 4/5 stamps stats.reopened_at.
* `close_record(record_id, closed_at)` -> `set_status(record_id, 5, closed_at)`.
* `users()` -> list of contact dicts (id, name, email, phone, mobile, unique_external_id, ...).
* `add_contact(**fields)` -> seed a contact, returns its id.
* `add_ticket(requester_id, **fields)` -> seed a ticket (fields as in the API, plus
  `created_at` as a datetime to make it older), returns its id.
* `set_tags(record_id, tags)` -> replace a ticket's tags, as an agent would.
* `reset()` -> back to an empty helpdesk with no faults and default switches.

Switches (plain attributes): `unique_external_id_enabled` (False: the account lacks the
contact field, which is then refused as invalid_field), `search_lag_seconds`,
`slow_create_seconds` (a ticket create answers this much later, after creating),
`rate_limit_per_minute` (None: counted, not enforced), `custom_statuses` ({6: "Waiting"}),
`custom_ticket_fields` (the custom ticket fields the account has).
"""

from __future__ import annotations

import base64
import copy
import html
import itertools
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from tests.fakes.base import DropConnection, FakeServer, Faults, Handler, Request, Response

Matcher = Callable[[dict[str, Any]], bool]

API = "/api/v2"
DEFAULT_API_KEY = "fake-freshdesk-api-key"
STANDARD_STATUSES = (2, 3, 4, 5)
PRIORITIES = (1, 2, 3, 4)
SOURCES = (1, 2, 3, 5, 6, 7, 9, 10)
SUBJECT_MAX = 255
DEFAULT_LIST_DAYS = 30
SEARCH_PAGE_SIZE = 30
SEARCH_MAX_PAGE = 10
SEARCH_FIELDS = {"status", "priority", "tag", "type", "group_id", "agent_id"}
TICKET_CREATE_FIELDS = {
    "name", "requester_id", "email", "facebook_id", "phone", "twitter_id", "unique_external_id",
    "subject", "type", "status", "priority", "description", "responder_id", "cc_emails",
    "custom_fields", "due_by", "email_config_id", "fr_due_by", "group_id", "parent_id",
    "product_id", "source", "tags", "company_id",
}
TICKET_UPDATE_FIELDS = TICKET_CREATE_FIELDS - {"cc_emails", "parent_id"}
CONTACT_FIELDS = {
    "name", "email", "phone", "mobile", "twitter_id", "unique_external_id", "other_emails",
    "company_id", "view_all_tickets", "other_companies", "address", "description", "job_title",
    "language", "tags", "time_zone", "custom_fields",
}
CONTACT_FILTERS = {
    "email", "mobile", "phone", "company_id", "state", "updated_since", "unique_external_id", "page", "per_page",
}
TICKET_FILTERS = {"filter", "requester_id", "email", "unique_external_id", "company_id", "updated_since",
                  "order_by", "order_type", "include", "page", "per_page"}
TICKET_ORDERS = ("created_at", "due_by", "updated_at", "status")
LIST_EMBEDS = ("requester", "stats", "description")
EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CLAUSE = re.compile(r"^\s*(?P<field>\w+):(?:'(?P<text>[^']*)'|(?P<bare>[^\s()']+))\s*$")
AGENT_ID = 43000000001


def fd_time(moment: datetime) -> str:
    """Freshdesk's timestamp form: UTC, seconds, a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now() -> datetime:
    return datetime.now(UTC)


def parse_input_time(value: str) -> datetime | None:
    """The date forms Freshdesk accepts as input (YYYY-MM-DD, with time, with offset or Z)."""
    text = value.strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def field_error(field: str, message: str, code: str) -> dict[str, str]:
    return {"field": field, "message": message, "code": code}


def invalid_field(field: str) -> dict[str, str]:
    return field_error(field, "Unexpected/invalid field in request", "invalid_field")


def unknown_fields(body: dict[str, Any], allowed: set[str]) -> list[dict[str, str]]:
    return [invalid_field(f) for f in body if f not in allowed]


def invalid_value(field: str, message: str) -> dict[str, str]:
    return field_error(field, message, "invalid_value")


def not_one_of(field: str, values: Iterable[Any], *, several: bool = False) -> dict[str, str]:
    listed = ",".join(str(v) for v in values)
    return invalid_value(field, f"It should be {'one/more' if several else 'one'} of these values: '{listed}'")


def too_long(field: str, value: str) -> dict[str, str]:
    return invalid_value(field, f"Has {len(value)} characters, it can have maximum of {SUBJECT_MAX} characters")


def validation_failed(*errors: dict[str, Any], status: int = 400) -> Response:
    return Response(status, {"description": "Validation failed", "errors": list(errors)})


def strip_html(text: str) -> str:
    return html.unescape(re.sub(r"<br\s*/?>", "\n", re.sub(r"<(?!br)[^>]+>", "", text)))


class FreshdeskFake(FakeServer):
    name = "freshdesk"

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        custom_ticket_fields: tuple[str, ...] = ("cf_ccai_session_id",),
        rate_limit_total: int = 200,
    ) -> None:
        self.api_key = api_key
        self._initial_custom_fields = tuple(custom_ticket_fields)
        self.rate_limit_total = rate_limit_total
        self._contact_ids = itertools.count(47000000001)
        self._ticket_ids = itertools.count(1)
        self._note_ids = itertools.count(61000000001)
        super().__init__()
        self.reset()

    def reset(self) -> None:
        """Forget every contact, ticket, note, request and fault, and the switches below
        (ids keep counting up), so one running server can serve many tests."""
        with self.lock:
            self.custom_ticket_fields = list(self._initial_custom_fields)
            self.custom_statuses: dict[int, str] = {}
            self.unique_external_id_enabled = True
            self.search_lag_seconds = 0.0
            self.slow_create_seconds = 0.0
            self.rate_limit_per_minute: int | None = None
            self.faults = Faults()
            self.requests.clear()
            self._calls: deque[float] = deque()
            self._contacts: dict[int, dict[str, Any]] = {}
            self._tickets: dict[int, dict[str, Any]] = {}
            self._notes: dict[int, list[dict[str, Any]]] = {}
            self._stats: dict[int, dict[str, Any]] = {}

    def dispatch(self, request: Request) -> Response:
        response = super().dispatch(request)
        if request.method == "POST" and request.path == f"{API}/tickets" and response.status == 201:
            # "Created, but the answer came late": the ticket exists while the client waits.
            time.sleep(self.slow_create_seconds)
        return response

    # --- routes -------------------------------------------------------------------------------
    def setup_routes(self) -> None:
        self.route("GET", API + r"/agents/me", self._api(self.me))
        self.route("GET", API + r"/contacts", self._api(self.list_contacts))
        self.route("POST", API + r"/contacts", self._api(self.create_contact))
        self.route("GET", API + r"/tickets", self._api(self.list_tickets))
        self.route("POST", API + r"/tickets", self._api(self.create_ticket))
        self.route("GET", API + r"/search/tickets", self._api(self.search_tickets))
        self.route("GET", API + r"/tickets/(?P<id>\d+)", self._api(self.view_ticket))
        self.route("PUT", API + r"/tickets/(?P<id>\d+)", self._api(self.update_ticket))
        self.route("POST", API + r"/tickets/(?P<id>\d+)/notes", self._api(self.create_note))
        self.route("GET", API + r"/tickets/(?P<id>\d+)/conversations", self._api(self.list_conversations))

    def authenticate(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        key = None
        if header.startswith("Basic "):
            try:
                key = base64.b64decode(header[len("Basic "):]).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = None
        if key != self.api_key:
            return Response(
                401,
                {"code": "invalid_credentials", "message": "You have to be logged in to perform this action."},
                self._limit_headers(1),
            )
        return None

    def rate_limited_response(self) -> Response:
        headers = self._limit_headers(1, remaining=0)
        headers["Retry-After"] = f"{self.faults.retry_after_seconds:g}"
        return Response(429, {"message": "You have exceeded the limit of requests per minute"}, headers)

    def server_error_response(self) -> Response:
        return Response(500, {"code": "internal_error", "message": "We're sorry, but something went wrong."})

    def _api(self, handler: Handler) -> Handler:
        """Counts the call against the per-minute limit, adds the headers. Each embed costs one
        more call on a single ticket and two more on the ticket list, as documented."""

        def wrapped(request: Request) -> Response:
            includes = [i for i in (request.arg("include") or "").split(",") if i]
            cost = 1 + len(includes) * (2 if request.path == f"{API}/tickets" else 1)
            wait = self._spend(cost)
            if wait is not None:
                headers = self._limit_headers(cost, remaining=0)
                headers["Retry-After"] = str(max(1, int(wait + 0.999)))
                return Response(429, {"message": "You have exceeded the limit of requests per minute"}, headers)
            response = handler(request)
            response.headers.update(self._limit_headers(cost))
            return response

        return wrapped

    def _spend(self, cost: int) -> float | None:
        """Records the calls; when a limit is set and spent, the seconds until it frees up."""
        now = time.monotonic()
        while self._calls and now - self._calls[0] >= 60:
            self._calls.popleft()
        if self.rate_limit_per_minute is not None and len(self._calls) + cost > self.rate_limit_per_minute:
            return self._calls[0] + 60 - now
        self._calls.extend([now] * cost)
        return None

    def _limit_headers(self, used: int, remaining: int | None = None) -> dict[str, str]:
        total = self.rate_limit_per_minute or self.rate_limit_total
        left = max(0, total - len(self._calls)) if remaining is None else remaining
        return {
            "X-RateLimit-Total": str(total),
            "X-RateLimit-Remaining": str(left),
            "X-RateLimit-Used-CurrentRequest": str(used),
            "X-Freshdesk-API-Version": "latest=v2; requested=v2",
        }

    # --- agents ---------------------------------------------------------------------------------
    def me(self, request: Request) -> Response:
        stamp = fd_time(utc_now())
        return Response(200, {
            "available": True, "occasional": False, "id": AGENT_ID, "ticket_scope": 1, "signature": None,
            "group_ids": [], "role_ids": [], "skill_ids": [], "available_since": None, "type": "support_agent",
            "created_at": stamp, "updated_at": stamp,
            "contact": {"active": True, "email": "api@example.com", "job_title": None, "language": "en",
                        "last_login_at": stamp, "mobile": None, "name": "API Agent", "phone": None,
                        "time_zone": "UTC", "created_at": stamp, "updated_at": stamp},
        })

    # --- contacts -------------------------------------------------------------------------------
    def list_contacts(self, request: Request) -> Response:
        unknown = sorted(set(request.query) - CONTACT_FILTERS)
        if unknown:
            return validation_failed(invalid_field(unknown[0]))
        if "unique_external_id" in request.query and not self.unique_external_id_enabled:
            return validation_failed(invalid_field("unique_external_id"))
        matches = list(self._contacts.values())
        for field in ("email", "phone", "mobile", "unique_external_id"):
            wanted = request.arg(field)
            if wanted is not None:
                matches = [c for c in matches if self._contact_has(c, field, wanted)]
        return Response(200, [copy.deepcopy(c) for c in matches])

    @staticmethod
    def _contact_has(contact: dict[str, Any], field: str, value: str) -> bool:
        if field == "email":
            emails = [contact.get("email"), *contact.get("other_emails", [])]
            return value.lower() in [e.lower() for e in emails if e]
        return contact.get(field) == value

    def create_contact(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            return validation_failed(field_error("", "Request body has invalid json format", "invalid_json"))
        refused = self._check_contact(body)
        if refused is not None:
            return refused
        contact = self._store_contact(body)
        return Response(201, copy.deepcopy(contact), {"Location": f"{self.base_url}{API}/contacts/{contact['id']}"})

    def _check_contact(self, body: dict[str, Any]) -> Response | None:
        allowed = CONTACT_FIELDS if self.unique_external_id_enabled else CONTACT_FIELDS - {"unique_external_id"}
        errors = unknown_fields(body, allowed)
        if errors:
            return validation_failed(*errors)
        if not isinstance(body.get("name"), str) or not body["name"].strip():
            errors.append(field_error("name", "Mandatory attribute missing", "missing_field"))
        if not any(body.get(f) for f in ("email", "phone", "mobile", "twitter_id", "unique_external_id")):
            errors.append(field_error(
                "email", "Please fill at least 1 of email, mobile, phone, twitter_id, unique_external_id fields",
                "missing_field",
            ))
        if body.get("email") and not EMAIL_SHAPE.match(str(body["email"])):
            errors.append(invalid_value("email", "It should be in the 'valid email address' format"))
        if errors:
            return validation_failed(*errors)
        for field in ("email", "unique_external_id"):
            value = body.get(field)
            holder = next((c for c in self._contacts.values() if value and self._contact_has(c, field, value)), None)
            if holder is not None:
                duplicate = field_error(field, "It should be a unique value", "duplicate_value")
                duplicate["additional_info"] = {"user_id": holder["id"]}
                return validation_failed(duplicate, status=409)
        return None

    def _store_contact(self, fields: dict[str, Any]) -> dict[str, Any]:
        stamp = fd_time(utc_now())
        contact_id = next(self._contact_ids)
        contact = {
            "active": False, "address": None, "company_id": None, "description": None, "email": None,
            "id": contact_id, "job_title": None, "language": "en", "mobile": None, "name": None,
            "phone": None, "time_zone": "UTC", "twitter_id": None, "unique_external_id": None,
            "other_emails": [], "custom_fields": {}, "tags": [], "created_at": stamp, "updated_at": stamp,
        }
        contact.update(fields)
        self._contacts[contact_id] = contact
        return contact

    # --- tickets --------------------------------------------------------------------------------
    def create_ticket(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            return validation_failed(field_error("", "Request body has invalid json format", "invalid_json"))
        refused = self._check_ticket(body, creating=True)
        if refused is not None:
            return refused
        ticket = self._store_ticket(body)
        if self.take_drop_after_create():
            raise DropConnection()
        return Response(201, self._present(ticket), {"Location": f"{self.base_url}{API}/tickets/{ticket['id']}"})

    def _check_ticket(self, body: dict[str, Any], *, creating: bool) -> Response | None:
        allowed = TICKET_CREATE_FIELDS if creating else TICKET_UPDATE_FIELDS
        errors = unknown_fields(body, allowed)
        custom = body.get("custom_fields", {})
        if not isinstance(custom, dict):
            errors.append(field_error("custom_fields", "It should be a/an key/value pair", "datatype_mismatch"))
            custom = {}
        for name, value in custom.items():
            if name not in self.custom_ticket_fields:
                errors.append(invalid_field(name))
            elif value is not None and not isinstance(value, str):
                mismatch = "Value set is of type Integer.It should be a/an String"
                errors.append(field_error(name, mismatch, "datatype_mismatch"))
            elif value is not None and len(value) > SUBJECT_MAX:
                errors.append(too_long(name, value))
        if errors:
            return validation_failed(*errors)
        if creating:
            errors.extend(self._check_requester(body))
            for field in ("subject", "description"):
                if not isinstance(body.get(field), str):
                    errors.append(field_error(field, "Mandatory attribute missing", "missing_field"))
        errors.extend(self._check_properties(body))
        return validation_failed(*errors) if errors else None

    def _check_requester(self, body: dict[str, Any]) -> list[dict[str, str]]:
        if "requester_id" in body:
            if body["requester_id"] not in self._contacts:
                return [invalid_value("requester_id", "There is no contact matching the given requester_id")]
            return []
        if body.get("email"):
            return []
        if body.get("phone"):
            # Freshdesk: with a phone and no email, the name is mandatory (it names the new contact).
            if not body.get("name"):
                return [field_error("name", "It should be a/an String", "missing_field")]
            return []
        return [field_error(
            "requester_id", "Please fill at least 1 of requester_id, phone, email, twitter_id, facebook_id, "
            "unique_external_id fields", "missing_field",
        )]

    def _check_properties(self, body: dict[str, Any]) -> list[dict[str, str]]:
        errors = []
        statuses = (*STANDARD_STATUSES, *self.custom_statuses)
        checks = (("status", statuses), ("priority", PRIORITIES), ("source", SOURCES))
        for field, values in checks:
            if field in body and body[field] not in values:
                errors.append(not_one_of(field, values))
        subject = body.get("subject")
        if isinstance(subject, str) and len(subject) > SUBJECT_MAX:
            errors.append(too_long("subject", subject))
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            errors.append(field_error("tags", "It should be a/an Array", "datatype_mismatch"))
        return errors

    def _store_ticket(self, body: dict[str, Any], created_at: datetime | None = None) -> dict[str, Any]:
        requester_id = body.get("requester_id") or self._requester_for(body)
        created = created_at or utc_now()
        custom = {name: None for name in self.custom_ticket_fields}
        custom.update(body.get("custom_fields") or {})
        ticket_id = next(self._ticket_ids)
        description = body.get("description") or ""
        ticket = {
            "id": ticket_id, "subject": body.get("subject"), "description": description,
            "description_text": strip_html(description), "requester_id": requester_id,
            "responder_id": body.get("responder_id"), "group_id": body.get("group_id"),
            "status": body.get("status", 2), "priority": body.get("priority", 1), "source": body.get("source", 2),
            "type": body.get("type"), "tags": list(dict.fromkeys(body.get("tags") or [])), "custom_fields": custom,
            "cc_emails": body.get("cc_emails", []), "fwd_emails": [], "reply_cc_emails": [], "to_emails": None,
            "email_config_id": None, "product_id": None, "company_id": None, "fr_escalated": False,
            "spam": False, "is_escalated": False, "attachments": [],
            "due_by": fd_time(created + timedelta(days=3)), "fr_due_by": fd_time(created + timedelta(days=1)),
            "created_at": fd_time(created), "updated_at": fd_time(created),
        }
        self._tickets[ticket_id] = ticket
        self._notes[ticket_id] = []
        self._stats[ticket_id] = {
            "agent_responded_at": None, "requester_responded_at": None, "first_responded_at": None,
            "status_updated_at": fd_time(created), "reopened_at": None, "resolved_at": None,
            "closed_at": None, "pending_since": None,
        }
        return ticket

    def _requester_for(self, body: dict[str, Any]) -> int:
        """The contact a ticket created with `email` and/or `phone` (+ `name`) belongs to: the
        one holding the email, else the phone (as phone or mobile), else a new contact."""
        email, phone = body.get("email"), body.get("phone")
        for field, value in (("email", email), ("phone", phone), ("mobile", phone)):
            holder = next((c for c in self._contacts.values() if value and self._contact_has(c, field, value)), None)
            if holder is not None:
                return holder["id"]
        fields = {"name": body.get("name") or email or phone, "email": email, "phone": phone}
        return self._store_contact({k: v for k, v in fields.items() if v})["id"]

    def _present(self, ticket: dict[str, Any], includes: tuple[str, ...] = ()) -> dict[str, Any]:
        shown = copy.deepcopy(ticket)
        if "stats" in includes:
            shown["stats"] = dict(self._stats[ticket["id"]])
        if "requester" in includes:
            contact = self._contacts.get(ticket["requester_id"], {})
            shown["requester"] = {k: contact.get(k) for k in ("email", "id", "mobile", "name", "phone")}
        return shown

    def view_ticket(self, request: Request) -> Response:
        ticket = self._tickets.get(int(request.params["id"]))
        if ticket is None:
            return Response(404, None)
        includes = tuple(i for i in (request.arg("include") or "").split(",") if i)
        embeds = ("conversations", "requester", "company", "stats")
        if any(i not in embeds for i in includes):
            return validation_failed(not_one_of("include", embeds, several=True))
        return Response(200, self._present(ticket, includes))

    def update_ticket(self, request: Request) -> Response:
        ticket = self._tickets.get(int(request.params["id"]))
        if ticket is None:
            return Response(404, None)
        body = request.json()
        if not isinstance(body, dict):
            return validation_failed(field_error("", "Request body has invalid json format", "invalid_json"))
        refused = self._check_ticket(body, creating=False)
        if refused is not None:
            return refused
        if "requester_id" in body and body["requester_id"] not in self._contacts:
            refusal = invalid_value("requester_id", "There is no contact matching the given requester_id")
            return validation_failed(refusal)
        now = utc_now()
        for field, value in body.items():
            if field == "custom_fields":
                ticket["custom_fields"].update(value)
            elif field == "tags":
                ticket["tags"] = list(dict.fromkeys(value))  # replaces the whole list
            elif field == "status":
                self._change_status(ticket, value, now)
            else:
                ticket[field] = value
        ticket["updated_at"] = fd_time(now)
        return Response(200, self._present(ticket))

    def _change_status(self, ticket: dict[str, Any], status: int, at: datetime, *, force: bool = False) -> None:
        """Stamps the stats as Freshdesk does; `force` restamps an unchanged status (test helper)."""
        stats = self._stats[ticket["id"]]
        previous = ticket["status"]
        if status == previous and not force:
            return
        stamp = fd_time(at)
        ticket["status"] = status
        stats["status_updated_at"] = stamp
        if status == 4:
            stats["resolved_at"] = stamp
        elif status == 5:
            stats["closed_at"] = stamp
            stats["resolved_at"] = stats["resolved_at"] or stamp
        elif previous in (4, 5):
            stats["reopened_at"] = stamp
        stats["pending_since"] = stamp if status == 3 else None

    def list_tickets(self, request: Request) -> Response:
        unknown = sorted(set(request.query) - TICKET_FILTERS)
        if unknown:
            return validation_failed(invalid_field(unknown[0]))
        page_errors, page, per_page = self._paging(request)
        order_by = request.arg("order_by", "created_at")
        order_type = request.arg("order_type", "desc")
        includes = tuple(i for i in (request.arg("include") or "").split(",") if i)
        if order_by not in TICKET_ORDERS:
            page_errors.append(not_one_of("order_by", TICKET_ORDERS))
        if order_type not in ("asc", "desc"):
            page_errors.append(not_one_of("order_type", ("asc", "desc")))
        if any(i not in LIST_EMBEDS for i in includes):
            page_errors.append(not_one_of("include", LIST_EMBEDS, several=True))
        since = parse_input_time(request.arg("updated_since")) if request.arg("updated_since") else None
        if request.arg("updated_since") and since is None:
            page_errors.append(invalid_value("updated_since", "It should be in the 'valid date-time' format"))
        if page_errors:
            return validation_failed(*page_errors)
        tickets = self._filtered(request, since)
        tickets.sort(key=lambda t: (t[order_by] or "", t["id"]), reverse=order_type == "desc")
        chunk = tickets[(page - 1) * per_page: page * per_page]
        headers = {}
        if len(tickets) > page * per_page:
            query = {k: v[0] for k, v in request.query.items()}
            query["page"] = str(page + 1)
            headers["Link"] = f'<{self.base_url}{API}/tickets?{urlencode(query)}>; rel="next"'
        return Response(200, [self._present(t, includes) for t in chunk], headers)

    @staticmethod
    def _paging(request: Request) -> tuple[list[dict[str, str]], int, int]:
        errors = []
        page_text, per_page_text = request.arg("page", "1"), request.arg("per_page", "30")
        page = int(page_text) if page_text.isdigit() and int(page_text) > 0 else 0
        per_page = int(per_page_text) if per_page_text.isdigit() else 0
        if page == 0:
            errors.append(invalid_value("page", "It should be a Positive Integer"))
        if not 0 < per_page <= 100:
            errors.append(invalid_value("per_page", "It should be a Positive Integer less than or equal to 100"))
        return errors, page or 1, per_page or 30

    def _filtered(self, request: Request, since: datetime | None) -> list[dict[str, Any]]:
        tickets = list(self._tickets.values())
        if since is not None:
            tickets = [t for t in tickets if parse_input_time(t["updated_at"]) >= since]
        else:
            cutoff = utc_now() - timedelta(days=DEFAULT_LIST_DAYS)
            tickets = [t for t in tickets if parse_input_time(t["created_at"]) >= cutoff]
        requester = request.arg("requester_id")
        if requester is not None:
            tickets = [t for t in tickets if str(t["requester_id"]) == requester]
        email = request.arg("email")
        if email is not None:
            ids = {c["id"] for c in self._contacts.values() if self._contact_has(c, "email", email)}
            tickets = [t for t in tickets if t["requester_id"] in ids]
        return tickets

    # --- filter (search) API ------------------------------------------------------------------
    def search_tickets(self, request: Request) -> Response:
        query = request.arg("query") or ""
        if len(query) < 2 or not (query.startswith('"') and query.endswith('"')) or len(query) > 514:
            return validation_failed(invalid_value("query", "Given query is invalid"))
        matcher = self._parse_query(query[1:-1])
        if matcher is None:
            return validation_failed(invalid_value("query", "Given query is invalid"))
        page_text = request.arg("page", "1")
        page = int(page_text) if page_text.isdigit() else 0
        if not 1 <= page <= SEARCH_MAX_PAGE:
            return validation_failed(invalid_value("page", "It should be a Positive Integer less than or equal to 10"))
        indexed_before = utc_now() - timedelta(seconds=self.search_lag_seconds)
        found = [
            t for t in sorted(self._tickets.values(), key=lambda t: t["created_at"], reverse=True)
            if parse_input_time(t["created_at"]) <= indexed_before and matcher(t)
        ]
        chunk = found[(page - 1) * SEARCH_PAGE_SIZE: page * SEARCH_PAGE_SIZE]
        return Response(200, {"results": [self._present(t) for t in chunk], "total": len(found)})

    def _parse_query(self, text: str) -> Matcher | None:
        """`a:1 AND b:'x'` or `a:1 OR a:2`: one kind of operator, no parentheses."""
        for operator, combine in ((" OR ", any), (" AND ", all)):
            if operator in text:
                parts = [self._parse_clause(p) for p in text.split(operator)]
                if any(p is None for p in parts):
                    return None
                return lambda ticket: combine(p(ticket) for p in parts)
        return self._parse_clause(text)

    def _parse_clause(self, text: str) -> Matcher | None:
        match = CLAUSE.match(text)
        if not match:
            return None
        field = match.group("field")
        value = match.group("text") if match.group("text") is not None else match.group("bare")
        if field not in SEARCH_FIELDS and field not in self.custom_ticket_fields:
            return None
        if field == "tag":
            return lambda t: value.lower() in [x.lower() for x in t["tags"]]
        if field in self.custom_ticket_fields:
            return lambda t: str(t["custom_fields"].get(field)) == value
        key = "responder_id" if field == "agent_id" else field
        return lambda t: str(t.get(key)) == value

    # --- notes ----------------------------------------------------------------------------------
    def list_conversations(self, request: Request) -> Response:
        """`GET /tickets/{id}/conversations`: replies and notes, oldest first, 30 a page."""
        ticket = self._tickets.get(int(request.params["id"]))
        if ticket is None:
            return Response(404, None)
        page = int(request.arg("page") or 1)
        per_page = min(100, int(request.arg("per_page") or 30))
        notes = self._notes[ticket["id"]]
        chunk = notes[(page - 1) * per_page: page * per_page]
        headers = {}
        if len(notes) > page * per_page:
            headers["Link"] = f'<{self.base_url}{API}/tickets/{ticket["id"]}/conversations?page={page + 1}>; rel="next"'
        return Response(200, [copy.deepcopy(n) for n in chunk], headers)

    def create_note(self, request: Request) -> Response:
        ticket = self._tickets.get(int(request.params["id"]))
        if ticket is None:
            return Response(404, None)
        body = request.json()
        if not isinstance(body, dict):
            return validation_failed(field_error("", "Request body has invalid json format", "invalid_json"))
        allowed = {"body", "incoming", "notify_emails", "private", "user_id"}
        errors = unknown_fields(body, allowed)
        if not isinstance(body.get("body"), str) or not body["body"]:
            errors.append(field_error("body", "It should be a/an String", "missing_field"))
        if "private" in body and not isinstance(body["private"], bool):
            errors.append(field_error("private", "It should be a/an Boolean", "datatype_mismatch"))
        if errors:
            return validation_failed(*errors)
        stamp = fd_time(utc_now())
        note = {
            "id": next(self._note_ids), "ticket_id": ticket["id"], "body": body["body"],
            "body_text": strip_html(body["body"]), "incoming": bool(body.get("incoming", False)),
            "private": body.get("private", True), "user_id": body.get("user_id", AGENT_ID),
            "support_email": None, "to_emails": [], "attachments": [], "created_at": stamp, "updated_at": stamp,
        }
        self._notes[ticket["id"]].append(note)
        ticket["updated_at"] = stamp
        return Response(201, copy.deepcopy(note), {"Location": f"{self.base_url}{API}/conversations/{note['id']}"})

    # --- helpers for tests ----------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {**self._present(t, ("stats",)), "notes": copy.deepcopy(self._notes[t["id"]])}
                for t in sorted(self._tickets.values(), key=lambda t: t["id"])
            ]

    def notes_for(self, record_id: str | int) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self._notes.get(int(record_id), []))

    def set_status(self, record_id: str | int, status: int, closed_at: datetime | None = None) -> None:
        with self.lock:
            ticket = self._tickets[int(record_id)]
            at = closed_at or utc_now()
            self._change_status(ticket, status, at, force=True)
            ticket["updated_at"] = fd_time(max(at, parse_input_time(ticket["updated_at"])))

    def close_record(self, record_id: str | int, closed_at: datetime) -> None:
        self.set_status(record_id, 5, closed_at)

    def set_tags(self, record_id: str | int, tags: list[str]) -> None:
        with self.lock:
            self._tickets[int(record_id)]["tags"] = list(tags)

    def users(self) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(c) for c in self._contacts.values()]

    def add_contact(self, **fields: Any) -> int:
        with self.lock:
            return self._store_contact(fields)["id"]

    def add_ticket(self, requester_id: int, *, created_at: datetime | None = None, **fields: Any) -> int:
        with self.lock:
            body = {"subject": "Seeded ticket", "description": "", **fields, "requester_id": requester_id}
            return self._store_ticket(body, created_at)["id"]
