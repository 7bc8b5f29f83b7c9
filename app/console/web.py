"""What every console page shares: templates per language, the signed-in session, CSRF
checks, and the security headers."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from app.console import i18n
from app.console.security import COOKIE_NAME, CSRF_FIELD, CSRF_HEADER, ConsoleSession, SessionSigner, csrf_ok
from app.service.auth import TokenBook

TEMPLATES = Path(__file__).parent / "templates"
SECURITY_HEADERS = {
    # Everything the console loads is its own: no CDN, no inline script.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@cache
def environment(language: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(i18n.translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.filters["when"] = lambda moment: i18n.when(moment, language)
    env.filters["number"] = lambda value: i18n.number(value, language)
    return env


def N_(message: str) -> str:
    """Marks a message for the catalogs; the page translates it when it shows it."""
    return message


class Refused(Exception):
    """A request the console turns down, with a message from the catalogs."""

    def __init__(self, status: int, message: str, **params: Any) -> None:
        super().__init__(message % params if params else message)
        self.status = status
        self.message = message
        self.params = params


class NotSignedIn(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


@dataclass
class Console:
    """The console's wiring: how it signs people in and what it renders with."""

    tokens: TokenBook
    signer: SessionSigner
    secure_cookies: bool = False

    def language(self, request: Request) -> str:
        return i18n.choose_language(request.cookies.get(i18n.LANGUAGE_COOKIE), request.headers.get("accept-language"))

    def session(self, request: Request) -> ConsoleSession | None:
        return self.signer.read(request.cookies.get(COOKIE_NAME))

    def require_session(self, request: Request) -> ConsoleSession:
        session = self.session(request)
        if session is None:
            raise NotSignedIn(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return session

    async def require_change(self, request: Request) -> tuple[ConsoleSession, dict[str, str]]:
        """A change: signed in, with the admin role, and carrying this session's CSRF token.
        Returns the session and the submitted form."""
        session = self.require_session(request)
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        if not csrf_ok(session, form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)):
            raise Refused(
                403, N_("The form is stale or did not come from this console: reload the page and try again.")
            )
        if not session.principal.can_change:
            raise Refused(403, N_("The token %(name)s has the viewer role: it may look at everything, not change it."),
                          name=session.principal.name)
        return session, form

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        language = self.language(request)
        session = context.pop("session", None) or self.session(request)
        page = environment(language).get_template(template).render(
            request=request,
            session=session,
            csrf_field=CSRF_FIELD,
            csrf_token=session.csrf_token if session else "",
            language=language,
            html_lang=i18n.html_lang(language),
            languages=i18n.LANGUAGES,
            here=quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="/?=&"),
            **context,
        )
        return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def safe_next(path: str | None) -> str:
    """Only a path inside the console: never an open redirect."""
    if path and path.startswith("/admin") and not path.startswith("//") and "\\" not in path:
        return path
    return "/admin/settings"
