"""The HTTP API: health, readiness, metrics, and the bearer-protected admin endpoints."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.adapters.crm.base import CrmAdapter
from app.adapters.crm.sandbox import close_sandbox_record
from app.adapters.db import outbox_repo, records_repo, sandbox_repo, settings_repo
from app.console import mount_console
from app.domain.record_settings import RecordSettings
from app.service.admin import save_settings, session_trace, settings_history
from app.service.auth import ActorNoteTooLong, Principal, TokenBook, actor_note, bearer_token
from app.service.consumer_health import ConsumerHealth
from app.service.startup import StartupProgress
from app.settings import Settings


@dataclass
class CrmHealth:
    ok: bool = False
    detail: str = "credentials not checked yet"
    checked_at: datetime | None = None


@dataclass
class Runtime:
    """What the HTTP layer needs to see of the running service."""

    settings: Settings
    engine: AsyncEngine
    crm: CrmAdapter
    consumer: ConsumerHealth = field(default_factory=lambda: ConsumerHealth(stuck_after_seconds=60))
    startup: StartupProgress = field(default_factory=StartupProgress)
    crm_health: CrmHealth = field(default_factory=CrmHealth)
    tokens: TokenBook | None = None  # built from the settings when not given

    def __post_init__(self) -> None:
        if self.tokens is None:
            self.tokens = TokenBook.from_settings(self.settings)


class JSONBody(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str, option=orjson.OPT_NON_STR_KEYS)


def _field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    errors = []
    for item in exc.errors(include_url=False, include_input=False):
        location = [str(p) for p in item["loc"]]
        reason = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            reason = "unknown setting"
        errors.append({"field": ".".join(location) or "(body)", "reason": reason, "loc": location, "msg": reason})
    return errors


class SandboxStatusChange(BaseModel):
    status: str
    closed_at: datetime | None = None


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="crm-records", version="0.1.0", default_response_class=JSONBody)
    settings = runtime.settings

    tokens = runtime.tokens
    mount_console(app, runtime)

    def require_reader(authorization: str | None = Header(default=None)) -> Principal:
        if not tokens.configured:
            raise HTTPException(401, "the admin API is disabled: neither ADMIN_API_TOKEN nor ADMIN_API_TOKENS is set",
                                headers={"WWW-Authenticate": "Bearer"})
        principal = tokens.authenticate(bearer_token(authorization))
        if principal is None:
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
        return principal

    def require_admin(principal: Principal = Depends(require_reader)) -> Principal:
        if not principal.can_change:
            raise HTTPException(403, f"the token {principal.name!r} has the viewer role: it may read, not change")
        return principal

    admin = [Depends(require_admin)]
    reader = [Depends(require_reader)]

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONBody:
        checks: dict[str, dict[str, Any]] = {}
        try:
            async with asyncio.timeout(2):
                async with runtime.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            checks["database"] = {"ready": True}
        except Exception as exc:
            checks["database"] = {"ready": False, "detail": f"database does not answer: {type(exc).__name__}"}
        checks["startup"] = runtime.startup.readiness()
        checks["consumer"] = runtime.consumer.readiness(settings.kafka_group_id)
        health = runtime.crm_health
        checks["crm"] = {"ready": health.ok, "crm": runtime.crm.name}
        if not health.ok:
            checks["crm"]["detail"] = health.detail
        budget = getattr(runtime.crm, "rate_budget", None)
        if budget is not None:
            # Information, not a readiness condition: a spent quota slows records down.
            checks["crm"]["quota"] = dataclasses.asdict(budget.state())
        ready = all(c["ready"] for c in checks.values())
        not_ready = [name for name, c in checks.items() if not c["ready"]]
        # Degraded: running, but a partition is stuck (see the consumer check's detail).
        degraded = not ready and all(checks[name].get("degraded") for name in not_ready)
        status = "ready" if ready else "degraded" if degraded else "not ready"
        body = {"status": status, "not_ready": not_ready, "checks": checks}
        return JSONBody(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        try:
            async with runtime.engine.connect() as conn:
                counts = await outbox_repo.backlog_counts(conn)
                metrics.outbox_oldest_due_age.set(await outbox_repo.oldest_due_age_seconds(conn))
            for status, count in counts.items():
                metrics.outbox_rows.labels(status).set(count)
        except Exception:
            pass  # the scrape still shows every other metric
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/settings", dependencies=reader)
    async def get_settings() -> JSONBody:
        async with runtime.engine.connect() as conn:
            version, current = await settings_repo.current(conn)
        return JSONBody(current.model_dump(), headers={"X-Settings-Version": str(version or 0)})

    @app.put("/api/settings")
    async def put_settings(
        request: Request, principal: Principal = Depends(require_admin), x_actor: str | None = Header(default=None)
    ) -> JSONBody:
        try:
            note = actor_note(x_actor)
        except ActorNoteTooLong as exc:
            return JSONBody({"detail": [{"field": "X-Actor", "reason": str(exc)}]}, status_code=422)
        raw = await request.body()
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return JSONBody({"detail": [{"field": "(body)", "reason": f"invalid JSON: {exc}"}]}, status_code=422)
        if not isinstance(document, dict):
            return JSONBody({"detail": [{"field": "(body)", "reason": "the settings must be a JSON object"}]},
                            status_code=422)
        try:
            parsed = RecordSettings.model_validate_json(raw)
        except ValidationError as exc:
            return JSONBody({"detail": _field_errors(exc)}, status_code=422)
        async with runtime.engine.begin() as conn:
            result = await save_settings(conn, parsed, principal, note)
        return JSONBody(parsed.model_dump(), headers={"X-Settings-Version": str(result.version or 0)})

    @app.get("/api/settings/history", dependencies=reader)
    async def get_settings_history(
        limit: int = Query(default=100, ge=1, le=1000), before_version: int | None = Query(default=None, ge=1)
    ) -> JSONBody:
        async with runtime.engine.connect() as conn:
            rows = await settings_history(conn, limit=limit, before_version=before_version)
        headers = {}
        if len(rows) == limit and rows[-1].version > 1:
            headers["Link"] = f'</api/settings/history?limit={limit}&before_version={rows[-1].version}>; rel="next"'
        return JSONBody([
            {
                "version": r.version,
                "saved_at": r.saved_at,
                "actor": r.actor,
                "note": r.actor_note,
                "changes": r.changes,
                "settings": r.document,
            }
            for r in rows
        ], headers=headers)

    @app.get("/api/sessions/{session_id}", dependencies=reader)
    async def get_session(session_id: str) -> dict:
        async with runtime.engine.connect() as conn:
            trace = await session_trace(conn, session_id)
        if trace is None:
            raise HTTPException(404, f"no events seen for session {session_id!r}")
        return trace

    @app.get("/api/records", dependencies=reader)
    async def list_records(limit: int = 100) -> list[dict]:
        async with runtime.engine.connect() as conn:
            return await records_repo.list_records(conn, min(limit, 1000))

    @app.post("/api/outbox/requeue-parked", dependencies=admin)
    async def requeue_parked(session_id: str | None = None) -> dict:
        async with runtime.engine.begin() as conn:
            count = await outbox_repo.requeue_parked(conn, session_id)
            await outbox_repo.notify_workers(conn)
        return {"requeued": count}

    # --- the sandbox CRM's own "UI" -------------------------------------------------------------

    @app.get("/api/sandbox/records", dependencies=reader)
    async def sandbox_records(limit: int = 100, session_id: str | None = None) -> list[dict]:
        async with runtime.engine.connect() as conn:
            return await sandbox_repo.list_records(conn, min(limit, 1000), session_id)

    @app.get("/api/sandbox/records/{record_id}", dependencies=reader)
    async def sandbox_record(record_id: int) -> dict:
        async with runtime.engine.connect() as conn:
            row = await sandbox_repo.get_record(conn, record_id)
            if row is None:
                raise HTTPException(404, f"no sandbox record {record_id}")
            row["notes"] = await sandbox_repo.notes_for(conn, record_id)
        return row

    @app.post("/api/sandbox/records/{record_id}/status", dependencies=admin)
    async def sandbox_set_status(record_id: int, change: SandboxStatusChange) -> dict:
        if change.status not in sandbox_repo.STATUSES:
            raise HTTPException(422, f"status must be one of {', '.join(sandbox_repo.STATUSES)}")
        closed_at = None
        if change.status in sandbox_repo.CLOSED_STATUSES:
            closed_at = change.closed_at or datetime.now(timezone.utc)
        if not await close_sandbox_record(runtime.engine, record_id, change.status, closed_at):
            raise HTTPException(404, f"no sandbox record {record_id}")
        return {"record_id": record_id, "status": change.status, "closed_at": closed_at}

    return app
