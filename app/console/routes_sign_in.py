"""Sign-in (with its own CSRF protection), sign-out and the language switch."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.console import i18n
from app.console.security import COOKIE_NAME, CSRF_FIELD, LOGIN_COOKIE, LOGIN_SECONDS, csrf_ok
from app.console.web import N_, Console, Refused, redirect, safe_next

STALE_FORM = N_("The form is stale or did not come from this console: reload the page and try again.")


def _sign_in_form(console: Console, request: Request, next_path: str, error: str | None,
                  status: int = 200) -> Response:
    nonce = console.signer.login_nonce(request.cookies.get(LOGIN_COOKIE))
    response = console.render(request, "sign_in.html", status=status, next=next_path, error=error,
                              configured=console.tokens.configured, login_token=console.signer.login_token(nonce))
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_SECONDS, httponly=True, samesite="strict",
                        secure=console.secure_cookies, path="/admin")
    return response


def sign_in_router(console: Console) -> APIRouter:
    router = APIRouter()

    @router.get("/admin")
    async def home() -> Response:
        return redirect("/admin/settings")

    @router.get("/admin/sign-in")
    async def sign_in_page(request: Request, next: str | None = None) -> Response:
        return _sign_in_form(console, request, safe_next(next), None)

    @router.post("/admin/sign-in")
    async def sign_in(request: Request) -> Response:
        form = await request.form()
        if not console.signer.login_ok(request.cookies.get(LOGIN_COOKIE), str(form.get(CSRF_FIELD) or "")):
            raise Refused(403, STALE_FORM)  # login CSRF: a post that did not come from our own form
        principal = console.tokens.authenticate(str(form.get("token") or "").strip())
        target = safe_next(str(form.get("next") or ""))
        if principal is None:
            return _sign_in_form(console, request, target, "wrong", status=401)
        value, _ = console.signer.issue(principal)
        response = redirect(target)
        response.set_cookie(COOKIE_NAME, value, max_age=console.signer.max_age, httponly=True, samesite="strict",
                            secure=console.secure_cookies, path="/admin")
        response.delete_cookie(LOGIN_COOKIE, path="/admin", httponly=True, samesite="strict")
        return response

    @router.post("/admin/sign-out")
    async def sign_out(request: Request) -> Response:
        session = console.require_session(request)  # any role may sign out, with this session's CSRF token
        form = await request.form()
        if not csrf_ok(session, str(form.get(CSRF_FIELD) or "")):
            raise Refused(403, STALE_FORM)
        response = redirect("/admin/sign-in")
        response.delete_cookie(COOKIE_NAME, path="/admin", httponly=True, samesite="strict")
        return response

    @router.get("/admin/language")
    async def language(request: Request, lang: str, next: str | None = None) -> Response:
        response = redirect(safe_next(next))
        if lang in i18n.LANGUAGES:
            response.set_cookie(i18n.LANGUAGE_COOKIE, lang, max_age=365 * 86400, samesite="strict", path="/admin")
        return response

    return router
