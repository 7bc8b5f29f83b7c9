"""Zendesk Support adapter: a record is a Zendesk ticket, the end user a Zendesk end user.

What it speaks (Zendesk Support API v2 under `{ZENDESK_URL}/api/v2`, API token basic
auth: username `{email}/token`, password the token):

* `GET /users/me`: the cheap authenticated call behind `check_credentials`. Zendesk may
  answer it with an anonymous user (`id: null`) instead of a 401, so that counts as refused.
* `GET /users/search?query=...` by phone, then by email (the search index; a hit is kept
  only when the phone or email really is the user's), then `GET /users/search?external_id=...`
  (a direct look-up that also finds a user created moments ago), then `POST /users`
  with role `end-user`, name, phone, email and `external_id` = the platform's end-user id.
* The cheap path for a record (`create_record`, `resolves_end_user`): a remembered requester
  is named by `requester_id` (one request). A new end user costs one user search, by
  phone (the identity an inline requester cannot carry); when it finds nobody, the ticket
  names its requester inline (`requester: {name, email}`), which Zendesk matches to the
  user holding that email or creates (two requests). Only an end user with a phone and no
  email is created first with `POST /users` (three requests). The ticket's `requester_id`
  is remembered. A remembered requester Zendesk no longer has is refused with 422
  `Requester: is invalid`, which is reported as CrmEndUserGone.
* `GET /tickets?external_id=...`: the documented List Tickets filter, a direct look-up of
  the ticket made for a session (the search API lags, so it is not used for this), made
  only when an earlier attempt's outcome is unknown.
* `POST /tickets` with the `Idempotency-Key` header: Zendesk answers a repeat of the same
  request within two hours with the original ticket (`x-idempotency-lookup: hit`), and a
  different request under the same key with 400 `IdempotentRequestError`.
* End-of-session notes end with a marker line (the outbox row's key); a retry whose
  earlier attempt's outcome is unknown reads `GET /tickets/{id}/comments` first.
* `GET /tickets/{id}`, `GET /tickets/{id}/metrics` (`ticket_metric.solved_at`: tickets
  have no closing-time field), `PUT /tickets/{id}` for the status, private comments and
  `additional_tags` (which adds tags; `tags` would replace them).

Statuses: new, open, pending, hold (open), solved and closed (closed). A solved ticket
is reopened by setting `open`; a closed one can never be updated again.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx

from app import metrics
from app.adapters.crm.base import (
    CrmAuthError,
    CrmEndUserGone,
    CrmPermanentError,
    CrmRateLimited,
    CrmTransientError,
    EndUserInfo,
    NewRecord,
    NoteWrite,
    RecordRef,
    required_setting,
)
from app.adapters.crm.budget import RateBudget, VendorQuota, header_int
from app.adapters.crm.http import CrmHttp, default_describe, parse_retry_after
from app.domain.policy import ExistingRecord
from app.settings import Settings

API = "/api/v2"
OPEN_STATUS = "open"
CLOSED_STATUSES = frozenset({"solved", "closed"})
# Zendesk refuses every update to a closed ticket, reopening included.
FINAL_STATUS = "closed"
END_USER_ROLE = "end-user"
IDEMPOTENCY_ERROR = "IdempotentRequestError"
# The validation code Zendesk gives when an email or external id already belongs to a user.
DUPLICATE_VALUE = "DuplicateValue"


class ZendeskIdempotencyConflict(CrmPermanentError):
    """400 IdempotentRequestError: the key was used before with a different request."""


# --- error bodies ----------------------------------------------------------------------------


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _detail_texts(details: Any) -> list[str]:
    """`details` maps a field to a list of `{"description", "error"}` entries."""
    if not isinstance(details, dict):
        return []
    texts: list[str] = []
    for field, entries in details.items():
        for entry in entries if isinstance(entries, list) else [entries]:
            text = entry.get("description") if isinstance(entry, dict) else entry
            if text:
                texts.append(str(text) if field == "base" else f"{field}: {text}")
    return texts


def describe_zendesk_error(response: httpx.Response) -> str:
    """Zendesk errors come as `{"error": "RecordInvalid", "description": ..., "details": {...}}`,
    as `{"error": "Couldn't authenticate you"}`, or as `{"error": {"title", "message"}}`."""
    body = _body(response)
    error = body.get("error")
    if error is None:
        return default_describe(response)
    if isinstance(error, dict):
        parts = [str(error.get("title") or ""), str(error.get("message") or "")]
    else:
        parts = [str(error), str(body.get("description") or "")]
    text = ": ".join(p for p in parts if p)
    details = _detail_texts(body.get("details"))
    if details:
        text += " (" + "; ".join(details[:5]) + ")"
    return f"HTTP {response.status_code}: {text}"


def _duplicate_user(response: httpx.Response) -> bool:
    details = _body(response).get("details")
    if not isinstance(details, dict):
        return False
    return any(
        isinstance(entry, dict) and entry.get("error") == DUPLICATE_VALUE
        for entries in details.values()
        if isinstance(entries, list)
        for entry in entries
    )


def zendesk_retry_after(headers: httpx.Headers) -> float:
    """`Retry-After` when sent (Zendesk always sends it with a 429), else `ratelimit-reset`."""
    return parse_retry_after(headers.get("Retry-After") or headers.get("ratelimit-reset"))


def zendesk_quota(headers: httpx.Headers) -> VendorQuota | None:
    """`X-Rate-Limit` / `X-Rate-Limit-Remaining` (the account's per-minute limit) and the
    `ratelimit-limit` / `-remaining` / `-reset` headers Zendesk sends alongside."""
    limit = header_int(headers, "X-Rate-Limit", "ratelimit-limit")
    remaining = header_int(headers, "X-Rate-Limit-Remaining", "ratelimit-remaining")
    if limit is None and remaining is None:
        return None
    reset = header_int(headers, "ratelimit-reset")
    return VendorQuota(limit=limit, remaining=remaining, reset_seconds=float(reset) if reset is not None else None)


class ZendeskHttp(CrmHttp):
    """CrmHttp with Zendesk's quirks: a 503 carrying `Retry-After` asks to wait that long,
    the idempotency-key conflict gets its own class, and a user create refused because
    the email or external id is taken means the user search has not caught up yet."""

    def classify(self, response: httpx.Response, operation: str, message: str) -> Exception:
        status = response.status_code
        text = f"{self.crm} {operation}: {message}"
        if status == 429 or (status == 503 and response.headers.get("Retry-After")):
            if status == 429:
                metrics.crm_rate_limited.labels(self.crm).inc()
            retry_after = zendesk_retry_after(response.headers)
            if self.budget is not None:
                self.budget.pause(retry_after)
            return CrmRateLimited(text, retry_after=retry_after, status=status)
        if status == 400 and _body(response).get("error") == IDEMPOTENCY_ERROR:
            return ZendeskIdempotencyConflict(text, status=status)
        if status == 422 and operation == "find_or_create_end_user" and _duplicate_user(response):
            return CrmTransientError(f"{text} (the user search has not indexed that user yet)", status=status)
        return super().classify(response, operation, message)


# --- reading answers -------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _digits(phone: str | None) -> str:
    return re.sub(r"\D", "", phone or "")


def _same_phone(user: dict[str, Any], phone: str) -> bool:
    return bool(_digits(phone)) and _digits(user.get("phone")) == _digits(phone)


def _same_email(user: dict[str, Any], email: str) -> bool:
    return str(user.get("email") or "").strip().lower() == email.strip().lower()


def _oldest(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    # Several matches are possible (external ids are not unique in Zendesk): the first made wins.
    return min(items, key=lambda item: int(item["id"])) if items else None


def _zendesk_id(value: str) -> int | str:
    """Zendesk ids are integers; an id that is not one is sent as given, for Zendesk to refuse."""
    return int(value) if value.isdigit() else value


def _api_base(url: str) -> str:
    """The account URL, also when the API path was pasted along with it."""
    url = url.rstrip("/")
    return url[: -len(API)] if url.endswith(API) else url


def _requester_refused(response: httpx.Response) -> bool:
    details = _body(response).get("details")
    return response.status_code == 422 and isinstance(details, dict) and "requester" in details


class ZendeskAdapter:
    name = "zendesk"
    # create_record finds the requester itself (one search, or inline on the ticket).
    resolves_end_user = True

    def __init__(
        self,
        base_url: str,
        email: str,
        api_token: str,
        *,
        timeout_seconds: float,
        requests_per_minute: int | None,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: RateBudget | None = None,
    ):
        self.base_url = _api_base(base_url)
        self.account = budget.account if budget is not None else f"zendesk:{self.base_url}"
        self.http = ZendeskHttp(
            self.name,
            self.base_url + API,
            timeout_seconds=timeout_seconds,
            requests_per_minute=requests_per_minute,
            auth=httpx.BasicAuth(f"{email}/token", api_token),
            describe_error=describe_zendesk_error,
            transport=transport,
            budget=budget,
            read_quota=zendesk_quota,
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, budget: RateBudget | None = None) -> ZendeskAdapter:
        return cls(
            required_setting(settings, "zendesk_url"),
            required_setting(settings, "zendesk_email"),
            required_setting(settings, "zendesk_api_token"),
            timeout_seconds=settings.crm_timeout_seconds,
            requests_per_minute=settings.zendesk_requests_per_minute,
            budget=budget,
        )

    def record_url(self, ticket_id: str) -> str:
        return f"{self.base_url}/agent/tickets/{ticket_id}"

    def _ref(self, ticket: dict[str, Any]) -> RecordRef:
        ticket_id = str(ticket["id"])
        requester = ticket.get("requester_id")
        return RecordRef(ticket_id, self.record_url(ticket_id), str(requester) if requester is not None else None)

    # --- the CrmAdapter protocol ------------------------------------------------------------

    async def check_credentials(self) -> None:
        response = await self.http.request("check_credentials", "GET", "/users/me")
        user = response.json().get("user") or {}
        if user.get("id") is None:
            raise CrmAuthError("zendesk check_credentials: Zendesk answered as an anonymous user: "
                               "the email or API token was not accepted", status=response.status_code)
        if user.get("role") == END_USER_ROLE:
            raise CrmAuthError(f"zendesk check_credentials: {user.get('email')} is an end user; "
                               "the API user must be an agent or admin", status=response.status_code)

    async def find_or_create_end_user(self, user: EndUserInfo) -> str:
        operation = "find_or_create_end_user"
        if user.phone:
            found = _oldest([u for u in await self._search_users(operation, user.phone) if _same_phone(u, user.phone)])
            if found:
                return str(found["id"])
        if user.email:
            found = _oldest([u for u in await self._search_users(operation, user.email) if _same_email(u, user.email)])
            if found:
                return str(found["id"])
        # The external-id look-up is direct, not through the search index: it finds a user
        # created moments ago (or by a create whose answer was lost) that search misses.
        response = await self.http.request(operation, "GET", "/users/search", params={"external_id": user.id})
        found = _oldest(response.json().get("users") or [])
        if found:
            return str(found["id"])
        response = await self.http.request(operation, "POST", "/users", json={"user": self._user_body(user)})
        return str(response.json()["user"]["id"])

    async def _search_users(self, operation: str, value: str) -> list[dict[str, Any]]:
        response = await self.http.request(operation, "GET", "/users/search", params={"query": value})
        return response.json().get("users") or []

    @staticmethod
    def _user_body(user: EndUserInfo) -> dict[str, Any]:
        # Zendesk requires a name; the best thing we know of the caller stands in for it.
        body: dict[str, Any] = {
            "name": user.name or user.email or user.phone or user.id,
            "role": END_USER_ROLE,
            "external_id": user.id,
        }
        if user.phone:
            body["phone"] = user.phone
        if user.email:
            body["email"] = user.email
        return body

    async def find_record_by_session(self, session_id: str) -> RecordRef | None:
        ticket = await self._ticket_by_session("find_record_by_session", session_id)
        return self._ref(ticket) if ticket else None

    async def create_record(self, record: NewRecord) -> RecordRef:
        operation = "create_record"
        if record.retrying_unknown_outcome:
            # The direct look-up covers an earlier attempt whose answer was lost even after
            # Zendesk has forgotten the idempotency key (two hours).
            existing = await self._ticket_by_session(operation, record.session_id)
            if existing:
                return self._ref(existing)
        requester = await self._requester(record)
        try:
            response = await self.http.request(
                operation,
                "POST",
                "/tickets",
                json={"ticket": {**self._ticket_body(record), **requester}},
                headers={"Idempotency-Key": record.idempotency_key},
                accept=(422,),
            )
        except ZendeskIdempotencyConflict:
            # The key made a ticket from a different request (e.g. another requester found
            # since): that ticket is this session's record.
            existing = await self._ticket_by_session(operation, record.session_id)
            if existing is None:
                raise
            return self._ref(existing)
        if response.status_code == 422:
            message = describe_zendesk_error(response)
            if record.contact_id and _requester_refused(response):
                raise CrmEndUserGone(f"zendesk {operation}: requester {record.contact_id} is gone: {message}",
                                     status=422)
            raise self.http.classify(response, operation, message)
        return self._ref(response.json()["ticket"])

    async def _requester(self, record: NewRecord) -> dict[str, Any]:
        """How the ticket names its requester: the remembered id, the user a phone search
        finds, inline by email, or (phone only) a user created first."""
        if record.contact_id:
            return {"requester_id": _zendesk_id(record.contact_id)}
        user = record.end_user
        if user is None:
            raise CrmPermanentError("zendesk create_record: neither a requester id nor the end user was given")
        if user.phone:
            found = _oldest([u for u in await self._search_users("find_end_user", user.phone)
                             if _same_phone(u, user.phone)])
            if found:
                return {"requester_id": found["id"]}
        if user.email:
            return {"requester": {"name": user.name or user.email, "email": user.email}}
        return {"requester_id": _zendesk_id(await self._create_user("find_or_create_end_user", user))}

    async def _create_user(self, operation: str, user: EndUserInfo) -> str:
        """A new end user; one an earlier attempt made (external id taken) is found directly."""
        try:
            response = await self.http.request(operation, "POST", "/users", json={"user": self._user_body(user)})
        except CrmTransientError as exc:
            if exc.status != 422:
                raise
            response = await self.http.request(operation, "GET", "/users/search", params={"external_id": user.id})
            found = _oldest(response.json().get("users") or [])
            if found is None:
                raise
            return str(found["id"])
        return str(response.json()["user"]["id"])

    @staticmethod
    def _ticket_body(record: NewRecord) -> dict[str, Any]:
        return {
            "subject": record.title,
            "comment": {"body": record.description, "public": False},
            "tags": list(dict.fromkeys(record.tags)),
            "external_id": record.session_id,
        }

    async def get_record(self, record_id: str) -> ExistingRecord | None:
        operation = "get_record"
        response = await self.http.request(operation, "GET", f"/tickets/{record_id}", accept=(404,))
        if response.status_code == 404:
            return None
        ticket = response.json()["ticket"]
        status = str(ticket.get("status") or OPEN_STATUS)
        is_closed = status in CLOSED_STATUSES
        return ExistingRecord(
            record_id=str(ticket["id"]),
            status=status,
            is_closed=is_closed,
            closed_at=await self._solved_at(operation, ticket) if is_closed else None,
            can_reopen=status != FINAL_STATUS,
            url=self._ref(ticket).url,
        )

    async def _solved_at(self, operation: str, ticket: dict[str, Any]) -> datetime | None:
        """When the ticket was solved, from its metrics; the ticket's `updated_at` when the
        metrics are missing (a solved or closed ticket is rarely updated afterwards)."""
        response = await self.http.request(operation, "GET", f"/tickets/{ticket['id']}/metrics", accept=(404,))
        metric = (response.json().get("ticket_metric") or {}) if response.status_code != 404 else {}
        return _parse_time(metric.get("solved_at")) or _parse_time(ticket.get("updated_at"))

    async def reopen_record(self, record_id: str) -> None:
        await self._update("reopen_record", record_id, {"status": OPEN_STATUS})

    async def attach_session(self, record_id: str, note: str, tags: list[str]) -> None:
        update: dict[str, Any] = {"comment": {"body": note, "public": False}}
        if tags:
            update["additional_tags"] = list(dict.fromkeys(tags))
        await self._update("attach_session", record_id, update)

    async def add_note(self, record_id: str, note: str) -> None:
        await self._update("add_note", record_id, {"comment": {"body": note, "public": False}})

    async def write_note(self, note: NoteWrite) -> None:
        """At most once: Zendesk documents no idempotency key for ticket updates, so a retry
        whose earlier attempt's outcome is unknown reads the ticket's comments (a direct
        read) for the note's marker first."""
        if note.retrying_unknown_outcome:
            response = await self.http.request("add_note", "GET", f"/tickets/{note.record_id}/comments")
            if any(note.marker in str(c.get("body") or "") for c in response.json().get("comments") or []):
                return
        await self.add_note(note.record_id, note.body)

    async def aclose(self) -> None:
        await self.http.aclose()

    # --- calls shared by several operations --------------------------------------------------

    async def _ticket_by_session(self, operation: str, session_id: str) -> dict[str, Any] | None:
        response = await self.http.request(operation, "GET", "/tickets", params={"external_id": session_id})
        tickets = [t for t in response.json().get("tickets") or [] if t.get("external_id") == session_id]
        return _oldest(tickets)

    async def _update(self, operation: str, record_id: str, ticket: dict[str, Any]) -> None:
        await self.http.request(operation, "PUT", f"/tickets/{record_id}", json={"ticket": ticket})
