"""Versions of the administrator's record-creation settings; the newest is in force."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.adapters.db.schema import settings_versions
from app.domain.record_settings import DEFAULT_RECORD_SETTINGS, RecordSettings

_CURRENT = text("SELECT version, document FROM settings_versions ORDER BY version DESC LIMIT 1")


@dataclass(frozen=True, slots=True)
class SettingsVersion:
    version: int
    saved_at: datetime
    actor: str | None  # the name of the token that saved it
    actor_note: str | None  # what the caller added in X-Actor
    changes: dict[str, Any]
    document: dict[str, Any]


async def current(conn: AsyncConnection) -> tuple[int | None, RecordSettings]:
    """The settings in force (version None: nothing saved yet, the defaults apply)."""
    row = (await conn.execute(_CURRENT)).first()
    if row is None:
        return None, DEFAULT_RECORD_SETTINGS
    return row.version, RecordSettings.model_validate(row.document)


async def lock_for_save(conn: AsyncConnection) -> None:
    """Serialise saves, so that each version's "what changed" is against its predecessor."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(727274002)"))


def _version(row: Any) -> SettingsVersion:
    return SettingsVersion(
        version=row["version"], saved_at=row["saved_at"], actor=row["actor"], actor_note=row["actor_note"],
        changes=row["changes"], document=row["document"],
    )


async def insert_version(
    conn: AsyncConnection, document: RecordSettings, changes: dict[str, Any], actor: str | None,
    actor_note: str | None = None,
) -> SettingsVersion:
    row = (
        await conn.execute(
            insert(settings_versions)
            .values(document=document.model_dump(), changes=changes, actor=actor, actor_note=actor_note)
            .returning(settings_versions)
        )
    ).mappings().one()
    return _version(row)


async def history(conn: AsyncConnection, *, limit: int, before_version: int | None = None) -> list[SettingsVersion]:
    """Newest first; `before_version` continues a page from where the last one ended."""
    query = select(settings_versions).order_by(settings_versions.c.version.desc()).limit(limit)
    if before_version is not None:
        query = query.where(settings_versions.c.version < before_version)
    return [_version(r) for r in (await conn.execute(query)).mappings()]
