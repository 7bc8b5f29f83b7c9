"""Zendesk Support adapter: a record is a Zendesk ticket, the end user a Zendesk end user.

What it speaks (Zendesk Support API v2 under `{ZENDESK_URL}/api/v2`, API token basic
auth: username `{email}/token`, password the token):

* `GET /users/me`: the cheap authenticated call behind `check_credentials`. Zendesk may
  answer it with an anonymous user (`id: null`) instead of a 401, so that counts as refused.
* `GET /users/search?query=...` by phone, then by email (the search index; a hit is kept
  only when the phone or email really is the user's), then `GET /users/search?external_id=...`
  (a direct look-up that also finds a user created moments ago), then `POST /users`
  with role `end-user`, name, phone, email and `external_id` = the platform's end-user id.
* The cheap path for a record (`create_record`, `resolves_end_user`): a remembered requester
  is named by `requester_id` (one request). A new end user costs one user search, by
  phone (the identity an inline requester cannot carry); when it finds nobody, the ticket
  names its requester inline (`requester: {name, email}`), which Zendesk matches to the
  user holding that email or creates (two requests). Only an end user with a phone and no
  email is created first with `POST /users` (three requests). The ticket's `requester_id`
  is remembered. A remembered requester Zendesk no longer has is refused with 422
  `Requester: is invalid`, which is reported as CrmEndUserGone.
* `GET /tickets?external_id=...`: the documented List Tickets filter, a direct look-up of
  the ticket made for a session (the search API lags, so it is not used for this), made
  only when an earlier attempt's outcome is unknown.
* `POST /tickets` with the `Idempotency-Key` header: Zendesk answers a repeat of the same
  request within two hours with the original ticket (`x-idempotency-lookup: hit`), and a
  different request under the same key with 400 `IdempotentRequestError`.
* End-of-session notes end with a marker line (the outbox row's key); a retry whose
  earlier attempt's outcome is unknown reads `GET /tickets/{id}/comments` first.
* `GET /tickets/{id}`, `GET /tickets/{id}/metrics` (`ticket_metric.solved_at`: tickets
  have no closing-time field), `PUT /tickets/{id}` for the status, private comments and
  `additional_tags` (which adds tags; `tags` would replace them).

Statuses: new, open, pending, hold (open), solved and closed (closed). A solved ticket
is reopened by setting `open`; a closed one can never be updated again.

The package: `answers` reads what Zendesk answers (error bodies, rate-limit headers,
fields) and holds the HTTP client with its quirks; `adapter` is the CrmAdapter itself;
`settings` is its part of the service's Settings (its environment variables).
"""

from app.adapters.crm.zendesk.adapter import ZendeskAdapter
from app.adapters.crm.zendesk.answers import describe_zendesk_error, zendesk_quota, zendesk_retry_after

__all__ = ['ZendeskAdapter', 'describe_zendesk_error', 'zendesk_quota', 'zendesk_retry_after']
