"""Session rows: the folded state of each session and the record it ended up with."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.db import raw
from app.domain.kinds import RecordAction
from app.domain.session import RecordProgress, SessionState


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """The CRM record a session ended up with, noted on its session row."""

    session_id: str
    record_id: str
    record_url: str | None
    action: RecordAction

@dataclass(frozen=True, slots=True)
class VersionedStates:
    """Sessions' states as read, with the version each was read at (a session without a
    row is at version 0): a consumer batch saves each over that version or not at all."""

    states: dict[str, SessionState]
    versions: dict[str, int]

    def version_of(self, session_id: str) -> int:
        return self.versions.get(session_id, 0)


# Row locks: a rebalance can hand a partition to another consumer while the old owner
# finishes its batch; the lock makes the two batches apply one after the other (the
# locked way, which a consumer batch takes when its unlocked write found a conflict).
_LOAD_FOR_UPDATE = raw.positional(
    "SELECT session_id, state, state_version FROM sessions WHERE session_id = ANY(CAST(:ids AS text[])) "
    "ORDER BY session_id FOR UPDATE"
)

# The state document is the SessionState as orjson writes a dataclass: its fields by name,
# datetimes in RFC 3339, the same document as SessionState.to_document() (a unit test holds
# the two together) without building it.
_UPSERT = text(
    """
    INSERT INTO sessions (session_id, state, record)
    SELECT s.session_id, s.state, s.record
    FROM jsonb_to_recordset(CAST(:states AS jsonb)) AS s(session_id text, state jsonb, record text)
    ON CONFLICT (session_id) DO UPDATE
    SET state = EXCLUDED.state, record = EXCLUDED.record, state_version = sessions.state_version + 1,
        updated_at = now()
    """
)
# A consumer batch's save: each state over the version it was read at, else not at all
# (RETURNING tells which were saved; batch_writes fails the batch when one was not). An
# INSERT's conflict is checked against the row as committed, after waiting for any
# transaction that holds it, so a state saved meanwhile by another consumer is seen. A
# state over a version above 0 whose row is gone (the tables emptied under a consumer
# that remembered it) is not saved either: its events would be folded in twice. That
# check is a scalar subquery, one index probe per state: as an EXISTS, PostgreSQL may
# hash it, reading the whole sessions table at every batch (test_batch_write_cost).
_SAVE_OVER_VERSIONS = text(
    """
    INSERT INTO sessions (session_id, state, record, state_version)
    SELECT s.session_id, s.state, s.record, s.version + 1
    FROM jsonb_to_recordset(CAST(:states AS jsonb)) AS s(session_id text, state jsonb, record text, version bigint)
    WHERE s.version = 0 OR (SELECT true FROM sessions x WHERE x.session_id = s.session_id)
    ON CONFLICT (session_id) DO UPDATE
    SET state = EXCLUDED.state, record = EXCLUDED.record, state_version = EXCLUDED.state_version,
        updated_at = now()
    WHERE sessions.state_version = EXCLUDED.state_version - 1
    RETURNING session_id
    """
)


async def load_states_for_update(pg: asyncpg.Connection, session_ids: Iterable[str]) -> VersionedStates:
    ids = sorted(set(session_ids))
    if not ids:
        return VersionedStates({}, {})
    rows = await raw.fetch(pg, _LOAD_FOR_UPDATE, {"ids": ids})
    return VersionedStates({row["session_id"]: SessionState.from_document(row["state"]) for row in rows},
                           {row["session_id"]: row["state_version"] for row in rows})


def save_states_parameters(states: Sequence[SessionState], versions: VersionedStates) -> dict[str, Any]:
    """In session id order, the order the rows are locked in by every writer of them."""
    return {"states": raw.json_rows([
        {"session_id": s.session_id, "state": s, "record": s.record, "version": versions.version_of(s.session_id)}
        for s in sorted(states, key=lambda s: s.session_id)
    ])}


SAVE_STATES = _SAVE_OVER_VERSIONS  # for batch_writes, which runs it together with the batch's other writes


async def save_states(conn: AsyncConnection, states: Sequence[SessionState]) -> None:
    """Save states whatever their versions (a test's or a tool's seed)."""
    if not states:
        return
    await conn.execute(_UPSERT, {"states": raw.json_rows(
        [{"session_id": s.session_id, "state": s, "record": s.record} for s in states])})


# The worker reads and writes one session row per outbox row: statements built once.
_GET = text(
    "SELECT session_id, state, record, crm, record_id, record_url, record_action, created_at, updated_at "
    "FROM sessions WHERE session_id = :session_id"
)


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session row: its folded state and the record it ended up with."""

    session_id: str
    state: SessionState
    record: RecordProgress
    crm: str | None
    record_id: str | None
    record_url: str | None
    record_action: str | None  # a RecordAction's value
    created_at: datetime
    updated_at: datetime


async def get_session(conn: AsyncConnection, session_id: str) -> StoredSession | None:
    row = (await conn.execute(_GET, {"session_id": session_id})).first()
    if row is None:
        return None
    return StoredSession(row.session_id, SessionState.from_document(row.state), row.record, row.crm, row.record_id,
                         row.record_url, row.record_action, row.created_at, row.updated_at)


# Each session's record, with its locks in one statement: the subquery locks the rows in
# session id order (its FOR UPDATE is applied to its sorted rows), the order a consumer
# batch saves them in, so the two never deadlock; the update joins only rows it has
# locked, so whatever plan the join takes, no row is locked out of that order.
# SessionRecord's fields are the columns (raw.json_rows).
SET_RECORDS_LOCKING = text(
    """
    UPDATE sessions s SET crm = :crm, record_id = r.record_id, record_url = r.record_url,
                          record_action = r.action, updated_at = now()
    FROM jsonb_to_recordset(CAST(:records AS jsonb))
         AS r(session_id text, record_id text, record_url text, action text),
         (SELECT session_id FROM sessions WHERE session_id = ANY(CAST(:ids AS text[]))
          ORDER BY session_id FOR UPDATE) AS locked
    WHERE s.session_id = r.session_id AND locked.session_id = r.session_id
    """
)


def set_records_locking_parameters(crm: str, records: Sequence[SessionRecord]) -> dict[str, Any]:
    return {"crm": crm, "records": raw.json_rows(records), "ids": sorted(r.session_id for r in records)}


async def set_records(conn: AsyncConnection, crm: str, records: Sequence[SessionRecord]) -> None:
    """Note each session's record (the worker does it within its bookkeeping's statement,
    outbox_writes)."""
    if records:
        await conn.execute(SET_RECORDS_LOCKING, set_records_locking_parameters(crm, records))
