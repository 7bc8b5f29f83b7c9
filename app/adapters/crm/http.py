"""The HTTP plumbing every real CRM adapter shares: one httpx client with an explicit
timeout, a request budget per minute, latency metrics, the per-call log, and the
mapping of transport failures and common status codes to the CrmError classes.

Adapters build requests and read answers; vendor-specific error bodies are turned
into messages by the `describe_error` callback each adapter passes in.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from app import metrics
from app.adapters.crm.base import (
    CrmAuthError,
    CrmCall,
    CrmPermanentError,
    CrmRateLimited,
    CrmTransientError,
    log_call,
)
from app.adapters.crm.budget import PROVISIONAL_PER_MINUTE, QuotaReader, RateBudget


class RequestBudget:
    """At most `per_minute` requests in any rolling 60 s window (so in every fixed
    minute the CRM counts too), spent as fast as allowed: a backlog drains at the budget.

    `pause(seconds)` holds every request back, as a 429's Retry-After asks."""

    def __init__(self, per_minute: int, *, window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self.window = window_seconds
        self._clock = clock
        self._sent: deque[float] = deque()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def observe(self, quota: object) -> None:
        """A fixed budget: what the vendor announces does not change it."""

    async def acquire(self, priority: object = None) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                while self._sent and now - self._sent[0] >= self.window:
                    self._sent.popleft()
                wait = self._paused_until - now
                if len(self._sent) >= self.per_minute:
                    wait = max(wait, self._sent[0] + self.window - now)
                if wait <= 0:
                    self._sent.append(now)
                    return
                await asyncio.sleep(wait)


def parse_vendor_time(value: Any) -> datetime | None:
    """A vendor's ISO 8601 time (`Z`, an offset, or none: read as UTC) in UTC; None when absent."""
    if not isinstance(value, str) or not value:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    """Retry-After as seconds: either a number or an HTTP date."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, moment.timestamp() - time.time())


ErrorDescriber = Callable[[httpx.Response], str]


def default_describe(response: httpx.Response) -> str:
    text = response.text.strip()
    return f"HTTP {response.status_code}: {text[:500]}" if text else f"HTTP {response.status_code}"


class CrmHttp:
    """One CRM's HTTP client. `request` returns the response for 2xx (and for any
    status listed in `accept`), and raises a CrmError subclass for the rest."""

    def __init__(
        self,
        crm: str,
        base_url: str,
        *,
        timeout_seconds: float,
        requests_per_minute: int | None,
        auth: httpx.Auth | None = None,
        headers: dict[str, str] | None = None,
        describe_error: ErrorDescriber = default_describe,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: RateBudget | RequestBudget | None = None,
        read_quota: QuotaReader | None = None,
    ):
        self.crm = crm
        # The account's shared budget when the service passes one; otherwise one of this
        # client's own, paced by the vendor's headers and `requests_per_minute` as ceiling.
        if budget is None:
            budget = RateBudget(
                crm, crm, ceiling_per_minute=requests_per_minute,
                provisional_per_minute=PROVISIONAL_PER_MINUTE if read_quota is not None else None,
            )
        self.budget = budget
        # Reads the vendor's rate-limit headers of every answer into a VendorQuota.
        self.read_quota = read_quota
        self.describe_error = describe_error
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 5.0)),
            auth=auth,
            headers={"Accept": "application/json", "User-Agent": "crm-records/0.1", **(headers or {})},
            transport=transport,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    async def request(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        accept: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        if self.budget is not None:
            waited = await self.budget.acquire()
            if waited:
                metrics.crm_budget_wait.labels(self.crm).observe(waited)
        started = time.perf_counter()
        path = httpx.URL(url).path if "://" in url else url.split("?", 1)[0]
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            self._record(operation, method, path, None, started, f"timeout: {type(exc).__name__}")
            # A connect timeout sent nothing; any other may have been carried out.
            raise CrmTransientError(
                f"{self.crm} {operation}: timed out ({type(exc).__name__})",
                outcome_unknown=not isinstance(exc, httpx.ConnectTimeout),
            ) from None
        except httpx.TransportError as exc:
            self._record(operation, method, path, None, started, f"connection: {exc!r}")
            raise CrmTransientError(
                f"{self.crm} {operation}: connection failed ({type(exc).__name__})",
                outcome_unknown=not isinstance(exc, httpx.ConnectError),
            ) from None
        if self.budget is not None and self.read_quota is not None:
            self.budget.observe(self.read_quota(response.headers))
        status = response.status_code
        if status < 300 or status in accept:
            self._record(operation, method, path, status, started, None)
            return response
        message = self.describe_error(response)
        self._record(operation, method, path, status, started, message)
        raise self.classify(response, operation, message)

    def classify(self, response: httpx.Response, operation: str, message: str) -> Exception:
        """The common mapping; adapters with vendor quirks override it."""
        status = response.status_code
        text = f"{self.crm} {operation}: {message}"
        if status == 429:
            metrics.crm_rate_limited.labels(self.crm).inc()
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if self.budget is not None:
                self.budget.pause(retry_after)
            return CrmRateLimited(text, retry_after=retry_after)
        if status in (401, 403):
            return CrmAuthError(text, status=status)
        if status >= 500 or status in (408, 409, 423):
            # 409/423: a conflicting concurrent write; the CRM asks to try again. A 5xx to
            # a write may come after the write was made.
            unknown = status >= 500 and response.request.method not in ("GET", "HEAD")
            return CrmTransientError(text, status=status, outcome_unknown=unknown)
        metrics.crm_validation_errors.labels(self.crm).inc()
        return CrmPermanentError(text, status=status)

    def _record(self, operation: str, method: str, path: str, status: int | None, started: float, error: str | None):
        elapsed = time.perf_counter() - started
        outcome = metrics.crm_outcome_class(status, error)
        metrics.crm_request_duration.labels(self.crm, operation, outcome).observe(elapsed)
        log_call(CrmCall(operation, method, path, status, round(elapsed * 1000, 2), error))

    async def aclose(self) -> None:
        await self.client.aclose()
