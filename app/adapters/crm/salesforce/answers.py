"""What Salesforce's answers say: its error bodies (REST and OAuth), the errors they
become, the org's daily allocation from `Sforce-Limit-Info`, and the literal and time
formats of SOQL and the REST API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from app.adapters.crm.base import CrmAuthError, CrmPermanentError
from app.adapters.crm.budget import VendorQuota, parse_sforce_limit_info
from app.adapters.crm.http import default_describe

# --- error bodies -------------------------------------------------------------------------------


def error_items(body: Any) -> list[dict[str, Any]]:
    """REST errors are a JSON array of {message, errorCode, fields}."""
    if isinstance(body, list):
        return [item for item in body if isinstance(item, dict)]
    return []


def _response_items(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        return error_items(response.json())
    except ValueError:
        return []


def error_codes(response: httpx.Response) -> set[str]:
    return {str(item.get("errorCode")) for item in _response_items(response) if item.get("errorCode")}


def describe_items(items: list[dict[str, Any]]) -> str:
    parts = []
    for item in items:
        text = f"{item.get('errorCode', 'ERROR')}: {item.get('message', '')}".rstrip()
        fields = item.get("fields") or []
        if fields:
            text += f" (fields: {', '.join(str(f) for f in fields)})"
        parts.append(text)
    return "; ".join(parts)


def describe_salesforce_error(response: httpx.Response) -> str:
    """Salesforce's own words: `errorCode: message (fields: ...)`, or the OAuth
    `error: error_description` of the token endpoint."""
    items = _response_items(response)
    if items:
        return f"HTTP {response.status_code} " + describe_items(items)
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return f"HTTP {response.status_code} {body['error']}: {body.get('error_description', '')}".rstrip(": ")
    return default_describe(response)


class SessionRefused(CrmAuthError):
    """401 from the REST API: the access token expired or was revoked."""


class SalesforceRefused(CrmPermanentError):
    """A request Salesforce refused, with its error codes (for the callers that can
    repair the request, e.g. drop a create-only field and send again)."""

    def __init__(self, message: str, *, codes: set[str], fields: set[str], status: int | None = None):
        super().__init__(message, status=status)
        self.codes = codes
        self.fields = fields


def _refused(text: str, items: list[dict[str, Any]], status: int | None) -> SalesforceRefused:
    codes = {str(i.get("errorCode")) for i in items if i.get("errorCode")}
    fields = {str(f) for i in items for f in (i.get("fields") or [])}
    return SalesforceRefused(text, codes=codes, fields=fields, status=status)


# --- values -------------------------------------------------------------------------------------


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
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def salesforce_quota(headers: Any) -> VendorQuota | None:
    """The org's daily allocation from `Sforce-Limit-Info: api-usage=N/M` (every answer)."""
    return parse_sforce_limit_info(headers.get("Sforce-Limit-Info"))
