"""Every CRM call an outbox row's run made (crm_attempts): what the session trace and the
cost metrics read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.crm.base import CrmCall

_INSERT_ATTEMPTS = text(
    """
    INSERT INTO crm_attempts (outbox_id, session_id, crm, attempt, operation, method, path, status_code,
                              latency_ms, error)
    SELECT a.outbox_id, a.session_id, :crm, a.attempt, a.operation, a.method, a.path, a.status, a.latency, a.error
    FROM unnest(CAST(:outbox_ids AS bigint[]), CAST(:session_ids AS text[]), CAST(:attempts AS int[]),
                CAST(:operations AS text[]), CAST(:methods AS text[]), CAST(:paths AS text[]),
                CAST(:statuses AS int[]), CAST(:latencies AS float8[]), CAST(:errors AS text[]))
         WITH ORDINALITY AS a(outbox_id, session_id, attempt, operation, method, path, status, latency, error, n)
    ORDER BY a.n
    """
)


@dataclass(frozen=True, slots=True)
class Attempt:
    """The CRM calls one run of one outbox row made."""

    outbox_id: int
    session_id: str
    attempt: int
    calls: Sequence[CrmCall]


INSERT_ATTEMPTS = _INSERT_ATTEMPTS  # for outbox_writes


async def record_attempts(conn: AsyncConnection, crm: str, attempts: Sequence[Attempt]) -> None:
    if any(a.calls for a in attempts):
        await conn.execute(_INSERT_ATTEMPTS, record_attempts_parameters(crm, attempts))


def record_attempts_parameters(crm: str, attempts: Sequence[Attempt]) -> dict[str, Any]:
    calls = [(a, call) for a in attempts for call in a.calls]
    return {
        "crm": crm,
        "outbox_ids": [a.outbox_id for a, _ in calls],
        "session_ids": [a.session_id for a, _ in calls],
        "attempts": [a.attempt for a, _ in calls],
        "operations": [c.operation for _, c in calls],
        "methods": [c.method for _, c in calls],
        "paths": [c.path for _, c in calls],
        "statuses": [c.status for _, c in calls],
        "latencies": [c.latency_ms for _, c in calls],
        "errors": [c.error for _, c in calls],
    }
