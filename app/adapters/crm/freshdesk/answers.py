"""Freshdesk: what its answers say (error bodies, rate-limit headers, fields) and
the HTTP client with its quirks. The API it speaks is described in the package docstring."""

from __future__ import annotations

import html
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from app.adapters.crm.base import (
    CrmPermanentError,
)
from app.adapters.crm.budget import VendorQuota, header_int
from app.adapters.crm.http import default_describe, parse_vendor_time

API = "/api/v2"

STATUS_OPEN = 2
STATUS_PENDING = 3
STATUS_RESOLVED = 4
STATUS_CLOSED = 5
STATUS_NAMES = {STATUS_OPEN: "Open", STATUS_PENDING: "Pending", STATUS_RESOLVED: "Resolved", STATUS_CLOSED: "Closed"}
PRIORITY_LOW = 1
SOURCE_PHONE = 3
SOURCE_CHAT = 7

SUBJECT_MAX_CHARS = 255  # Freshdesk refuses a longer subject
PAGE_SIZE = 100  # the largest page Freshdesk serves
# How far back, and how deep, find_record_by_session reads the plain ticket list before it
# trusts the lagging filter API: the filter index catches up within minutes.
RECENT_WINDOW = timedelta(hours=1)
RECENT_PAGES = 3
SEARCH_QUERY_MAX_CHARS = 512


# --- error bodies -----------------------------------------------------------------------------


def _describe_field_error(error: dict[str, Any]) -> str:
    field = error.get("field")
    text = str(error.get("message") or "")
    code = error.get("code")
    described = f"{field}: {text}" if field else text
    return f"{described} ({code})" if code else described


def describe_freshdesk_error(response: httpx.Response) -> str:
    """Freshdesk answers `{"description": "Validation failed", "errors": [{field, message, code}]}`
    for a refused request and `{"code": ..., "message": ...}` for the rest (401, 403, ...)."""
    try:
        body = response.json()
    except ValueError:
        return default_describe(response)
    if not isinstance(body, dict):
        return default_describe(response)
    parts = [str(p) for p in (body.get("code"), body.get("description") or body.get("message")) if p]
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        details = "; ".join(_describe_field_error(e) for e in errors[:5] if isinstance(e, dict))
        parts.append(details)
    if not parts:
        return default_describe(response)
    return f"HTTP {response.status_code}: " + ": ".join(parts)


def _duplicate_contact_id(response: httpx.Response) -> str | None:
    """The existing contact a 409 `duplicate_value` names, if it names one."""
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return None
    for error in errors:
        info = error.get("additional_info") if isinstance(error, dict) else None
        if error.get("code") == "duplicate_value" and isinstance(info, dict) and info.get("user_id"):
            return str(info["user_id"])
    return None


def _refuses_field(response: httpx.Response, field: str) -> bool:
    """A 400 that refuses only `field` as unknown to this account (`invalid_field`)."""
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return False
    return bool(errors) and all(
        isinstance(e, dict) and e.get("field") == field and e.get("code") == "invalid_field" for e in errors
    )


def freshdesk_quota(headers: httpx.Headers) -> VendorQuota | None:
    """`X-RateLimit-Total` / `X-RateLimit-Remaining`: the account's calls per minute."""
    limit = header_int(headers, "X-RateLimit-Total")
    remaining = header_int(headers, "X-RateLimit-Remaining")
    if limit is None and remaining is None:
        return None
    return VendorQuota(limit=limit, remaining=remaining)


# --- small conversions ------------------------------------------------------------------------


def html_text(text: str) -> str:
    """Freshdesk stores descriptions and notes as HTML: escape the text, keep its line breaks."""
    return "<br>".join(html.escape(line) for line in text.split("\n"))


def _closed_at(status: int, stats: dict[str, Any]) -> datetime | None:
    """When the ticket reached its closed status: `closed_at` for Closed, `resolved_at` for
    Resolved, else when its status last changed."""
    first = stats.get("closed_at") if status == STATUS_CLOSED else stats.get("resolved_at")
    candidates = (first, stats.get("resolved_at"), stats.get("status_updated_at"))
    return next((moment for value in candidates if (moment := parse_vendor_time(value)) is not None), None)


def _ticket_path(record_id: str) -> str:
    return f"{API}/tickets/{quote(str(record_id), safe='')}"


def _requester_id(contact_id: str) -> int:
    try:
        return int(contact_id)
    except ValueError:
        raise CrmPermanentError(f"freshdesk create_record: {contact_id!r} is not a Freshdesk contact id") from None


def _merged_tags(current: list[str], added: list[str]) -> list[str]:
    """The current tags followed by the new ones; Freshdesk compares tags case-insensitively."""
    merged = list(current)
    seen = {t.casefold() for t in current}
    for tag in added:
        if tag and tag.casefold() not in seen:
            merged.append(tag)
            seen.add(tag.casefold())
    return merged


def _requester_gone(response: httpx.Response) -> bool:
    """A 400 refusing `requester_id` as no contact: the remembered contact is gone."""
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return False
    return any(isinstance(e, dict) and e.get("field") == "requester_id" and e.get("code") == "invalid_value"
               for e in errors)
