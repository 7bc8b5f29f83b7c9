"""The FastAPI application: one router per resource, over the service layer."""

from __future__ import annotations

from fastapi import FastAPI

from app.console import mount_console
from app.entrypoints.http.errors import JSONBody, install_error_handlers
from app.entrypoints.http.guard import RequestGuard
from app.entrypoints.http.routes import crm, health, records, sandbox, sessions, settings
from app.entrypoints.http.runtime import Runtime

ROUTERS = (health.router, settings.router, sessions.router, records.router, sandbox.router, crm.router)


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="crm-records",
        version="0.1.0",
        description="Decides when contact-center sessions get CRM records; the administrators' API.",
        default_response_class=JSONBody,
    )
    app.state.runtime = runtime
    for router in ROUTERS:
        app.include_router(router)
    mount_console(app, runtime)  # /admin: a client of the same service layer
    install_error_handlers(app)
    app.add_middleware(
        RequestGuard,
        max_body_bytes=runtime.settings.http_max_body_bytes,
        read_timeout=runtime.settings.http_read_timeout_seconds,
    )
    return app
