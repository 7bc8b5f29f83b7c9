"""Liveness, readiness and the Prometheus scrape: unauthenticated, for the platform."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import metrics
from app.entrypoints.http.deps import RuntimeDep
from app.entrypoints.http.errors import JSONBody
from app.entrypoints.http.models import CheckView, Health, QuotaView, ReadinessView, StuckPartitionView
from app.service.readiness import CheckResult, Readiness, readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="200 while the process is alive")
async def healthz() -> Health:
    return Health(status="ok")


def check_view(result: CheckResult) -> CheckView:
    return CheckView(
        ready=result.ready,
        detail=result.detail,
        degraded=True if result.degraded else None,
        stuck_partitions=[
            StuckPartitionView(topic=s.topic, partition=s.partition, offset=s.offset, seconds=round(s.seconds, 1),
                               error=s.error)
            for s in result.stuck_partitions
        ] or None,
        crm=result.crm,
        quota=QuotaView.model_validate(dataclasses.asdict(result.quota)) if result.quota is not None else None,
    )


def readiness_view(state: Readiness) -> ReadinessView:
    checks = {name: check_view(result) for name, result in state.results.items()}
    return ReadinessView(status=state.status, not_ready=state.not_ready, checks=checks)  # type: ignore[arg-type]


def readiness_body(view: ReadinessView) -> dict[str, object]:
    """The JSON of /readyz: a check's absent facts are left out (null inside a fact, e.g. a
    quota's unknown vendor limit, is a value and stays)."""
    body = view.model_dump(mode="json")
    body["checks"] = {
        name: {key: value for key, value in check.items() if value is not None}
        for name, check in body["checks"].items()
    }
    return body


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
    body = readiness_body(readiness_view(state))
    return JSONBody(body, status_code=200 if state.ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus text format; database-derived gauges are refreshed in the background, not per scrape",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}, "description": "metrics"}},
)
async def metrics_endpoint() -> Response:
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
