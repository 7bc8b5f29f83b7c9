"""Why a session did or did not get a record: its state, decisions, outbox rows and CRM calls."""

from __future__ import annotations

from fastapi import APIRouter

from app.entrypoints.http.deps import Reader, RuntimeDep
from app.entrypoints.http.errors import found, responses
from app.entrypoints.http.inputs import SessionIdPath
from app.entrypoints.http.models import SessionTraceView
from app.service import trace

router = APIRouter(prefix="/api/sessions", tags=["sessions"])


@router.get("/{session_id}", response_model=SessionTraceView, responses=responses(401, 404, 422))
async def get_session(runtime: RuntimeDep, _: Reader, session_id: SessionIdPath) -> trace.SessionTrace:
    return found(await trace.trace_of_session(runtime.engine, session_id), f"no events seen for session {session_id!r}")
