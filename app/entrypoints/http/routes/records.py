"""The records this service made, and requeueing parked outbox rows."""

from __future__ import annotations

from fastapi import APIRouter

from app.entrypoints.http.deps import Admin, Reader, RuntimeDep
from app.entrypoints.http.errors import CHANGE, READ
from app.entrypoints.http.inputs import Limit, SessionIdQuery
from app.entrypoints.http.models import RecordView, Requeued
from app.service import admin

router = APIRouter(prefix="/api", tags=["records"])


@router.get("/records", response_model=list[RecordView], responses=READ, summary="records made, newest first")
async def list_records(runtime: RuntimeDep, _: Reader, limit: Limit = 100) -> list[admin.StoredRecord]:
    return await admin.recent_records(runtime.engine, limit)


@router.post(
    "/outbox/requeue-parked", response_model=Requeued, responses=CHANGE,
    summary="run parked rows again (all, or one session's) after fixing their cause",
)
async def requeue_parked(runtime: RuntimeDep, _: Admin, session_id: SessionIdQuery = None) -> Requeued:
    return Requeued(requeued=await admin.requeue_parked(runtime.engine, session_id))
