"""The sandbox CRM's own "UI" behind the API: list and read its records, and change a
record's status as an agent would."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.crm.sandbox import close_sandbox_record
from app.adapters.db import sandbox_repo
from app.adapters.db.sandbox_repo import SandboxNoteRow, SandboxRecordListed, SandboxRecordRow


@dataclass(frozen=True, slots=True)
class StatusChange:
    record_id: int
    status: str
    closed_at: datetime | None


def closing_time(status: str, requested: datetime | None, now: datetime) -> datetime | None:
    """A closed status keeps when it was closed (the caller's time, else now); an open one has none."""
    if status in sandbox_repo.CLOSED_STATUSES:
        return requested or now
    return None


async def change_status(
    engine: AsyncEngine, record_id: int, status: str, requested_closed_at: datetime | None, now: datetime
) -> StatusChange | None:
    """None when there is no such record."""
    closed_at = closing_time(status, requested_closed_at, now)
    if not await close_sandbox_record(engine, record_id, status, closed_at):
        return None
    return StatusChange(record_id, status, closed_at)


@dataclass(frozen=True, slots=True)
class SandboxRecordWithNotes(SandboxRecordRow):
    notes: tuple[SandboxNoteRow, ...]


async def list_records(engine: AsyncEngine, limit: int, session_id: str | None) -> list[SandboxRecordListed]:
    async with engine.connect() as conn:
        return await sandbox_repo.list_records(conn, limit, session_id)


async def record_with_notes(engine: AsyncEngine, record_id: int) -> SandboxRecordWithNotes | None:
    """None when there is no such record."""
    async with engine.connect() as conn:
        row = await sandbox_repo.get_record(conn, record_id)
        if row is None:
            return None
        notes = tuple(await sandbox_repo.notes_for(conn, record_id))
    return SandboxRecordWithNotes(**sandbox_repo.record_fields(row), notes=notes)
