"""Records this service made, and the CRM's id for each end user."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.db import raw
from app.adapters.db.schema import crm_records
from app.domain.kinds import OutboxStatus
from app.domain.rendering import TranscriptLine
from app.domain.session import SessionState


@dataclass(frozen=True, slots=True)
class NewRecord:
    """A record this service just made, for "the newest record of this end user in this leaf queue"."""

    record_id: str
    record_url: str | None
    end_user_id: str
    queue_id: str
    session_id: str


@dataclass(frozen=True, slots=True)
class KnownRecord:
    record_id: str
    record_url: str | None
    session_id: str


# NewRecord's fields are the columns (raw.json_rows); inserted in the order given.
_REMEMBER_RECORDS = text(
    """
    INSERT INTO crm_records (crm, record_id, record_url, end_user_id, queue_id, session_id)
    SELECT :crm, r.record_id, r.record_url, r.end_user_id, r.queue_id, r.session_id
    FROM ROWS FROM (jsonb_to_recordset(CAST(:records AS jsonb))
                    AS (record_id text, record_url text, end_user_id text, queue_id text, session_id text))
         WITH ORDINALITY AS r(record_id, record_url, end_user_id, queue_id, session_id, n)
    ORDER BY r.n
    ON CONFLICT ON CONSTRAINT uq_crm_records_record DO NOTHING
    """
)
# Everything the worker reads before deciding a record, in one round trip: the session's
# state, the CRM's id for the end user in this CRM account (crm_end_users), and (with
# append on) the newest record of that end user in that leaf queue. The function (migration
# 0012) is also what the claim calls for each record row it claims (outbox_claims).
_RECORD_CONTEXT = raw.positional(
    "SELECT * FROM outbox_record_context(:session_id, :crm, :account, :with_newest)"
)


@dataclass(frozen=True, slots=True)
class RecordContext:
    state: SessionState
    contact_id: str | None
    newest: KnownRecord | None


async def record_context(
    pg: asyncpg.Connection, crm: str, session_id: str, *, with_newest: bool, account: str | None = None
) -> RecordContext | None:
    """On asyncpg's connection (raw.py: the worker reads this once per record row).
    `account` keys the end-user mapping (the CRM's name when not given)."""
    params = {"crm": crm, "account": account or crm, "session_id": session_id, "with_newest": with_newest}
    rows = await raw.fetch(pg, _RECORD_CONTEXT, params)
    return record_context_of(rows[0]) if rows else None


def record_context_of(row: Mapping[str, Any], prefix: str = "") -> RecordContext:
    """A row of outbox_record_context, its columns named with `prefix`."""
    record_id = row[f"{prefix}record_id"]
    newest = (KnownRecord(record_id, row[f"{prefix}record_url"], row[f"{prefix}record_session_id"])
              if record_id else None)
    return RecordContext(SessionState.from_document(row[f"{prefix}state"]), row[f"{prefix}contact_id"], newest)


# Everything the worker reads before an end-of-session note, in one round trip (migration
# 0012): the session's state and record; when it has none yet, its record row's status and
# last error; for a chat with a record, the transcript.
_NOTE_CONTEXT = raw.positional("SELECT * FROM outbox_note_context(:session_id)")


@dataclass(frozen=True, slots=True)
class RecordRowStatus:
    status: OutboxStatus
    last_error: str | None


@dataclass(frozen=True, slots=True)
class NoteContext:
    state: SessionState
    record_id: str | None
    record_url: str | None
    # Read only while the session has no record: its record row, if it has one.
    record_row: RecordRowStatus | None
    # Read only for a chat with a record.
    transcript: list[TranscriptLine]


async def note_context(pg: asyncpg.Connection, session_id: str) -> NoteContext | None:
    """On asyncpg's connection (raw.py: the worker reads this once per note row)."""
    rows = await raw.fetch(pg, _NOTE_CONTEXT, {"session_id": session_id})
    return note_context_of(rows[0]) if rows else None


def note_context_of(row: Mapping[str, Any], prefix: str = "") -> NoteContext:
    """A row of outbox_note_context, its columns named with `prefix`."""
    status = row[f"{prefix}record_row_status"]
    record_row = RecordRowStatus(OutboxStatus(status), row[f"{prefix}record_row_error"]) if status is not None else None
    columns = (row[f"{prefix}occurred_at"] or [], row[f"{prefix}senders"] or [], row[f"{prefix}texts"] or [])
    lines = [TranscriptLine(*line) for line in zip(*columns, strict=True)]
    return NoteContext(SessionState.from_document(row[f"{prefix}state"]), row[f"{prefix}record_id"],
                       row[f"{prefix}record_url"], record_row, lines)


async def remember_records(conn: AsyncConnection, crm: str, records: Sequence[NewRecord]) -> None:
    """Remember records this service made, in the order given: the newest record of an end
    user is the one with the highest id."""
    if not records:
        return
    await conn.execute(_REMEMBER_RECORDS, remember_records_parameters(crm, records))


REMEMBER_RECORDS = _REMEMBER_RECORDS  # for outbox_writes


def remember_records_parameters(crm: str, records: Sequence[NewRecord]) -> dict[str, Any]:
    return {"crm": crm, "records": raw.json_rows(records)}


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record this service made, as the records listing shows it."""

    id: int
    crm: str
    record_id: str
    record_url: str | None
    end_user_id: str
    queue_id: str
    session_id: str
    created_at: datetime


async def list_records(conn: AsyncConnection, limit: int = 100) -> list[StoredRecord]:
    """Newest first."""
    c = crm_records.c
    result = await conn.execute(
        select(c.id, c.crm, c.record_id, c.record_url, c.end_user_id, c.queue_id, c.session_id, c.created_at)
        .order_by(c.id.desc())
        .limit(limit)
    )
    return [StoredRecord(*r) for r in result]
