"""Reads behind a session's trace (app/service/trace.py): its outbox rows and every CRM
call made for them, as recorded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.db.schema import crm_attempts, outbox


@dataclass(frozen=True, slots=True)
class OutboxRowSummary:
    """What a session's trace shows of one of its outbox rows."""

    id: int
    kind: str  # an OutboxKind's value
    idempotency_key: str
    status: str  # an OutboxStatus's value
    attempts: int
    due_at: datetime
    last_error: str | None
    created_at: datetime
    done_at: datetime | None


async def outbox_rows(conn: AsyncConnection, session_id: str) -> list[OutboxRowSummary]:
    result = await conn.execute(
        select(
            outbox.c.id, outbox.c.kind, outbox.c.idempotency_key, outbox.c.status, outbox.c.attempts,
            outbox.c.due_at, outbox.c.last_error, outbox.c.created_at, outbox.c.done_at,
        )
        .where(outbox.c.session_id == session_id)
        .order_by(outbox.c.id)
    )
    return [OutboxRowSummary(*r) for r in result]


@dataclass(frozen=True, slots=True)
class RecordedCrmCall:
    """One CRM call made for an outbox row, as recorded."""

    outbox_id: int
    attempt: int
    crm: str
    operation: str
    method: str | None
    path: str | None
    status_code: int | None
    latency_ms: float | None
    outcome: Literal["ok", "failed"]
    error: str | None
    at: datetime


async def crm_calls_of(conn: AsyncConnection, session_id: str) -> list[RecordedCrmCall]:
    c = crm_attempts.c
    result = await conn.execute(
        select(c.outbox_id, c.attempt, c.crm, c.operation, c.method, c.path, c.status_code, c.latency_ms, c.error,
               c.created_at)
        .where(c.session_id == session_id)
        .order_by(c.id)
    )
    return [RecordedCrmCall(r.outbox_id, r.attempt, r.crm, r.operation, r.method, r.path, r.status_code, r.latency_ms,
                            "ok" if r.error is None else "failed", r.error, r.created_at) for r in result]
