"""Records this service made, and the CRM's id for each end user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.db.schema import crm_records


@dataclass(frozen=True, slots=True)
class KnownRecord:
    record_id: str
    record_url: str | None
    session_id: str


_NEWEST = text(
    "SELECT record_id, record_url, session_id FROM crm_records "
    "WHERE crm = :crm AND end_user_id = :end_user_id AND queue_id = :queue_id ORDER BY id DESC LIMIT 1"
)
_REMEMBER_RECORD = text(
    "INSERT INTO crm_records (crm, record_id, record_url, end_user_id, queue_id, session_id) "
    "VALUES (:crm, :record_id, :record_url, :end_user_id, :queue_id, :session_id) "
    "ON CONFLICT ON CONSTRAINT uq_crm_records_record DO NOTHING"
)
_CONTACT = text("SELECT contact_id FROM crm_contacts WHERE crm = :crm AND end_user_id = :end_user_id")
_REMEMBER_CONTACT = text(
    "INSERT INTO crm_contacts (crm, end_user_id, contact_id) VALUES (:crm, :end_user_id, :contact_id) "
    "ON CONFLICT (crm, end_user_id) DO UPDATE SET contact_id = EXCLUDED.contact_id, updated_at = now()"
)


async def newest_record(conn: AsyncConnection, crm: str, end_user_id: str, queue_id: str) -> KnownRecord | None:
    row = (
        await conn.execute(_NEWEST, {"crm": crm, "end_user_id": end_user_id, "queue_id": queue_id})
    ).first()
    return KnownRecord(*row) if row else None


async def remember_record(
    conn: AsyncConnection, *, crm: str, record_id: str, record_url: str | None, end_user_id: str, queue_id: str,
    session_id: str,
) -> None:
    await conn.execute(
        _REMEMBER_RECORD,
        {"crm": crm, "record_id": record_id, "record_url": record_url, "end_user_id": end_user_id,
         "queue_id": queue_id, "session_id": session_id},
    )


async def contact_id(conn: AsyncConnection, crm: str, end_user_id: str) -> str | None:
    return (await conn.execute(_CONTACT, {"crm": crm, "end_user_id": end_user_id})).scalar()


async def remember_contact(conn: AsyncConnection, crm: str, end_user_id: str, contact: str) -> None:
    await conn.execute(_REMEMBER_CONTACT, {"crm": crm, "end_user_id": end_user_id, "contact_id": contact})


async def list_records(conn: AsyncConnection, limit: int = 100) -> list[dict[str, Any]]:
    result = await conn.execute(select(crm_records).order_by(crm_records.c.id.desc()).limit(limit))
    return [dict(r) for r in result.mappings()]
