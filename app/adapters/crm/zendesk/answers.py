"""Zendesk: what its answers say (error bodies, rate-limit headers, fields) and
the HTTP client with its quirks. The API it speaks is described in the package docstring."""

from __future__ import annotations

import re
from typing import Any

import httpx

from app import metrics
from app.adapters.crm.base import (
    CrmPermanentError,
    CrmRateLimited,
    CrmTransientError,
)
from app.adapters.crm.budget import VendorQuota, header_int
from app.adapters.crm.http import CrmHttp, default_describe, parse_retry_after

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
