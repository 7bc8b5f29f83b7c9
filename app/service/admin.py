"""Use cases behind the admin API and the console: settings versions, the records made,
and requeueing parked outbox rows (a session's trace is app/service/trace.py)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.adapters.db import outbox_repo, records_repo, settings_repo
from app.adapters.db.records_repo import StoredRecord
from app.domain.record_settings import RecordSettings, settings_changes
from app.service.auth import Principal


@dataclass(frozen=True, slots=True)
class SaveResult:
    version: int | None  # the version in force after the save (None: the defaults, never saved)
    document: RecordSettings
    saved: bool  # False when the document equals the one in force: no new version


async def save_settings(
    conn: AsyncConnection, document: RecordSettings, actor: Principal, note: str | None = None
) -> SaveResult:
    """Save `document` as a new version, unless it changes nothing. The history names the
    token that saved it; `note` is the caller's own addition (X-Actor)."""
    await settings_repo.lock_for_save(conn)
    before = await settings_repo.in_force(conn)
    if document == before.settings:
        return SaveResult(before.version, before.settings, saved=False)
    changes = settings_changes(before.settings if before.version is not None else None, document)
    saved = await settings_repo.insert_version(conn, document, changes, actor.name, note)
    return SaveResult(saved.version, document, saved=True)


async def settings_history(
    conn: AsyncConnection, *, limit: int, before_version: int | None = None
) -> list[settings_repo.SettingsVersion]:
    return await settings_repo.history(conn, limit=limit, before_version=before_version)


async def current_settings(engine: AsyncEngine) -> settings_repo.SettingsInForce:
    """The settings in force (version None: nothing saved yet, the defaults apply)."""
    async with engine.connect() as conn:
        return await settings_repo.in_force(conn)


async def save_settings_version(
    engine: AsyncEngine, document: RecordSettings, actor: Principal, note: str | None
) -> SaveResult:
    async with engine.begin() as conn:
        return await save_settings(conn, document, actor, note)


async def settings_history_page(
    engine: AsyncEngine, *, limit: int, before_version: int | None
) -> list[settings_repo.SettingsVersion]:
    async with engine.connect() as conn:
        return await settings_history(conn, limit=limit, before_version=before_version)


async def recent_records(engine: AsyncEngine, limit: int) -> list[StoredRecord]:
    async with engine.connect() as conn:
        return await records_repo.list_records(conn, limit)


async def requeue_parked(engine: AsyncEngine, session_id: str | None) -> int:
    """Run parked rows again (all, or one session's), and wake the workers."""
    async with engine.begin() as conn:
        count = await outbox_repo.requeue_parked(conn, session_id)
        await outbox_repo.notify_workers(conn)
    return count
