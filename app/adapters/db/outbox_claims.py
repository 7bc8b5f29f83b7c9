"""The outbox worker's claim with each claimed row's context, in one round trip: what the
worker reads before a row's CRM call (migration 0012), read as of after the claim."""

from __future__ import annotations

import asyncpg

from app.adapters.db import raw, records_repo
from app.adapters.db.outbox_repo import ClaimedRow
from app.adapters.db.records_repo import NoteContext, RecordContext
from app.domain.kinds import OutboxKind

_ROW_COLUMNS = ("id", "idempotency_key", "kind", "session_id", "serial_key", "payload", "attempts", "claim_id",
                "outcome_unknown", "trace_context", "created_at")
# Each claimed row with its context, in the claim's round trip (migration 0012). The
# context functions run for the row's kind only (OFFSET 0 keeps each subquery apart, so
# its condition on the outer row is checked before the function is called), each with
# a snapshot taken after the claim.
_STATEMENT = raw.positional(
    """
    SELECT c.id, c.idempotency_key, c.kind, c.session_id, c.serial_key, c.payload, c.attempts,
           c.claim_id::text AS claim_id, c.outcome_unknown, c.trace_context, c.created_at,
           r.state AS r_state, r.contact_id AS r_contact_id, r.record_id AS r_record_id,
           r.record_url AS r_record_url, r.record_session_id AS r_record_session_id,
           n.state AS n_state, n.record_id AS n_record_id, n.record_url AS n_record_url,
           n.record_row_status AS n_record_row_status, n.record_row_error AS n_record_row_error,
           n.occurred_at AS n_occurred_at, n.senders AS n_senders, n.texts AS n_texts
    FROM outbox_claim(:limit, :lease) c
    LEFT JOIN LATERAL (
        SELECT * FROM outbox_record_context(c.session_id, :crm, :account, true) WHERE c.kind = 'record' OFFSET 0
    ) r ON true
    LEFT JOIN LATERAL (
        SELECT * FROM outbox_note_context(c.session_id) WHERE c.kind = 'ended_note' OFFSET 0
    ) n ON true
    """
)


STATEMENT_SQL = _STATEMENT.sql  # for a test of its plan


async def claim_with_context(
    pg: asyncpg.Connection, limit: int, lease_seconds: float, *, crm: str, account: str
) -> list[ClaimedRow]:
    """outbox_repo.claim, with each record and summary-note row's context (None: session unknown).
    The newest record is always read: only the worker knows if its settings want it."""
    parameters = {"limit": limit, "lease": lease_seconds, "crm": crm, "account": account}
    rows = await raw.fetch(pg, _STATEMENT, parameters)
    claimed: list[ClaimedRow] = []
    for row in rows:
        context: RecordContext | NoteContext | None = None
        if row["r_state"] is not None:
            context = records_repo.record_context_of(row, "r_")
        elif row["n_state"] is not None:
            context = records_repo.note_context_of(row, "n_")
        values = {column: row[column] for column in _ROW_COLUMNS}
        claimed.append(ClaimedRow(**{**values, "kind": OutboxKind(values["kind"])}, context=context))
    claimed.sort(key=lambda r: r.id)
    return claimed
