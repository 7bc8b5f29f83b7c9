"""The administrators' console at /admin: server-rendered pages (Jinja2) with a little
htmx, served by the service itself. A client of the service layer like the JSON API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from app.console.routes_ops import ops_router
from app.console.routes_settings import settings_router
from app.console.routes_sign_in import sign_in_router
from app.console.security import SessionSigner
from app.console.web import SECURITY_HEADERS, Console, NotSignedIn, Refused, redirect

STATIC = Path(__file__).parent / "static"


def mount_console(app: FastAPI, runtime: Any) -> Console:
    console = Console(runtime.tokens, SessionSigner(runtime.tokens))
    app.mount("/admin/static", StaticFiles(directory=STATIC), name="console-static")
    # HTML pages, not part of the JSON API that /openapi.json describes.
    app.include_router(sign_in_router(console), include_in_schema=False)
    app.include_router(settings_router(console, runtime), include_in_schema=False)
    app.include_router(ops_router(console, runtime), include_in_schema=False)

    @app.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        target = f"/admin/sign-in?next={exc.next_path}"
        if request.headers.get("hx-request"):  # htmx: send the whole page to the sign-in form
            return Response(status_code=401, headers={"HX-Redirect": target, **SECURITY_HEADERS})
        return redirect(target)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return console.render(request, "error.html", status=exc.status, message=exc.message, params=exc.params)

    return console


__all__ = ["mount_console"]
