"""Kustomer adapter: a record is a Kustomer conversation, the end user a Kustomer customer.

What it speaks (Kustomer REST API v1, JSON:API envelopes, `Authorization: Bearer <API key>`):

* `GET /v1/users/current`: the cheap authenticated call behind `check_credentials`.
* A new end user (`create_record` with no remembered customer, `resolves_end_user`):
  `POST /v1/customers` with name, `externalId` (the platform's end-user id), `phones` and
  `emails` first. Kustomer keeps a customer's email, phone and external id unique in the
  org and refuses a second customer holding one (409): only then is the holder looked up
  (`GET /v1/customers/email=...`, `phone=...`, `externalId=...`, 404 when none). A look-up
  made before the create would find nothing for a new end user: it is dropped.
* `GET /v1/conversations/externalId={session id}`: the direct look-up of a record by the
  session it was made for, made only when an earlier attempt's outcome is unknown;
  `POST /v1/conversations` with `customer`, `name` (the title), `externalId` (the session
  id) and `status: open`. A remembered customer Kustomer no longer has is refused on
  `/customer` and reported as CrmEndUserGone.
* A record costs: the conversation, its description note, and one append of its tags
  when it has any (the create's own `tags` field takes tag ids, which would cost a tag
  look-up; the append takes names). A returning end user: two requests.
* `POST /v1/conversations/{id}/tags` with a list of tag names: Kustomer appends them and
  creates tags it does not know yet (the conversation's own `tags` attribute holds tag ids
  and replaces the whole list, so it is never written here).
* `POST /v1/conversations/{id}/notes` with `{"body": ...}`: an internal note, never shown
  to the customer. Conversations have no description field, so the description is the
  first note.
* `GET /v1/conversations/{id}` and `PUT /v1/conversations/{id}` `{"status": "open"}`.

Statuses are `open`, `snoozed` and `done`; only `done` is closed, and a done conversation
can always be reopened.

The package: `answers` reads what Kustomer answers (error bodies, rate-limit headers,
fields) and holds the HTTP client with its quirks; `adapter` is the CrmAdapter itself;
`settings` is its part of the service's Settings (its environment variables).
"""

from app.adapters.crm.kustomer.adapter import KustomerAdapter
from app.adapters.crm.kustomer.answers import (
    agent_app_base,
    describe_kustomer_error,
    kustomer_quota,
    kustomer_retry_after,
)

__all__ = ['KustomerAdapter', 'agent_app_base', 'describe_kustomer_error', 'kustomer_quota', 'kustomer_retry_after']
