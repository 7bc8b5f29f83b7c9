"""Freshdesk adapter: a record is a Freshdesk ticket, the end user a Freshdesk contact.

What it speaks (Freshdesk REST API v2 under `{FRESHDESK_URL}/api/v2`, JSON, HTTP basic auth
with the API key as user name and `X` as password):

* `GET /agents/me`: the cheap authenticated call behind `check_credentials`.
* `GET /contacts?phone=...`, `?mobile=...`, `?email=...` (each a list), then `POST /contacts`
  with name, phone, email and `unique_external_id` (the platform's end-user id). Freshdesk
  keeps emails and external ids unique: a second create answers 409 `duplicate_value` naming
  the existing contact in `additional_info.user_id`, which is used as the answer.
* `POST /tickets` with subject, HTML description, status 2 (Open), priority 1 (Low), source
  3 (Phone) or 7 (Chat), tags and the session id in the custom ticket field
  `FRESHDESK_EXTERNAL_ID_FIELD`; the requester as `requester_id` when the service remembers
  the end user's contact, else as `email` and/or `phone` + `name`: Freshdesk finds the
  contact holding them or creates one, so a new end user costs one request (the ticket's
  `requester_id` answer is remembered for the next time). A remembered contact Freshdesk
  no longer has (deleted, merged) is refused with `invalid_value` on `requester_id`.
* Freshdesk has no idempotency key and cannot filter the ticket list by a custom field. The
  filter API (`GET /search/tickets?query="cf_x:'...'"`) can, but its index lags by minutes,
  exactly the window in which a retried create happens. So only a retry whose earlier
  attempt's outcome is unknown looks, and it reads the ticket list itself, which is never
  stale, comparing the custom field: the requester's newest tickets when the requester is
  known, else the newest tickets of the last hour and only then the filter API (for older
  tickets, which are indexed by then).
* End-of-session notes end with a marker line (the outbox row's key); a retry whose
  earlier attempt's outcome is unknown lists the ticket's conversations
  (`GET /tickets/{id}/conversations`) and writes the note only when no note carries it.
* `GET /tickets/{id}?include=stats` (closing times), `PUT /tickets/{id}` for the status and
  the tags (a PUT replaces the whole tag list, so the current tags are read and the union
  written), `POST /tickets/{id}/notes` with `"private": true`.

Statuses: 2 Open, 3 Pending, 4 Resolved, 5 Closed; custom statuses (6 and up) count as open.
Resolved and Closed tickets can both be reopened by setting status 2.

The package: `answers` reads what Freshdesk answers (error bodies, rate-limit headers,
fields) and holds the HTTP client with its quirks; `adapter` is the CrmAdapter itself;
`settings` is its part of the service's Settings (its environment variables).
"""

from app.adapters.crm.freshdesk.adapter import FreshdeskAdapter
from app.adapters.crm.freshdesk.answers import describe_freshdesk_error, freshdesk_quota

__all__ = ['FreshdeskAdapter', 'describe_freshdesk_error', 'freshdesk_quota']
