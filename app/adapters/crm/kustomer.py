"""Kustomer adapter: a record is a Kustomer conversation, the end user a Kustomer customer.

What it speaks (Kustomer REST API v1, JSON:API envelopes, `Authorization: Bearer <API key>`):

* `GET /v1/users/current`: the cheap authenticated call behind `check_credentials`.
* A new end user (`create_record` with no remembered customer, `resolves_end_user`):
  `POST /v1/customers` with name, `externalId` (the platform's end-user id), `phones` and
  `emails` first. Kustomer keeps a customer's email, phone and external id unique in the
  org and refuses a second customer holding one (409): only then is the holder looked up
  (`GET /v1/customers/email=...`, `phone=...`, `externalId=...`, 404 when none). A look-up
  made before the create would find nothing for a new end user: it is dropped.
* `GET /v1/conversations/externalId={session id}`: the direct look-up of a record by the
  session it was made for, made only when an earlier attempt's outcome is unknown;
  `POST /v1/conversations` with `customer`, `name` (the title), `externalId` (the session
  id) and `status: open`. A remembered customer Kustomer no longer has is refused on
  `/customer` and reported as CrmEndUserGone.
* A record costs: the conversation, its description note, and one append of its tags
  when it has any (the create's own `tags` field takes tag ids, which would cost a tag
  look-up; the append takes names). A returning end user: two requests.
* `POST /v1/conversations/{id}/tags` with a list of tag names: Kustomer appends them and
  creates tags it does not know yet (the conversation's own `tags` attribute holds tag ids
  and replaces the whole list, so it is never written here).
* `POST /v1/conversations/{id}/notes` with `{"body": ...}`: an internal note, never shown
  to the customer. Conversations have no description field, so the description is the
  first note.
* `GET /v1/conversations/{id}` and `PUT /v1/conversations/{id}` `{"status": "open"}`.

Statuses are `open`, `snoozed` and `done`; only `done` is closed, and a done conversation
can always be reopened.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from app import metrics
from app.adapters.crm.base import (
    CrmEndUserGone,
    CrmPermanentError,
    CrmRateLimited,
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

OPEN_STATUS = "open"
CLOSED_STATUS = "done"
# Kustomer documents these types for a customer's contact points.
PHONE_TYPE = "mobile"
EMAIL_TYPE = "home"


# --- error bodies and rate-limit headers ------------------------------------------------------


def _describe_one(error: dict[str, Any]) -> str:
    text = error.get("message") or error.get("detail") or error.get("title") or ""
    code = error.get("code")
    source = found if isinstance(found := error.get("source"), dict) else {}
    where = source.get("pointer") or source.get("parameter")
    parts = [str(p) for p in (code, text) if p]
    described = ": ".join(parts)
    return f"{described} (at {where})" if where else described


def describe_kustomer_error(response: httpx.Response) -> str:
    """Kustomer answers errors with an `errors` array, each entry either `{code, message, meta}`
    or a JSON:API error object `{status, code, title, detail, source}`; both are read."""
    try:
        body = response.json()
    except ValueError:
        return default_describe(response)
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return default_describe(response)
    described = [_describe_one(e) for e in errors[:3] if isinstance(e, dict)]
    return f"HTTP {response.status_code}: " + "; ".join(d for d in described if d)


def _reset_seconds(value: str | None) -> float | None:
    """`x-ratelimit-reset` as seconds from now: a plain count of seconds, or an epoch time
    (seconds or milliseconds), whichever the number's size says it is."""
    try:
        number = float(value) if value else None
    except ValueError:
        return None
    if number is None:
        return None
    if number > 1e12:
        number = number / 1000 - time.time()
    elif number > 1e9:
        number -= time.time()
    return max(0.0, number)


def kustomer_retry_after(headers: httpx.Headers) -> float:
    """How long a 429 asks us to wait: `Retry-After` when sent, else the window's reset."""
    if headers.get("Retry-After"):
        return parse_retry_after(headers.get("Retry-After"))
    reset = _reset_seconds(headers.get("x-ratelimit-reset"))
    return reset if reset is not None else parse_retry_after(None)


def kustomer_quota(headers: httpx.Headers) -> VendorQuota | None:
    """`x-ratelimit-limit` / `x-ratelimit-remaining` (per minute), `x-ratelimit-reset`."""
    limit = header_int(headers, "x-ratelimit-limit")
    remaining = header_int(headers, "x-ratelimit-remaining")
    if limit is None and remaining is None:
        return None
    return VendorQuota(limit=limit, remaining=remaining, reset_seconds=_reset_seconds(headers.get("x-ratelimit-reset")))


class KustomerHttp(CrmHttp):
    """CrmHttp, except that a 429 without `Retry-After` waits for `x-ratelimit-reset`."""

    def classify(self, response: httpx.Response, operation: str, message: str) -> Exception:
        if response.status_code != 429:
            return super().classify(response, operation, message)
        metrics.crm_rate_limited.labels(self.crm).inc()
        retry_after = kustomer_retry_after(response.headers)
        if self.budget is not None:
            self.budget.pause(retry_after)
        return CrmRateLimited(f"{self.crm} {operation}: {message}", retry_after=retry_after)


# --- the agent-facing URL -------------------------------------------------------------------


def _org_from_api_key(api_key: str) -> str | None:
    """Kustomer API keys are JWTs whose payload names the org (`orgName`); None otherwise."""
    parts = api_key.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    org = claims.get("orgName") if isinstance(claims, dict) else None
    return org if isinstance(org, str) and org else None


def agent_app_base(api_url: str, api_key: str) -> str:
    """Where agents open Kustomer: `https://<org>.kustomerapp.com` for the API at
    `https://<org>.api.kustomerapp.com`, or at `https://api.kustomerapp.com` when the API key
    names the org; any other API URL (a proxy, a test server) is used as it is."""
    parts = urlsplit(api_url)
    labels = (parts.hostname or "").split(".")
    if len(labels) >= 3 and labels[1] == "api":
        return f"https://{labels[0]}.{'.'.join(labels[2:])}"
    org = _org_from_api_key(api_key)
    if len(labels) >= 3 and labels[0] == "api" and org:
        return f"https://{org}.{'.'.join(labels[1:])}"
    return f"{parts.scheme}://{parts.netloc}"


# --- reading JSON:API resources ---------------------------------------------------------------


def _resource(response: httpx.Response) -> dict[str, Any]:
    data = response.json().get("data")
    return data if isinstance(data, dict) else {}


def _related_id(resource: dict[str, Any], name: str) -> str | None:
    relation = (resource.get("relationships") or {}).get(name) or {}
    data = relation.get("data") if isinstance(relation, dict) else None
    return data.get("id") if isinstance(data, dict) else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _closed_at(attributes: dict[str, Any]) -> datetime | None:
    """When the conversation was last marked done: `closedAt`, else `lastDone.createdAt`."""
    last_done = found if isinstance(found := attributes.get("lastDone"), dict) else {}
    return _parse_time(attributes.get("closedAt")) or _parse_time(last_done.get("createdAt"))


def _segment(value: str) -> str:
    # Look-up values go in the path (`email=a@b.c`); every reserved character is escaped.
    return quote(value, safe="")


def _refuses_customer(response: httpx.Response) -> bool:
    """A refusal of the conversation's `customer`: that customer does not exist (any more)."""
    if response.status_code == 404:
        return True
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return False
    for error in errors:
        if not isinstance(error, dict):
            continue
        source = found if isinstance(found := error.get("source"), dict) else {}
        text = f"{error.get('detail') or ''} {error.get('message') or ''}".lower()
        if source.get("pointer") == "/customer" and ("not exist" in text or "not found" in text):
            return True
    return False


class KustomerAdapter:
    name = "kustomer"
    # create_record finds or creates the customer itself (create first, look up on conflict).
    resolves_end_user = True

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_seconds: float,
        requests_per_minute: int | None,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: RateBudget | None = None,
    ):
        self.app_base = agent_app_base(base_url, api_key)
        self.account = budget.account if budget is not None else f"kustomer:{base_url.rstrip('/')}"
        self.http = KustomerHttp(
            self.name,
            base_url,
            timeout_seconds=timeout_seconds,
            requests_per_minute=requests_per_minute,
            headers={"Authorization": f"Bearer {api_key}"},
            describe_error=describe_kustomer_error,
            transport=transport,
            budget=budget,
            read_quota=kustomer_quota,
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, budget: RateBudget | None = None) -> KustomerAdapter:
        return cls(
            required_setting(settings, "kustomer_url"),
            required_setting(settings, "kustomer_api_key"),
            timeout_seconds=settings.crm_timeout_seconds,
            requests_per_minute=settings.kustomer_requests_per_minute,
            budget=budget,
        )

    def record_url(self, conversation_id: str, customer_id: str | None) -> str:
        if customer_id:
            return f"{self.app_base}/app/customers/{customer_id}/event/{conversation_id}"
        return f"{self.app_base}/app/conversations/{conversation_id}"

    def _ref(self, conversation: dict[str, Any]) -> RecordRef:
        conversation_id = str(conversation["id"])
        customer = _related_id(conversation, "customer")
        return RecordRef(conversation_id, self.record_url(conversation_id, customer), customer)

    # --- the CrmAdapter protocol ------------------------------------------------------------

    async def check_credentials(self) -> None:
        await self.http.request("check_credentials", "GET", "/v1/users/current")

    async def find_or_create_end_user(self, user: EndUserInfo) -> str:
        operation = "find_or_create_end_user"
        # The external-id look-up last: it finds a customer whose creation timed out but
        # happened, which Kustomer would otherwise refuse to create twice.
        lookups = [("phone", user.phone), ("email", user.email), ("externalId", user.id)]
        for field, value in lookups:
            if value:
                found = await self._get_or_none(operation, f"/v1/customers/{field}={_segment(value)}")
                if found:
                    return str(found["id"])
        response = await self.http.request(operation, "POST", "/v1/customers", json=self._customer_body(user))
        return str(_resource(response)["id"])

    @staticmethod
    def _customer_body(user: EndUserInfo) -> dict[str, Any]:
        body: dict[str, Any] = {"externalId": user.id}
        if user.name:
            body["name"] = user.name
        if user.phone:
            body["phones"] = [{"type": PHONE_TYPE, "phone": user.phone}]
        if user.email:
            body["emails"] = [{"type": EMAIL_TYPE, "email": user.email}]
        return body

    async def find_record_by_session(self, session_id: str) -> RecordRef | None:
        conversation = await self._conversation_by_session("find_record_by_session", session_id)
        return self._ref(conversation) if conversation else None

    async def create_record(self, record: NewRecord) -> RecordRef:
        operation = "create_record"
        if record.retrying_unknown_outcome:
            # Kustomer has no idempotency key: the session id is the conversation's external
            # id, looked up directly (not through search). A retry after a create that timed
            # out or lost its answer finds the conversation and finishes it instead.
            existing = await self._conversation_by_session(operation, record.session_id)
            if existing:
                await self._finish(operation, existing, record)
                return self._ref(existing)
        customer = record.contact_id or await self._new_customer(record.end_user)
        body = {"customer": customer, "name": record.title, "externalId": record.session_id, "status": OPEN_STATUS}
        response = await self.http.request(operation, "POST", "/v1/conversations", json=body, accept=(400, 404))
        if response.status_code in (400, 404):
            message = describe_kustomer_error(response)
            if record.contact_id and _refuses_customer(response):
                raise CrmEndUserGone(f"kustomer {operation}: customer {customer} is gone: {message}",
                                     status=response.status_code)
            raise self.http.classify(response, operation, message)
        created = _resource(response)
        # The tags and the description note do not depend on each other: one round trip.
        await asyncio.gather(
            self._append_tags(operation, str(created["id"]), record.tags),
            self._add_note(operation, str(created["id"]), record.description),
        )
        return self._ref(created)

    async def _new_customer(self, user: EndUserInfo | None) -> str:
        """Create the customer; when Kustomer refuses because one already holds the email,
        phone or external id, that one is the end user."""
        if user is None:
            raise CrmPermanentError("kustomer create_record: neither a customer id nor the end user was given")
        operation = "find_or_create_end_user"
        response = await self.http.request(operation, "POST", "/v1/customers", json=self._customer_body(user),
                                           accept=(409,))
        if response.status_code != 409:
            return str(_resource(response)["id"])
        for field, value in (("email", user.email), ("phone", user.phone), ("externalId", user.id)):
            if value:
                found = await self._get_or_none(operation, f"/v1/customers/{field}={_segment(value)}")
                if found:
                    return str(found["id"])
        raise self.http.classify(response, operation, describe_kustomer_error(response))

    async def _finish(self, operation: str, conversation: dict[str, Any], record: NewRecord) -> None:
        """Complete a conversation an earlier attempt created: appending tags is idempotent,
        and the description note is added only while the conversation has no note yet."""
        conversation_id = str(conversation["id"])
        await self._append_tags(operation, conversation_id, record.tags)
        if not (conversation.get("attributes") or {}).get("noteCount"):
            await self._add_note(operation, conversation_id, record.description)

    async def get_record(self, record_id: str) -> ExistingRecord | None:
        conversation = await self._get_or_none("get_record", f"/v1/conversations/{_segment(record_id)}")
        if conversation is None:
            return None
        attributes = conversation.get("attributes") or {}
        status = str(attributes.get("status") or OPEN_STATUS)
        is_closed = status == CLOSED_STATUS
        return ExistingRecord(
            record_id=str(conversation["id"]),
            status=status,
            is_closed=is_closed,
            closed_at=_closed_at(attributes) if is_closed else None,
            can_reopen=True,  # Kustomer reopens a done conversation whenever asked
            url=self._ref(conversation).url,
        )

    async def reopen_record(self, record_id: str) -> None:
        await self.http.request(
            "reopen_record", "PUT", f"/v1/conversations/{_segment(record_id)}", json={"status": OPEN_STATUS}
        )

    async def attach_session(self, record_id: str, note: str, tags: list[str]) -> None:
        await self._add_note("attach_session", record_id, note)
        await self._append_tags("attach_session", record_id, tags)

    async def add_note(self, record_id: str, note: str) -> None:
        await self._add_note("add_note", record_id, note)

    async def write_note(self, note: NoteWrite) -> None:
        """At most once: Kustomer documents no idempotency key for notes, so a retry whose
        earlier attempt's outcome is unknown lists the conversation's notes for the note's
        marker first."""
        operation = "add_note"
        if note.retrying_unknown_outcome:
            path = f"/v1/conversations/{_segment(note.record_id)}/notes"
            response = await self.http.request(operation, "GET", path, params={"pageSize": 100})
            notes = response.json().get("data") or []
            if any(note.marker in str((n.get("attributes") or {}).get("body") or "") for n in notes):
                return
        await self._add_note(operation, note.record_id, note.body)

    async def aclose(self) -> None:
        await self.http.aclose()

    # --- calls shared by several operations --------------------------------------------------

    async def _get_or_none(self, operation: str, path: str) -> dict[str, Any] | None:
        response = await self.http.request(operation, "GET", path, accept=(404,))
        return None if response.status_code == 404 else _resource(response)

    async def _conversation_by_session(self, operation: str, session_id: str) -> dict[str, Any] | None:
        return await self._get_or_none(operation, f"/v1/conversations/externalId={_segment(session_id)}")

    async def _append_tags(self, operation: str, conversation_id: str, tags: list[str]) -> None:
        names = list(dict.fromkeys(t for t in tags if t))
        if names:
            # The documented body is a bare list of tag names; Kustomer keeps existing tags.
            await self.http.request(
                operation, "POST", f"/v1/conversations/{_segment(conversation_id)}/tags", json=names
            )

    async def _add_note(self, operation: str, conversation_id: str, body: str) -> None:
        if body:
            await self.http.request(
                operation, "POST", f"/v1/conversations/{_segment(conversation_id)}/notes", json={"body": body}
            )
