"""The session explorer and the operations view."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.console.web import N_, Console, Refused, redirect
from app.service import operations, replicas
from app.service.trace import session_trace


def ops_router(console: Console, runtime: Any) -> APIRouter:
    router = APIRouter()
    engine = runtime.engine

    @router.get("/admin/sessions")
    async def sessions(request: Request, q: str | None = None, page: int = 1) -> Response:
        session = console.require_session(request)
        query = (q or "").strip() or None
        async with engine.connect() as conn:
            found = await operations.search_sessions(conn, query, max(page, 1))
        return console.render(request, "sessions.html", session=session, rows=found.rows, page=found.page,
                              q=query or "")

    @router.get("/admin/sessions/{session_id}")
    async def session_page(request: Request, session_id: str) -> Response:
        session = console.require_session(request)
        async with engine.connect() as conn:
            trace = await session_trace(conn, session_id)
            timeline = await operations.timeline(conn, session_id, trace.state) if trace else []
        if trace is None:
            return console.render(request, "not_found.html", status=404, session=session, session_id=session_id)
        return console.render(request, "session.html", session=session, trace=trace, timeline=timeline,
                              timeline_limit=operations.TIMELINE_LIMIT)

    @router.get("/admin/operations")
    async def operations_page(request: Request, page: int = 1, retried: int | None = None) -> Response:
        session = console.require_session(request)
        # This replica's heartbeat first, so that the one showing the page is current.
        await replicas.beat_once(engine, replicas.replica_id(), runtime.crm.name, runtime.crm_health)
        async with engine.connect() as conn:
            overview = await operations.operations_overview(conn, max(page, 1))
        return console.render(request, "operations.html", session=session, overview=overview,
                              this_replica=replicas.replica_id(), retried=retried)

    @router.post("/admin/operations/parked/{outbox_id}/retry")
    async def retry(request: Request, outbox_id: int) -> Response:
        await console.require_change(request)
        async with engine.begin() as conn:
            requeued = await operations.retry_parked_row(conn, outbox_id)
        if not requeued:
            raise Refused(409, N_("Outbox row %(id)s is not parked (any more)."), id=outbox_id)
        return redirect(f"/admin/operations?retried={outbox_id}")

    return router
