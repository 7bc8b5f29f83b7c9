"""The sandbox CRM's storage: contacts, records and notes kept in the service's database."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import Row, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.db import raw
from app.adapters.db.schema import sandbox_contacts, sandbox_notes, sandbox_records

OPEN_STATUSES = ("open", "pending")
CLOSED_STATUSES = ("solved", "closed")  # "closed" is final: it cannot be reopened
STATUSES = OPEN_STATUSES + CLOSED_STATUSES


@dataclass(frozen=True, slots=True)
class SandboxRecordRow:
    id: int
    external_id: str  # the session that made it
    title: str
    description: str
    contact_id: int
    status: str  # one of STATUSES
    tags: tuple[str, ...]
    medium: str | None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class SandboxRecordListed(SandboxRecordRow):
    """A record with its contact, as the listing shows it."""

    contact_name: str | None
    contact_phone: str | None
    contact_email: str | None


@dataclass(frozen=True, slots=True)
class SandboxNoteRow:
    id: int
    record_id: int
    body: str
    private: bool
    created_at: datetime
    idempotency_key: str | None  # set for end-of-session notes


@dataclass(frozen=True, slots=True)
class RecordWithContact:
    """A record made (or found) with its end user's contact, in one statement."""

    record_id: int
    contact_id: int


def record_fields(record: SandboxRecordRow) -> dict[str, Any]:
    """A record's fields by name, to build a SandboxRecordRow with more fields from it."""
    return {f.name: getattr(record, f.name) for f in fields(SandboxRecordRow)}


_RECORD_COLUMNS = (
    sandbox_records.c.id, sandbox_records.c.external_id, sandbox_records.c.title, sandbox_records.c.description,
    sandbox_records.c.contact_id, sandbox_records.c.status, sandbox_records.c.tags, sandbox_records.c.medium,
    sandbox_records.c.created_at, sandbox_records.c.updated_at, sandbox_records.c.closed_at,
)


def _record(row: Row) -> SandboxRecordRow:
    """A row of _RECORD_COLUMNS, named."""
    return SandboxRecordRow(row.id, row.external_id, row.title, row.description, row.contact_id, row.status,
                            tuple(row.tags), row.medium, row.created_at, row.updated_at, row.closed_at)


async def find_contact(conn: AsyncConnection, *, phone: str | None, email: str | None) -> int | None:
    for column, value in ((sandbox_contacts.c.phone, phone), (sandbox_contacts.c.email, email)):
        if value:
            found = (
                await conn.execute(select(sandbox_contacts.c.id).where(column == value).order_by(sandbox_contacts.c.id))
            ).scalar()
            if found is not None:
                return found
    return None


# Found by phone, else by email (the oldest contact with it), else made (or renamed) by
# the end user's id: one statement, one round trip.
# The oldest contact with the phone (email): `ORDER BY id + 0`, not `ORDER BY id`, so no
# plan walks the primary key in id order filtering on the phone, which reads every
# contact when the end user is new. Without statistics (a young table) the planner
# expects a match among the first few hundred and chose that walk, 21 ms a record at
# 10,000 contacts; the few contacts of one phone come from its index and are sorted.
_CONTACT_CTES = """
    by_phone AS (
        SELECT id FROM sandbox_contacts WHERE CAST(:phone AS text) <> '' AND phone = :phone ORDER BY id + 0 LIMIT 1
    ), by_email AS (
        SELECT id FROM sandbox_contacts
        WHERE CAST(:email AS text) <> '' AND email = :email AND NOT EXISTS (SELECT 1 FROM by_phone)
        ORDER BY id + 0 LIMIT 1
    ), created AS (
        INSERT INTO sandbox_contacts (external_id, name, phone, email)
        SELECT :external_id, :name, :phone, :email
        WHERE NOT EXISTS (SELECT 1 FROM by_phone) AND NOT EXISTS (SELECT 1 FROM by_email)
        ON CONFLICT (external_id) DO UPDATE SET name = coalesce(EXCLUDED.name, sandbox_contacts.name)
        RETURNING id
    ), contact AS (
        SELECT id FROM by_phone UNION ALL SELECT id FROM by_email UNION ALL SELECT id FROM created
    )
"""
_FIND_OR_CREATE_CONTACT = text(f"WITH {_CONTACT_CTES} SELECT id FROM contact")


async def find_or_create_contact(
    conn: AsyncConnection, *, external_id: str, name: str | None, phone: str | None, email: str | None
) -> int:
    """`find_contact`, else `upsert_contact`, in one statement."""
    params = {"external_id": external_id, "name": name, "phone": phone, "email": email}
    return (await conn.execute(_FIND_OR_CREATE_CONTACT, params)).scalar_one()


async def upsert_contact(
    conn: AsyncConnection, *, external_id: str, name: str | None, phone: str | None, email: str | None
) -> int:
    new_contact = insert(sandbox_contacts).values(external_id=external_id, name=name, phone=phone, email=email)
    upsert = new_contact.on_conflict_do_update(
        index_elements=[sandbox_contacts.c.external_id],
        set_={"name": func.coalesce(new_contact.excluded.name, sandbox_contacts.c.name)},
    ).returning(sandbox_contacts.c.id)
    return (await conn.execute(upsert)).scalar_one()


async def record_id_for_session(conn: AsyncConnection, session_id: str) -> int | None:
    return (
        await conn.execute(select(sandbox_records.c.id).where(sandbox_records.c.external_id == session_id))
    ).scalar()


_INSERT_RECORD = text(
    """
    WITH created AS (
        INSERT INTO sandbox_records (external_id, title, description, contact_id, tags, medium)
        VALUES (:session_id, :title, :description, :contact_id, CAST(:tags AS text[]), :medium)
        ON CONFLICT (external_id) DO NOTHING
        RETURNING id
    )
    SELECT id FROM created UNION ALL SELECT id FROM sandbox_records WHERE external_id = :session_id
    """
)
# The end user's contact found or made, and the record, in one statement: a repeated
# create returns the first record and its contact.
_INSERT_RECORD_FOR_END_USER = text(
    f"""
    WITH {_CONTACT_CTES}, made AS (
        INSERT INTO sandbox_records (external_id, title, description, contact_id, tags, medium)
        SELECT :session_id, :title, :description, contact.id, CAST(:tags AS text[]), :medium FROM contact
        ON CONFLICT (external_id) DO NOTHING
        RETURNING id, contact_id
    )
    SELECT id, contact_id FROM made
    UNION ALL SELECT id, contact_id FROM sandbox_records WHERE external_id = :session_id
    """
)


_INSERT_RECORD_FOR_END_USER_PG = raw.positional(_INSERT_RECORD_FOR_END_USER.text)
_RECORD_AND_CONTACT_PG = raw.positional(
    "SELECT id, contact_id FROM sandbox_records WHERE external_id = :session_id"
)


async def insert_record_for_end_user(
    pg: asyncpg.Connection, *, session_id: str, title: str, description: str, tags: list[str], medium: str,
    external_id: str, name: str | None, phone: str | None, email: str | None,
) -> RecordWithContact:
    """`find_or_create_contact` and `insert_record` in one statement, on asyncpg's
    connection (the sandbox's hottest call)."""
    params = {"session_id": session_id, "title": title, "description": description, "tags": tags,
              "medium": medium, "external_id": external_id, "name": name, "phone": phone, "email": email}
    rows = await raw.fetch(pg, _INSERT_RECORD_FOR_END_USER_PG, params)
    if not rows:  # committed by another transaction while this statement ran (see insert_record)
        rows = await raw.fetch(pg, _RECORD_AND_CONTACT_PG, params)
    return RecordWithContact(record_id=rows[0]["id"], contact_id=rows[0]["contact_id"])


async def insert_record(
    conn: AsyncConnection, *, session_id: str, title: str, description: str, contact_id: int, tags: list[str],
    medium: str,
) -> int:
    """Insert once per session: a repeated create returns the first record's id."""
    params = {"session_id": session_id, "title": title, "description": description, "contact_id": contact_id,
              "tags": tags, "medium": medium}
    created = (await conn.execute(_INSERT_RECORD, params)).scalar()
    if created is not None:
        return created
    # The record was committed by another transaction while this statement ran: its
    # snapshot did not see it; a new statement does.
    existing = await record_id_for_session(conn, session_id)
    assert existing is not None
    return existing


async def get_record(conn: AsyncConnection, record_id: int) -> SandboxRecordRow | None:
    row = (await conn.execute(select(*_RECORD_COLUMNS).where(sandbox_records.c.id == record_id))).first()
    return _record(row) if row else None


async def set_status(conn: AsyncConnection, record_id: int, status: str, closed_at: datetime | None) -> bool:
    result = await conn.execute(
        update(sandbox_records)
        .where(sandbox_records.c.id == record_id)
        .values(status=status, closed_at=closed_at, updated_at=func.now())
    )
    return bool(result.rowcount)


async def add_tags(conn: AsyncConnection, record_id: int, tags: list[str]) -> None:
    if not tags:
        return
    merged = func.array(
        select(func.unnest(func.array_cat(sandbox_records.c.tags, tags))).distinct().scalar_subquery()
    )
    await conn.execute(
        update(sandbox_records).where(sandbox_records.c.id == record_id).values(tags=merged, updated_at=func.now())
    )


# Prebuilt: the end-of-session note is written once per session, and building the
# statement per call cost more CPU than running it.
_ADD_NOTE = text(
    "INSERT INTO sandbox_notes (record_id, body, idempotency_key) VALUES (:record_id, :body, :key) "
    "ON CONFLICT (idempotency_key) DO NOTHING"
)


_ADD_NOTE_PG = raw.positional(_ADD_NOTE.text)


async def add_note_once(pg: asyncpg.Connection, record_id: int, body: str, idempotency_key: str) -> None:
    """`add_note` with a key, on asyncpg's connection: the end-of-session note."""
    await raw.execute(pg, _ADD_NOTE_PG, {"record_id": record_id, "body": body, "key": idempotency_key})


async def add_note(conn: AsyncConnection, record_id: int, body: str, idempotency_key: str | None = None) -> bool:
    """Add a note; with a key, only once per key (without one, always: NULL keys never
    conflict). Returns whether a note was added."""
    result = await conn.execute(_ADD_NOTE, {"record_id": record_id, "body": body, "key": idempotency_key})
    return bool(result.rowcount)


async def list_records(
    conn: AsyncConnection, limit: int = 100, session_id: str | None = None
) -> list[SandboxRecordListed]:
    """Newest first; with `session_id`, the record that session made or was attached to."""
    query = (
        select(
            *_RECORD_COLUMNS,
            sandbox_contacts.c.name.label("contact_name"),
            sandbox_contacts.c.phone.label("contact_phone"),
            sandbox_contacts.c.email.label("contact_email"),
        )
        .join(sandbox_contacts, sandbox_contacts.c.id == sandbox_records.c.contact_id)
        .order_by(sandbox_records.c.id.desc())
        .limit(limit)
    )
    if session_id is not None:
        query = query.where(
            or_(
                sandbox_records.c.external_id == session_id,
                sandbox_records.c.id.in_(
                    select(sandbox_notes.c.record_id).where(sandbox_notes.c.body.contains(session_id))
                ),
            )
        )
    return [
        SandboxRecordListed(**record_fields(_record(r)), contact_name=r.contact_name,
                            contact_phone=r.contact_phone, contact_email=r.contact_email)
        for r in await conn.execute(query)
    ]


async def notes_for(conn: AsyncConnection, record_id: int) -> list[SandboxNoteRow]:
    result = await conn.execute(
        select(
            sandbox_notes.c.id, sandbox_notes.c.record_id, sandbox_notes.c.body, sandbox_notes.c.private,
            sandbox_notes.c.created_at, sandbox_notes.c.idempotency_key,
        )
        .where(sandbox_notes.c.record_id == record_id)
        .order_by(sandbox_notes.c.id)
    )
    return [SandboxNoteRow(r.id, r.record_id, r.body, r.private, r.created_at, r.idempotency_key) for r in result]
