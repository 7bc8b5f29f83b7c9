"""The FreshdeskAdapter: the CrmAdapter protocol over the API described in the package docstring."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from app.adapters.crm.base import (
    CrmEndUserGone,
    CrmPermanentError,
    EndUserInfo,
    NewRecord,
    NoteWrite,
    RecordRef,
    required_setting,
)
from app.adapters.crm.budget import RateBudget
from app.adapters.crm.freshdesk.answers import (
    API,
    PAGE_SIZE,
    PRIORITY_LOW,
    RECENT_PAGES,
    RECENT_WINDOW,
    SEARCH_QUERY_MAX_CHARS,
    SOURCE_CHAT,
    SOURCE_PHONE,
    STATUS_CLOSED,
    STATUS_NAMES,
    STATUS_OPEN,
    STATUS_RESOLVED,
    SUBJECT_MAX_CHARS,
    _closed_at,
    _duplicate_contact_id,
    _merged_tags,
    _refuses_field,
    _requester_gone,
    _requester_id,
    _ticket_path,
    describe_freshdesk_error,
    freshdesk_quota,
    html_text,
)
from app.adapters.crm.http import CrmHttp
from app.domain.field_limits import cut
from app.domain.policy import ExistingRecord

if TYPE_CHECKING:
    from app.settings import Settings  # a Settings part lives in this package: no import cycle


class FreshdeskAdapter:
    name = "freshdesk"
    # create_record finds or creates the requester itself (email / phone + name on the ticket).
    resolves_end_user = True

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        external_id_field: str,
        timeout_seconds: float,
        requests_per_minute: int | None,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: RateBudget | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.account = budget.account if budget is not None else f"freshdesk:{self.base_url}"
        self.external_id_field = external_id_field
        self.http = CrmHttp(
            self.name,
            self.base_url,
            timeout_seconds=timeout_seconds,
            requests_per_minute=requests_per_minute,
            auth=httpx.BasicAuth(api_key, "X"),
            describe_error=describe_freshdesk_error,
            transport=transport,
            budget=budget,
            read_quota=freshdesk_quota,
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, budget: RateBudget | None = None) -> FreshdeskAdapter:
        return cls(
            required_setting(settings, "freshdesk_url"),
            required_setting(settings, "freshdesk_api_key"),
            external_id_field=required_setting(settings, "freshdesk_external_id_field"),
            timeout_seconds=settings.crm_timeout_seconds,
            requests_per_minute=settings.freshdesk_requests_per_minute,
            budget=budget,
        )

    def record_url(self, ticket_id: str) -> str:
        return f"{self.base_url}/a/tickets/{ticket_id}"

    def _ref(self, ticket: dict[str, Any]) -> RecordRef:
        ticket_id = str(ticket["id"])
        return RecordRef(ticket_id, self.record_url(ticket_id))

    def _is_session_ticket(self, ticket: dict[str, Any], session_id: str) -> bool:
        custom = ticket.get("custom_fields")
        return isinstance(custom, dict) and custom.get(self.external_id_field) == session_id

    # --- the CrmAdapter protocol ------------------------------------------------------------

    async def check_credentials(self) -> None:
        await self.http.request("check_credentials", "GET", f"{API}/agents/me")

    async def find_or_create_end_user(self, user: EndUserInfo) -> str:
        operation = "find_or_create_end_user"
        # A caller's number may be stored as the contact's phone or as its mobile.
        lookups = [("phone", user.phone), ("mobile", user.phone), ("email", user.email)]
        for field, value in lookups:
            if value:
                found = await self._contact_id_by(operation, field, value)
                if found:
                    return found
        return await self._create_contact(operation, user)

    async def find_record_by_session(self, session_id: str) -> RecordRef | None:
        ticket = await self._session_ticket("find_record_by_session", session_id, None)
        return self._ref(ticket) if ticket else None

    async def create_record(self, record: NewRecord) -> RecordRef:
        operation = "create_record"
        requester_id = _requester_id(record.contact_id) if record.contact_id else None
        if record.retrying_unknown_outcome:
            # No idempotency key in Freshdesk: an earlier attempt that timed out or lost its
            # answer may have made the ticket; find it by the session id before creating.
            existing = await self._session_ticket(operation, record.session_id, requester_id)
            if existing:
                return self._ref_with_requester(existing)
        body = {
            "subject": cut(record.title, SUBJECT_MAX_CHARS),
            "description": html_text(record.description),
            "status": STATUS_OPEN,
            "priority": PRIORITY_LOW,
            "source": SOURCE_CHAT if record.medium == "chat" else SOURCE_PHONE,
            "tags": list(dict.fromkeys(t for t in record.tags if t)),
            "custom_fields": {self.external_id_field: record.session_id},
            **self._requester(requester_id, record.end_user),
        }
        response = await self.http.request(operation, "POST", f"{API}/tickets", json=body, accept=(400,))
        if response.status_code == 400:
            message = describe_freshdesk_error(response)
            if requester_id is not None and _requester_gone(response):
                raise CrmEndUserGone(f"freshdesk {operation}: contact {requester_id} is gone: {message}", status=400)
            raise self.http.classify(response, operation, message)
        return self._ref_with_requester(response.json())

    @staticmethod
    def _requester(requester_id: int | None, user: EndUserInfo | None) -> dict[str, Any]:
        """The ticket's requester fields: the known contact, else what Freshdesk finds or
        creates the contact by (email and/or phone; a name is required with a phone)."""
        if requester_id is not None:
            return {"requester_id": requester_id}
        if user is None or not (user.email or user.phone):
            raise CrmPermanentError("freshdesk create_record: the end user has neither email nor phone, "
                                    "which Freshdesk needs to name a requester")
        fields: dict[str, Any] = {"name": user.name or user.email or user.phone}
        if user.email:
            fields["email"] = user.email
        if user.phone:
            fields["phone"] = user.phone
        return fields

    def _ref_with_requester(self, ticket: dict[str, Any]) -> RecordRef:
        requester = ticket.get("requester_id")
        return RecordRef(str(ticket["id"]), self.record_url(str(ticket["id"])),
                         str(requester) if requester is not None else None)

    async def _session_ticket(self, operation: str, session_id: str, requester_id: int | None) -> dict[str, Any] | None:
        if requester_id is not None:
            return await self._requester_ticket(operation, requester_id, session_id)
        return await self._recent_ticket(operation, session_id) or await self._searched_ticket(operation, session_id)

    async def get_record(self, record_id: str) -> ExistingRecord | None:
        response = await self.http.request(
            "get_record", "GET", _ticket_path(record_id), params={"include": "stats"}, accept=(404,)
        )
        if response.status_code == 404:
            return None
        ticket = response.json()
        status = int(ticket.get("status") or STATUS_OPEN)
        is_closed = status in (STATUS_RESOLVED, STATUS_CLOSED)
        stats = ticket.get("stats") if isinstance(ticket.get("stats"), dict) else {}
        return ExistingRecord(
            record_id=str(ticket["id"]),
            status=STATUS_NAMES.get(status, str(status)),
            is_closed=is_closed,
            closed_at=_closed_at(status, stats) if is_closed else None,
            can_reopen=True,  # Freshdesk reopens Resolved and Closed tickets alike
            url=self.record_url(str(ticket["id"])),
        )

    async def reopen_record(self, record_id: str) -> None:
        await self.http.request("reopen_record", "PUT", _ticket_path(record_id), json={"status": STATUS_OPEN})

    async def attach_session(self, record_id: str, note: str, tags: list[str]) -> None:
        # Tags first: writing the union again is harmless, so a retry after a failed note
        # adds the note once.
        await self._add_tags("attach_session", record_id, tags)
        await self._add_note("attach_session", record_id, note)

    async def add_note(self, record_id: str, note: str) -> None:
        await self._add_note("add_note", record_id, note)

    async def write_note(self, note: NoteWrite) -> None:
        """At most once: a retry whose earlier attempt's outcome is unknown first reads the
        ticket's conversations for the note's marker (a direct read, never stale)."""
        operation = "add_note"
        if note.retrying_unknown_outcome and await self._has_note_marked(operation, note.record_id, note.marker):
            return
        await self._add_note(operation, note.record_id, note.body)

    async def _has_note_marked(self, operation: str, record_id: str, marker: str) -> bool:
        escaped = html.escape(marker)
        for page in range(1, RECENT_PAGES + 1):
            response = await self.http.request(
                operation,
                "GET",
                f"{_ticket_path(record_id)}/conversations",
                params={"page": page, "per_page": PAGE_SIZE},
            )
            entries = response.json() if isinstance(response.json(), list) else []
            if any(marker in str(e.get("body_text") or "") or escaped in str(e.get("body") or "") for e in entries):
                return True
            if len(entries) < PAGE_SIZE:
                return False
        return False

    async def aclose(self) -> None:
        await self.http.aclose()

    # --- contacts ---------------------------------------------------------------------------

    async def _contact_id_by(self, operation: str, field: str, value: str) -> str | None:
        response = await self.http.request(operation, "GET", f"{API}/contacts", params={field: value})
        contacts = response.json()
        return str(contacts[0]["id"]) if isinstance(contacts, list) and contacts else None

    async def _create_contact(self, operation: str, user: EndUserInfo) -> str:
        body: dict[str, Any] = {"name": user.name or user.phone or user.email or user.id, "unique_external_id": user.id}
        if user.phone:
            body["phone"] = user.phone
        if user.email:
            body["email"] = user.email
        response = await self._post_contact(operation, body)
        if response.status_code == 400 and _refuses_field(response, "unique_external_id"):
            # An account without the Unique External ID contact field: create without it.
            body.pop("unique_external_id")
            response = await self._post_contact(operation, body)
        if response.status_code in (400, 409):
            # A 409 names the contact holding this email or external id: an earlier create
            # whose answer was lost, or a look-up that missed it. Anything else is refused.
            duplicate = _duplicate_contact_id(response) if response.status_code == 409 else None
            if duplicate:
                return duplicate
            raise self.http.classify(response, operation, describe_freshdesk_error(response))
        return str(response.json()["id"])

    async def _post_contact(self, operation: str, body: dict[str, Any]) -> httpx.Response:
        return await self.http.request(operation, "POST", f"{API}/contacts", json=body, accept=(400, 409))

    # --- finding a session's ticket ------------------------------------------------------------

    async def _list_tickets(self, operation: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        query = {"order_by": "created_at", "order_type": "desc", "per_page": PAGE_SIZE, **params}
        response = await self.http.request(operation, "GET", f"{API}/tickets", params=query)
        tickets = response.json()
        return tickets if isinstance(tickets, list) else []

    async def _requester_ticket(self, operation: str, requester_id: int, session_id: str) -> dict[str, Any] | None:
        tickets = await self._list_tickets(operation, {"requester_id": requester_id})
        return next((t for t in tickets if self._is_session_ticket(t, session_id)), None)

    async def _recent_ticket(self, operation: str, session_id: str) -> dict[str, Any] | None:
        since = (datetime.now(UTC) - RECENT_WINDOW).strftime("%Y-%m-%dT%H:%M:%SZ")
        for page in range(1, RECENT_PAGES + 1):
            tickets = await self._list_tickets(operation, {"updated_since": since, "page": page})
            found = next((t for t in tickets if self._is_session_ticket(t, session_id)), None)
            if found or len(tickets) < PAGE_SIZE:
                return found
        return None

    async def _searched_ticket(self, operation: str, session_id: str) -> dict[str, Any] | None:
        query = f"\"{self.external_id_field}:'{session_id}'\""
        if "'" in session_id or '"' in session_id or len(query) > SEARCH_QUERY_MAX_CHARS:
            return None  # the filter language cannot express this value
        response = await self.http.request(operation, "GET", f"{API}/search/tickets", params={"query": query})
        results = response.json().get("results") or []
        # The filter matches text fields loosely; the exact value is checked here.
        return next((t for t in results if isinstance(t, dict) and self._is_session_ticket(t, session_id)), None)

    # --- notes and tags ---------------------------------------------------------------------

    async def _add_note(self, operation: str, record_id: str, note: str) -> None:
        if note:
            await self.http.request(
                operation, "POST", f"{_ticket_path(record_id)}/notes", json={"body": html_text(note), "private": True}
            )

    async def _add_tags(self, operation: str, record_id: str, tags: list[str]) -> None:
        wanted = [t for t in tags if t]
        if not wanted:
            return
        response = await self.http.request(operation, "GET", _ticket_path(record_id))
        current = [str(t) for t in response.json().get("tags") or []]
        merged = _merged_tags(current, wanted)
        if len(merged) > len(current):
            await self.http.request(operation, "PUT", _ticket_path(record_id), json={"tags": merged})
