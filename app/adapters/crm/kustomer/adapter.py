"""The KustomerAdapter: the CrmAdapter protocol over the API described in the package docstring."""

from __future__ import annotations

import asyncio
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
from app.adapters.crm.kustomer.answers import (
    CLOSED_STATUS,
    EMAIL_TYPE,
    OPEN_STATUS,
    PHONE_TYPE,
    KustomerHttp,
    _closed_at,
    _refuses_customer,
    _related_id,
    _resource,
    _segment,
    agent_app_base,
    describe_kustomer_error,
    kustomer_quota,
)
from app.domain.policy import ExistingRecord

if TYPE_CHECKING:
    from app.settings import Settings  # a Settings part lives in this package: no import cycle


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
