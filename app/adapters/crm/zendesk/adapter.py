"""The ZendeskAdapter: the CrmAdapter protocol over the API described in the package docstring."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from app.adapters.crm.base import (
    CrmAuthError,
    CrmEndUserGone,
    CrmPermanentError,
    CrmTransientError,
    EndUserInfo,
    NewRecord,
    NoteWrite,
    RecordRef,
    required_setting,
)
from app.adapters.crm.budget import RateBudget
from app.adapters.crm.http import parse_vendor_time
from app.adapters.crm.zendesk.answers import (
    API,
    CLOSED_STATUSES,
    END_USER_ROLE,
    FINAL_STATUS,
    OPEN_STATUS,
    ZendeskHttp,
    ZendeskIdempotencyConflict,
    _api_base,
    _oldest,
    _requester_refused,
    _same_email,
    _same_phone,
    _zendesk_id,
    describe_zendesk_error,
    zendesk_quota,
)
from app.domain.policy import ExistingRecord

if TYPE_CHECKING:
    from app.settings import Settings  # a Settings part lives in this package: no import cycle


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
        return parse_vendor_time(metric.get("solved_at")) or parse_vendor_time(ticket.get("updated_at"))

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
