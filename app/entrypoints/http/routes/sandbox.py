"""The sandbox CRM's own "UI": its records, and changing a record's status as an agent would."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, field_validator

from app.entrypoints.http.deps import Admin, Reader, RuntimeDep
from app.entrypoints.http.errors import found, responses
from app.entrypoints.http.inputs import Limit, SandboxRecordId, SessionIdQuery
from app.entrypoints.http.models import SandboxRecordListed, SandboxRecordWithNotes, SandboxStatusView
from app.service import sandbox

router = APIRouter(prefix="/api/sandbox/records", tags=["sandbox"])


class SandboxStatusChange(BaseModel):
    status: Literal["open", "pending", "solved", "closed"]
    closed_at: datetime | None = Field(
        default=None, description="when it was closed (solved and closed only; default now); UTC without an offset"
    )

    @field_validator("closed_at")
    @classmethod
    def _representable_in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("out of range: in UTC it falls outside years 1 to 9999") from None


@router.get("", response_model=list[SandboxRecordListed], responses=responses(401, 422))
async def sandbox_records(
    runtime: RuntimeDep, _: Reader, limit: Limit = 100, session_id: SessionIdQuery = None
) -> list[sandbox.SandboxRecordListed]:
    return await sandbox.list_records(runtime.engine, limit, session_id)


@router.get("/{record_id}", response_model=SandboxRecordWithNotes, responses=responses(401, 404, 422))
async def sandbox_record(runtime: RuntimeDep, _: Reader, record_id: SandboxRecordId) -> sandbox.SandboxRecordWithNotes:
    return found(await sandbox.record_with_notes(runtime.engine, record_id), f"no sandbox record {record_id}")


@router.post(
    "/{record_id}/status", response_model=SandboxStatusView, responses=responses(401, 403, 404, 413, 422),
    summary="set a record's status as an agent would (solved and closed keep a closing time)",
)
async def sandbox_set_status(
    runtime: RuntimeDep, _: Admin, record_id: SandboxRecordId, change: SandboxStatusChange
) -> SandboxStatusView:
    changed = found(
        await sandbox.change_status(runtime.engine, record_id, change.status, change.closed_at, datetime.now(UTC)),
        f"no sandbox record {record_id}",
    )
    return SandboxStatusView(record_id=changed.record_id, status=changed.status, closed_at=changed.closed_at)
