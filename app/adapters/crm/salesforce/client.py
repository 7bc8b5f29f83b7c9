"""The Salesforce REST API as the adapter uses it: an OAuth 2.0 client-credentials token
shared by the replicas and renewed on 401, SOQL, and the Composite API (what its answers
say, error bodies included, is read in `answers`).

A composite request (POST /composite with allOrNone, or a composite graph) runs several
sObject requests ("nodes" here) in one call that counts once against the org's API
allocation, and is all or nothing: when one node fails, Salesforce rolls back the others.
A node may use an earlier node's answer through `@{referenceId.field}`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from app import metrics
from app.adapters.crm.base import CrmAuthError, CrmRateLimited, CrmTransientError
from app.adapters.crm.budget import RateBudget
from app.adapters.crm.http import CrmHttp
from app.adapters.crm.salesforce.answers import (
    SalesforceRefused,
    SessionRefused,
    _refused,
    _response_items,
    describe_items,
    describe_salesforce_error,
    error_codes,
    error_items,
    parse_salesforce_datetime,
    salesforce_quota,
    soql_literal,
)

CRM = "salesforce"
log = logging.getLogger(__name__)

# REQUEST_LIMIT_EXCEEDED carries no Retry-After: the org's rolling 24 h API allocation is
# spent. Probing once a minute is cheap and resumes soon after the allocation frees up.
REQUEST_LIMIT_WAIT_SECONDS = 60.0

# Errors that say "another transaction holds the record" or "try again": not the request's fault.
RETRYABLE_CODES = {"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG"}
# A graph node that did not fail itself but was rolled back because another one did.
HALTED = "PROCESSING_HALTED"


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
        items = _response_items(response)
        codes = {str(i.get("errorCode")) for i in items if i.get("errorCode")}
        text = f"{self.crm} {operation}: {message}"
        if status == 403 and "REQUEST_LIMIT_EXCEEDED" in codes:
            metrics.crm_rate_limited.labels(self.crm).inc()
            if self.budget is not None:
                self.budget.pause(REQUEST_LIMIT_WAIT_SECONDS)
            return CrmRateLimited(text, retry_after=REQUEST_LIMIT_WAIT_SECONDS, status=403)
        if status == 401:
            return SessionRefused(text, status=status)
        if codes & RETRYABLE_CODES:
            return CrmTransientError(text, status=status)
        if 400 <= status < 500 and status not in (408, 409, 423, 429) and items:
            metrics.crm_validation_errors.labels(self.crm).inc()
            return _refused(text, items, status)
        return super().classify(response, operation, message)


# --- composite graph ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subrequest:
    reference: str  # referenceId: later nodes use @{reference.id}
    method: str
    path: str  # below /services/data/vXX.X/
    body: dict[str, Any] | None = None


@dataclass(slots=True)
class CompositeResult:
    ok: bool
    bodies: dict[str, Any] = field(default_factory=dict)  # referenceId -> answer body
    statuses: dict[str, int] = field(default_factory=dict)
    # The node that made the graph fail, and Salesforce's errors for it.
    failed_reference: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    def created_id(self, reference: str) -> str:
        return str(self.bodies[reference]["id"])


@dataclass(frozen=True, slots=True)
class _Session:
    access_token: str
    instance_url: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class Token(Protocol):
    @property
    def access_token(self) -> str: ...

    @property
    def instance_url(self) -> str: ...


class TokenStore(Protocol):
    """Where the replicas share the org's access token (PostgreSQL in the service:
    app.adapters.db.crm_tokens_repo). `save(..., replacing=t)` stores the token only if the
    stored one is still `t` (the refused one) or none is stored."""

    async def load(self, account: str) -> Token | None: ...

    async def save(self, account: str, token: _Session, *, replacing: str | None) -> None: ...


class SalesforceClient:
    def __init__(
        self,
        *,
        login_url: str,
        client_id: str,
        client_secret: str,
        api_version: str,
        timeout_seconds: float,
        requests_per_minute: int | None,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: RateBudget | None = None,
        token_store: TokenStore | None = None,
        account: str = CRM,
    ):
        self._client_id = client_id
        # One token for every replica and across restarts, until Salesforce refuses it.
        self._tokens = token_store
        self._account = account
        self._client_secret = client_secret
        self.api_version = api_version if api_version.startswith("v") else f"v{api_version}"
        # Token requests are not REST API calls and do not count against the org's allocation.
        self._login = _LoginHttp(
            CRM, login_url, timeout_seconds=timeout_seconds, requests_per_minute=None,
            describe_error=describe_salesforce_error, transport=transport,
        )
        # The instance URL is known only after the token, so REST calls use absolute URLs.
        # Every answer's Sforce-Limit-Info feeds the account's budget (shared by replicas
        # when the service passes one).
        self.rest = _RestHttp(
            CRM, "", timeout_seconds=timeout_seconds, requests_per_minute=requests_per_minute,
            describe_error=describe_salesforce_error, transport=transport, budget=budget,
            read_quota=salesforce_quota,
        )
        self._session: _Session | None = None
        self._session_lock = asyncio.Lock()
        # Org facts read once per process (e.g. the closed Opportunity stages).
        self.cache: dict[str, Any] = {}

    @property
    def instance_url(self) -> str:
        return self._session.instance_url if self._session else ""

    def api_path(self, path: str) -> str:
        return f"/services/data/{self.api_version}/{path}"

    async def _fetch_session(self) -> _Session:
        response = await self._login.request(
            "authenticate", "POST", "/services/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": self._client_id,
                  "client_secret": self._client_secret},
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
        return session if session is not None else await self.renew_session(stale=None)

    async def renew_session(self, stale: _Session | None) -> _Session:
        """The token to use now: this process's, else the one the replicas share, else a
        new one. `stale` is the token Salesforce just refused: it is replaced (by another
        caller's or another replica's newer token when there is one, else a new one)."""
        async with self._session_lock:
            if self._session is not None and self._session is not stale:
                return self._session
            shared = await self._shared_token()
            if shared is not None and (stale is None or shared.access_token != stale.access_token):
                self._session = shared
                return shared
            self._session = await self._fetch_session()
            await self._share(self._session, replacing=stale.access_token if stale else None)
            return self._session

    async def _shared_token(self) -> _Session | None:
        if self._tokens is None:
            return None
        try:
            token = await self._tokens.load(self._account)
        except Exception as exc:  # a token of its own still works
            log.warning("could not read the shared Salesforce token (%r)", exc)
            return None
        return _Session(token.access_token, token.instance_url) if token else None

    async def _share(self, session: _Session, *, replacing: str | None) -> None:
        if self._tokens is None:
            return
        try:
            await self._tokens.save(self._account, session, replacing=replacing)
        except Exception as exc:  # the other replicas then fetch their own
            log.warning("could not share the Salesforce token (%r)", exc)

    async def call(
        self, operation: str, method: str, path: str, *, accept: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        """A REST call with the current token; one retry with a fresh token after a 401."""
        session = await self._current_session()
        try:
            response = await self.rest.request(
                operation, method, session.instance_url + self.api_path(path), headers=session.headers,
                accept=accept, **kwargs,
            )
        except SessionRefused:
            session = await self.renew_session(stale=session)
            response = await self.rest.request(
                operation, method, session.instance_url + self.api_path(path), headers=session.headers,
                accept=accept, **kwargs,
            )
        return response

    async def query(self, operation: str, soql: str) -> list[dict[str, Any]]:
        response = await self.call(operation, "GET", "query", params={"q": soql})
        return list(response.json().get("records") or [])

    async def composite(self, operation: str, nodes: list[Subrequest]) -> CompositeResult:
        """Run `nodes` as one Composite API request (POST /composite, allOrNone): one call
        against the allocation, rolled back together when one fails. Where /composite is
        not found, the same nodes go as a composite graph (POST /composite/graph), which
        has the same properties; the choice is remembered."""
        subrequests = [
            {"method": n.method, "url": self.api_path(n.path), "referenceId": n.reference,
             **({"body": n.body} if n.body is not None else {})}
            for n in nodes
        ]
        if not self.cache.get("composite_graph_only"):
            response = await self.call(
                operation, "POST", "composite", json={"allOrNone": True, "compositeRequest": subrequests},
                accept=(404,),
            )
            if response.status_code != 404:
                items = response.json().get("compositeResponse") or []
                ok = bool(items) and all(200 <= int(i.get("httpStatusCode") or 0) < 300 for i in items)
                return self._composite_result(items, ok)
            self.cache["composite_graph_only"] = True
        response = await self.call(
            operation, "POST", "composite/graph", json={"graphs": [{"graphId": "1", "compositeRequest": subrequests}]}
        )
        graph = (response.json().get("graphs") or [{}])[0]
        items = (graph.get("graphResponse") or {}).get("compositeResponse") or []
        return self._composite_result(items, bool(graph.get("isSuccessful")))

    @staticmethod
    def _composite_result(items: list[dict[str, Any]], ok: bool) -> CompositeResult:
        result = CompositeResult(ok=ok)
        for item in items:
            reference = str(item.get("referenceId"))
            result.bodies[reference] = item.get("body")
            result.statuses[reference] = int(item.get("httpStatusCode") or 0)
            errors = error_items(item.get("body"))
            if not ok and errors and result.failed_reference is None:
                if any(e.get("errorCode") != HALTED for e in errors):
                    result.failed_reference, result.errors = reference, errors
        return result

    def composite_error(self, operation: str, result: CompositeResult) -> Exception:
        """The exception a failed graph stands for, as if its failing node had been sent alone."""
        items = result.errors
        codes = {str(i.get("errorCode")) for i in items}
        status = result.statuses.get(result.failed_reference or "", 400)
        text = f"{CRM} {operation}: HTTP {status} {describe_items(items) or 'composite graph failed'}"
        if result.failed_reference:
            text += f" (in {result.failed_reference})"
        if "REQUEST_LIMIT_EXCEEDED" in codes:
            if self.rest.budget is not None:
                self.rest.budget.pause(REQUEST_LIMIT_WAIT_SECONDS)
            return CrmRateLimited(text, retry_after=REQUEST_LIMIT_WAIT_SECONDS, status=403)
        if codes & RETRYABLE_CODES or status >= 500 or not items:
            return CrmTransientError(text, status=status)
        metrics.crm_validation_errors.labels(CRM).inc()
        return _refused(text, items, status)

    async def aclose(self) -> None:
        await self._login.aclose()
        await self.rest.aclose()


__all__ = [
    "CRM", "CompositeResult", "SalesforceClient", "SalesforceRefused", "SessionRefused", "Subrequest", "TokenStore",
    "describe_salesforce_error", "error_codes", "parse_salesforce_datetime", "salesforce_quota", "soql_literal",
]
