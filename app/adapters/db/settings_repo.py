"""Versions of the administrator's record-creation settings; the newest is in force."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.db.schema import settings_versions
from app.domain.record_settings import DEFAULT_RECORD_SETTINGS, RecordSettings

_CURRENT = text("SELECT version, document FROM settings_versions ORDER BY version DESC LIMIT 1")


async def current(conn: AsyncConnection) -> tuple[int | None, RecordSettings]:
    """The settings in force (version None: nothing saved yet, the defaults apply)."""
    row = (await conn.execute(_CURRENT)).first()
    if row is None:
        return None, DEFAULT_RECORD_SETTINGS
    return row.version, RecordSettings.model_validate(row.document)


async def lock_for_save(conn: AsyncConnection) -> None:
    """Serialise saves, so that each version's "what changed" is against its predecessor."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(727274002)"))


async def insert_version(
    conn: AsyncConnection, document: RecordSettings, changes: dict[str, Any], actor: str | None
) -> dict[str, Any]:
    row = (
        await conn.execute(
            insert(settings_versions)
            .values(document=document.model_dump(), changes=changes, actor=actor)
            .returning(settings_versions)
        )
    ).mappings().one()
    return dict(row)


async def history(conn: AsyncConnection) -> list[dict[str, Any]]:
    result = await conn.execute(select(settings_versions).order_by(settings_versions.c.version.desc()))
    return [dict(r) for r in result.mappings()]
