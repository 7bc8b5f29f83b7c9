"""Liveness, readiness and the Prometheus scrape: unauthenticated, for the platform."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import metrics
from app.entrypoints.http.deps import RuntimeDep
from app.entrypoints.http.errors import JSONBody
from app.entrypoints.http.models import CheckView, Health, ReadinessView
from app.service.readiness import Readiness, readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="200 while the process is alive")
async def healthz() -> Health:
    return Health(status="ok")


def readiness_view(state: Readiness) -> ReadinessView:
    checks = {}
    for name, result in state.results.items():
        checks[name] = CheckView(
            ready=result.ready, detail=result.detail, degraded=True if result.degraded else None, **result.info
        )
    return ReadinessView(status=state.status, not_ready=state.not_ready, checks=checks)  # type: ignore[arg-type]


@router.get(
    "/readyz",
    response_model=ReadinessView,
    response_model_exclude_none=True,
    summary="200 when every component is ready, else 503 naming which and why",
    responses={503: {"model": ReadinessView, "description": "not ready (or degraded: running, a partition "
                                                            "stuck): `not_ready` names the parts"}},
)
async def readyz(runtime: RuntimeDep) -> Response:
    state = await readiness(runtime.readiness_checks())
    body = readiness_view(state).model_dump(mode="json", exclude_none=True)
    return JSONBody(body, status_code=200 if state.ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus text format; database-derived gauges are refreshed in the background, not per scrape",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}, "description": "metrics"}},
)
async def metrics_endpoint() -> Response:
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
