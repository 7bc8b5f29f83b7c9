"""Records this service made, and the CRM's id for each end user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.db.schema import crm_contacts, crm_records


@dataclass(frozen=True, slots=True)
class KnownRecord:
    record_id: str
    record_url: str | None
    session_id: str


async def newest_record(conn: AsyncConnection, crm: str, end_user_id: str, queue_id: str) -> KnownRecord | None:
    row = (
        await conn.execute(
            select(crm_records.c.record_id, crm_records.c.record_url, crm_records.c.session_id)
            .where(
                crm_records.c.crm == crm,
                crm_records.c.end_user_id == end_user_id,
                crm_records.c.queue_id == queue_id,
            )
            .order_by(crm_records.c.id.desc())
            .limit(1)
        )
    ).first()
    return KnownRecord(*row) if row else None


async def remember_record(
    conn: AsyncConnection, *, crm: str, record_id: str, record_url: str | None, end_user_id: str, queue_id: str,
    session_id: str,
) -> None:
    await conn.execute(
        insert(crm_records)
        .values(
            crm=crm, record_id=record_id, record_url=record_url, end_user_id=end_user_id, queue_id=queue_id,
            session_id=session_id,
        )
        .on_conflict_do_nothing(constraint="uq_crm_records_record")
    )


async def contact_id(conn: AsyncConnection, crm: str, end_user_id: str) -> str | None:
    return (
        await conn.execute(
            select(crm_contacts.c.contact_id).where(
                crm_contacts.c.crm == crm, crm_contacts.c.end_user_id == end_user_id
            )
        )
    ).scalar()


async def remember_contact(conn: AsyncConnection, crm: str, end_user_id: str, contact: str) -> None:
    statement = insert(crm_contacts).values(crm=crm, end_user_id=end_user_id, contact_id=contact)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[crm_contacts.c.crm, crm_contacts.c.end_user_id],
            set_={"contact_id": statement.excluded.contact_id, "updated_at": func.now()},
        )
    )


async def forget_contact(conn: AsyncConnection, crm: str, end_user_id: str) -> None:
    await conn.execute(
        crm_contacts.delete().where(crm_contacts.c.crm == crm, crm_contacts.c.end_user_id == end_user_id)
    )


async def list_records(conn: AsyncConnection, limit: int = 100) -> list[dict[str, Any]]:
    result = await conn.execute(select(crm_records).order_by(crm_records.c.id.desc()).limit(limit))
    return [dict(r) for r in result.mappings()]
