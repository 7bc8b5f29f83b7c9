"""Kustomer: what its answers say (error bodies, rate-limit headers, fields) and
the HTTP client with its quirks. The API it speaks is described in the package docstring."""

from __future__ import annotations

import base64
import binascii
import json
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from app import metrics
from app.adapters.crm.base import (
    CrmRateLimited,
)
from app.adapters.crm.budget import VendorQuota, header_int
from app.adapters.crm.http import CrmHttp, default_describe, parse_retry_after, parse_vendor_time

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


def _closed_at(attributes: dict[str, Any]) -> datetime | None:
    """When the conversation was last marked done: `closedAt`, else `lastDone.createdAt`."""
    last_done = found if isinstance(found := attributes.get("lastDone"), dict) else {}
    return parse_vendor_time(attributes.get("closedAt")) or parse_vendor_time(last_done.get("createdAt"))


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
