"""The decision trace: every conclusion the policy or the worker reached for a session."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.db import raw
from app.adapters.db.schema import decisions
from app.domain.kinds import DecisionKind


@dataclass(frozen=True, slots=True)
class DecisionRow:
    session_id: str
    kind: DecisionKind
    reason: str
    event_at: datetime | None
    settings_version: int | None
    record_id: str | None = None


# DecisionRow's fields are the columns (raw.json_rows: one parameter, not one array a column).
_INSERT_MANY = text(
    """
    INSERT INTO decisions (session_id, kind, reason, event_at, settings_version, record_id)
    SELECT * FROM jsonb_to_recordset(CAST(:decisions AS jsonb))
         AS d(session_id text, kind text, reason text, event_at timestamptz, settings_version int, record_id text)
    """
)


def insert_decisions_parameters(rows: Sequence[DecisionRow]) -> dict[str, str]:
    return {"decisions": raw.json_rows(rows)}


INSERT_DECISIONS = _INSERT_MANY  # for batch_writes


async def insert_decisions(conn: AsyncConnection, rows: Sequence[DecisionRow]) -> None:
    if not rows:
        return
    await conn.execute(_INSERT_MANY, insert_decisions_parameters(rows))


async def insert_decision(conn: AsyncConnection, row: DecisionRow) -> None:
    await conn.execute(
        insert(decisions).values(
            session_id=row.session_id,
            kind=row.kind,
            reason=row.reason,
            event_at=row.event_at,
            settings_version=row.settings_version,
            record_id=row.record_id,
        )
    )


@dataclass(frozen=True, slots=True)
class StoredDecision:
    """A decision as a session's trace shows it: the row, and when it was made."""

    kind: str  # a DecisionKind's value, as stored (the trace shows old rows' text as it is)
    reason: str
    event_at: datetime | None
    settings_version: int | None
    record_id: str | None
    decided_at: datetime  # when the row was written


async def list_for_session(conn: AsyncConnection, session_id: str) -> list[StoredDecision]:
    result = await conn.execute(
        select(
            decisions.c.kind, decisions.c.reason, decisions.c.event_at, decisions.c.settings_version,
            decisions.c.record_id, decisions.c.created_at,
        )
        .where(decisions.c.session_id == session_id)
        .order_by(decisions.c.id)
    )
    return [StoredDecision(r.kind, r.reason, r.event_at, r.settings_version, r.record_id, r.created_at)
            for r in result]
