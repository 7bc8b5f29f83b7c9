"""Salesforce Service Cloud: records are Cases, end users are Contacts, notes are private
CaseComments. Salesforce has no tags, so tags passed in are ignored.

Authentication is the OAuth 2.0 client credentials flow against the org's login URL (its
My Domain URL); the token answer names the instance URL every REST call then goes to.
An expired or revoked session (401 INVALID_SESSION_ID) fetches a new token and retries the
call once. Token fetches are serialized so a burst of calls refreshes only once.

Idempotency is Salesforce's own upsert on an external-id field of Case (marked External ID
and Unique): PATCH /sobjects/Case/{field}/{session_id} creates the Case the first time and
updates the same Case on any retry, so a create that timed out after Salesforce stored it
cannot make a second Case.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import httpx

from app import metrics
from app.adapters.crm.base import (
    required_setting,
    CrmAuthError,
    CrmRateLimited,
    CrmTransientError,
    EndUserInfo,
    NewRecord,
    RecordRef,
)
from app.adapters.crm.http import CrmHttp, default_describe
from app.domain.policy import ExistingRecord
from app.settings import Settings

CRM = "salesforce"

# REQUEST_LIMIT_EXCEEDED carries no Retry-After: the org's rolling 24 h API allocation is
# spent. Probing once a minute is cheap and resumes soon after the allocation frees up.
REQUEST_LIMIT_WAIT_SECONDS = 60.0

# The default "open" value of the standard Case Status picklist; it must exist in the org.
DEFAULT_REOPEN_STATUS = "New"

# Field sizes Salesforce enforces (Case.Subject, Case.Description, CaseComment.CommentBody
# in bytes, Contact names); longer values would be refused with STRING_TOO_LONG.
SUBJECT_MAX = 255
DESCRIPTION_MAX = 32000
COMMENT_MAX_BYTES = 4000
FIRST_NAME_MAX = 40
LAST_NAME_MAX = 80

_ORIGIN_BY_MEDIUM = {"call": "Phone", "chat": "Chat"}


# --- error bodies -------------------------------------------------------------------------------


def _error_items(response: httpx.Response) -> list[dict[str, Any]]:
    """REST errors are a JSON array of {message, errorCode, fields}."""
    try:
        body = response.json()
    except ValueError:
        return []
    if isinstance(body, list):
        return [item for item in body if isinstance(item, dict)]
    return []


def error_codes(response: httpx.Response) -> set[str]:
    return {str(item.get("errorCode")) for item in _error_items(response) if item.get("errorCode")}


def describe_salesforce_error(response: httpx.Response) -> str:
    """Salesforce's own words: `errorCode: message (fields: ...)`, or the OAuth
    `error: error_description` of the token endpoint."""
    items = _error_items(response)
    if items:
        parts = []
        for item in items:
            text = f"{item.get('errorCode', 'ERROR')}: {item.get('message', '')}".rstrip()
            fields = item.get("fields") or []
            if fields:
                text += f" (fields: {', '.join(str(f) for f in fields)})"
            parts.append(text)
        return f"HTTP {response.status_code} " + "; ".join(parts)
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return f"HTTP {response.status_code} {body['error']}: {body.get('error_description', '')}".rstrip(": ")
    return default_describe(response)


class _SessionRefused(CrmAuthError):
    """401 from the REST API: the access token expired or was revoked."""


class _LoginHttp(CrmHttp):
    """The token endpoint answers refused credentials with 400 (invalid_client,
    invalid_client_id, invalid_grant, unsupported_grant_type): all mean the
    credentials or the connected app need an operator, not a parked record."""

    def classify(self, response: httpx.Response, operation: str, message: str) -> Exception:
        if response.status_code in (400, 401, 403):
            return CrmAuthError(f"{self.crm} {operation}: {message}", status=response.status_code)
        return super().classify(response, operation, message)


class _RestHttp(CrmHttp):
    """Salesforce's quirks on top of the common mapping."""

    def classify(self, response: httpx.Response, operation: str, message: str) -> Exception:
        status = response.status_code
        codes = error_codes(response)
        text = f"{self.crm} {operation}: {message}"
        if status == 403 and "REQUEST_LIMIT_EXCEEDED" in codes:
            metrics.crm_rate_limited.labels(self.crm).inc()
            if self.budget is not None:
                self.budget.pause(REQUEST_LIMIT_WAIT_SECONDS)
            return CrmRateLimited(text, retry_after=REQUEST_LIMIT_WAIT_SECONDS, status=403)
        if status == 401:
            return _SessionRefused(text, status=status)
        if "UNABLE_TO_LOCK_ROW" in codes:
            # Another transaction holds the Case; Salesforce asks the caller to retry.
            return CrmTransientError(text, status=status)
        return super().classify(response, operation, message)


# --- the session --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Session:
    access_token: str
    instance_url: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def soql_literal(value: str) -> str:
    """A SOQL string literal: quotes and backslashes escaped, so a value cannot end the
    literal early (an email with an apostrophe is common)."""
    escaped = (
        value.replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f"'{escaped}'"


def parse_salesforce_datetime(value: str | None) -> datetime | None:
    """`2024-01-15T10:00:00.000+0000` as an aware UTC datetime."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def split_comment(note: str, limit: int = COMMENT_MAX_BYTES) -> list[str]:
    """The note as CaseComment bodies of at most `limit` UTF-8 bytes each, split at line
    ends where possible (a chat transcript easily exceeds one comment)."""
    chunks: list[str] = []
    current = ""
    for line in note.splitlines(keepends=True):
        while len(line.encode()) > limit:  # a single overlong line: cut it by bytes
            head = line.encode()[:limit].decode(errors="ignore")
            if current:
                chunks.append(current)
                current = ""
            chunks.append(head)
            line = line[len(head):]
        if len((current + line).encode()) > limit:
            chunks.append(current)
            current = ""
        current += line
    if current or not chunks:
        chunks.append(current)
    return chunks


def _contact_fields(user: EndUserInfo) -> dict[str, str]:
    """LastName is required on Contact: the last word of the name, else whatever
    identifies the end user."""
    words = (user.name or "").split()
    fields: dict[str, str] = {}
    if words:
        fields["LastName"] = words[-1][:LAST_NAME_MAX]
        if len(words) > 1:
            fields["FirstName"] = " ".join(words[:-1])[:FIRST_NAME_MAX]
    else:
        fields["LastName"] = (user.phone or user.email or user.id)[:LAST_NAME_MAX]
    if user.phone:
        fields["Phone"] = user.phone
    if user.email:
        fields["Email"] = user.email
    return fields


class SalesforceAdapter:
    name = CRM

    def __init__(
        self,
        *,
        login_url: str,
        client_id: str,
        client_secret: str,
        api_version: str,
        external_id_field: str,
        timeout_seconds: float,
        requests_per_minute: int | None,
        reopen_status: str = DEFAULT_REOPEN_STATUS,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._reopen_status = reopen_status
        self._client_id = client_id
        self._client_secret = client_secret
        self._api_version = api_version if api_version.startswith("v") else f"v{api_version}"
        self._external_id_field = external_id_field
        # Token requests are not REST API calls and do not count against the org's allocation.
        self._login = _LoginHttp(
            CRM,
            login_url,
            timeout_seconds=timeout_seconds,
            requests_per_minute=None,
            describe_error=describe_salesforce_error,
            transport=transport,
        )
        # The instance URL is known only after the token, so REST calls use absolute URLs.
        self._rest = _RestHttp(
            CRM,
            "",
            timeout_seconds=timeout_seconds,
            requests_per_minute=requests_per_minute,
            describe_error=describe_salesforce_error,
            transport=transport,
        )
        self._session: _Session | None = None
        self._session_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> SalesforceAdapter:
        return cls(
            login_url=required_setting(settings, "salesforce_login_url"),
            client_id=required_setting(settings, "salesforce_client_id"),
            client_secret=required_setting(settings, "salesforce_client_secret"),
            api_version=settings.salesforce_api_version,
            external_id_field=settings.salesforce_external_id_field,
            timeout_seconds=settings.crm_timeout_seconds,
            requests_per_minute=settings.salesforce_requests_per_minute,
            reopen_status=settings.salesforce_reopen_status,
        )

    # --- session and calls ------------------------------------------------------------------

    async def _fetch_session(self) -> _Session:
        response = await self._login.request(
            "authenticate",
            "POST",
            "/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": self._client_id,
                "client_secret": self._client_secret,
            },
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not body.get("access_token") or not body.get("instance_url"):
            raise CrmAuthError(
                f"{CRM} authenticate: the token answer has no access_token and instance_url "
                "(is SALESFORCE_LOGIN_URL the org's My Domain URL?)",
                status=response.status_code,
            )
        return _Session(str(body["access_token"]), str(body["instance_url"]).rstrip("/"))

    async def _current_session(self) -> _Session:
        session = self._session
        return session if session is not None else await self._renew_session(stale=None)

    async def _renew_session(self, stale: _Session | None) -> _Session:
        """A new token unless another caller already replaced `stale` while we waited."""
        async with self._session_lock:
            if self._session is None or self._session is stale:
                self._session = await self._fetch_session()
            return self._session

    def _api_url(self, session: _Session, path: str) -> str:
        return f"{session.instance_url}/services/data/{self._api_version}/{path}"

    async def _call(
        self, operation: str, method: str, path: str, *, accept: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        """A REST call with the current token; one retry with a fresh token after a 401."""
        session = await self._current_session()
        try:
            return await self._rest.request(
                operation, method, self._api_url(session, path), headers=session.headers, accept=accept, **kwargs
            )
        except _SessionRefused:
            session = await self._renew_session(stale=session)
            return await self._rest.request(
                operation, method, self._api_url(session, path), headers=session.headers, accept=accept, **kwargs
            )

    def _case_path(self, record_id: str) -> str:
        return f"sobjects/Case/{quote(record_id, safe='')}"

    def _case_by_session_path(self, session_id: str) -> str:
        return f"sobjects/Case/{quote(self._external_id_field, safe='')}/{quote(session_id, safe='')}"

    def _case_url(self, record_id: str) -> str:
        instance = self._session.instance_url if self._session else ""
        return f"{instance}/lightning/r/Case/{record_id}/view"

    # --- the CrmAdapter protocol ------------------------------------------------------------

    async def check_credentials(self) -> None:
        """A fresh token proves the credentials; describing Case proves API access to Cases."""
        await self._renew_session(stale=self._session)
        await self._call("check_credentials", "GET", "sobjects/Case/describe")

    async def _query(self, operation: str, soql: str) -> list[dict[str, Any]]:
        response = await self._call(operation, "GET", "query", params={"q": soql})
        return list(response.json().get("records") or [])

    async def _find_contact(self, field: str, value: str) -> str | None:
        soql = f"SELECT Id FROM Contact WHERE {field} = {soql_literal(value)} ORDER BY CreatedDate DESC LIMIT 1"
        records = await self._query("find_end_user", soql)
        return str(records[0]["Id"]) if records else None

    async def find_or_create_end_user(self, user: EndUserInfo) -> str:
        for field, value in (("Phone", user.phone), ("Email", user.email)):
            if value:
                found = await self._find_contact(field, value)
                if found is not None:
                    return found
        response = await self._call("create_end_user", "POST", "sobjects/Contact", json=_contact_fields(user))
        return str(response.json()["id"])

    async def find_record_by_session(self, session_id: str) -> RecordRef | None:
        response = await self._call(
            "find_record_by_session", "GET", self._case_by_session_path(session_id), params={"fields": "Id"}, accept=(404,)
        )
        if response.status_code == 404:
            return None
        record_id = str(response.json()["Id"])
        return RecordRef(record_id=record_id, url=self._case_url(record_id))

    async def create_record(self, record: NewRecord) -> RecordRef:
        """Upsert by the session id: a retry updates the Case the first attempt created."""
        body: dict[str, Any] = {
            "Subject": record.title[:SUBJECT_MAX],
            "Description": record.description[:DESCRIPTION_MAX],
            "Origin": _ORIGIN_BY_MEDIUM.get(record.medium, "Phone"),
        }
        if record.contact_id:
            body["ContactId"] = record.contact_id
        response = await self._call("create_record", "PATCH", self._case_by_session_path(record.session_id), json=body)
        if response.status_code == 204:
            # API versions before 46.0 answer an update with no body: look the Case up.
            found = await self.find_record_by_session(record.session_id)
            if found is None:
                raise CrmTransientError(f"{CRM} create_record: upsert answered 204 but no Case has the session id")
            return found
        record_id = str(response.json()["id"])
        return RecordRef(record_id=record_id, url=self._case_url(record_id))

    async def get_record(self, record_id: str) -> ExistingRecord | None:
        response = await self._call(
            "get_record",
            "GET",
            self._case_path(record_id),
            params={"fields": "Status,IsClosed,ClosedDate,CaseNumber"},
            accept=(404,),
        )
        if response.status_code == 404:
            return None
        case = response.json()
        is_closed = bool(case.get("IsClosed"))
        return ExistingRecord(
            record_id=record_id,
            status=str(case.get("Status") or ""),
            is_closed=is_closed,
            closed_at=parse_salesforce_datetime(case.get("ClosedDate")) if is_closed else None,
            can_reopen=True,  # any closed Case can be set back to an open status
            url=self._case_url(record_id),
        )

    async def reopen_record(self, record_id: str) -> None:
        await self._call("reopen_record", "PATCH", self._case_path(record_id), json={"Status": self._reopen_status})

    async def _add_comments(self, operation: str, record_id: str, note: str) -> None:
        for body in split_comment(note):
            await self._call(
                operation,
                "POST",
                "sobjects/CaseComment",
                json={"ParentId": record_id, "CommentBody": body, "IsPublished": False},
            )

    async def attach_session(self, record_id: str, note: str, tags: list[str]) -> None:
        """Salesforce Cases have no tags: the private comment is the whole attachment."""
        await self._add_comments("attach_session", record_id, note)

    async def add_note(self, record_id: str, note: str) -> None:
        await self._add_comments("add_note", record_id, note)

    async def aclose(self) -> None:
        await self._login.aclose()
        await self._rest.aclose()
