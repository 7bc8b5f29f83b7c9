"""Sign-in, sign-out, language, and the "CRM record creation details" panel: previews, the
what-if, review and save, history and restore."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.adapters.db import explorer_repo, settings_repo
from app.console import i18n
from app.console.panel import diff_rows, parse, previews
from app.console.security import COOKIE_NAME, csrf_ok
from app.console.web import N_, SECURITY_HEADERS, Console, Refused, redirect, safe_next
from app.domain.record_settings import RecordSettings, settings_changes
from app.domain.whatif import OUTCOME_KINDS
from app.service.admin import save_settings, settings_history
from app.service.crm_setup import crm_setup
from app.service.whatif import DEFAULT_DAYS, MAX_DAYS, WhatIf

HISTORY_PAGE = 20


def settings_router(console: Console, runtime: Any) -> APIRouter:
    router = APIRouter()
    engine = runtime.engine
    crm_name = runtime.crm.name
    what_if = WhatIf(engine, crm_name)
    # The same account of the CRM side that GET /api/crm serves (settings only, no CRM call).
    setup = crm_setup(runtime.settings)

    @router.get("/admin")
    async def home() -> Response:
        return redirect("/admin/settings")

    @router.get("/admin/sign-in")
    async def sign_in_page(request: Request, next: str | None = None) -> Response:
        return console.render(request, "sign_in.html", next=safe_next(next), error=None,
                              configured=console.tokens.configured)

    @router.post("/admin/sign-in")
    async def sign_in(request: Request) -> Response:
        form = await request.form()
        principal = console.tokens.authenticate(str(form.get("token") or "").strip())
        target = safe_next(str(form.get("next") or ""))
        if principal is None:
            return console.render(request, "sign_in.html", status=401, next=target, error="wrong",
                                  configured=console.tokens.configured)
        value, _ = console.signer.issue(principal)
        response = redirect(target)
        response.set_cookie(COOKIE_NAME, value, max_age=console.signer.max_age, httponly=True, samesite="strict",
                            secure=console.secure_cookies, path="/admin")
        return response

    @router.post("/admin/sign-out")
    async def sign_out(request: Request) -> Response:
        session = console.require_session(request)  # any role may sign out, with this session's CSRF token
        form = await request.form()
        if not csrf_ok(session, str(form.get("csrf_token") or "")):
            raise Refused(
                403, N_("The form is stale or did not come from this console: reload the page and try again.")
            )
        response = redirect("/admin/sign-in")
        response.delete_cookie(COOKIE_NAME, path="/admin", httponly=True, samesite="strict")
        return response

    @router.get("/admin/language")
    async def language(request: Request, lang: str, next: str | None = None) -> Response:
        response = redirect(safe_next(next))
        if lang in i18n.LANGUAGES:
            response.set_cookie(i18n.LANGUAGE_COOKIE, lang, max_age=365 * 86400, samesite="strict", path="/admin")
        return response

    async def _current() -> tuple[int | None, RecordSettings]:
        async with engine.connect() as conn:
            return await settings_repo.current(conn)

    async def _previews(document: dict[str, Any]):
        async with engine.connect() as conn:
            sample = await explorer_repo.newest_session(conn)
        return previews(document, crm_name, sample)

    async def _panel(request: Request, document: dict[str, Any], errors: dict[str, str], status: int = 200,
                     notice: str | None = None) -> Response:
        session = console.require_session(request)
        version, _ = await _current()
        return console.render(
            request, "panel.html", status=status, session=session, doc=document, errors=errors,
            version=version, preview=await _previews(document), days=DEFAULT_DAYS, max_days=MAX_DAYS,
            notice=notice, crm_setup=setup,
        )

    @router.get("/admin/settings")
    async def panel(request: Request) -> Response:
        console.require_session(request)
        _, current = await _current()
        return await _panel(request, current.model_dump(), {})

    @router.post("/admin/settings/preview")
    async def preview(request: Request) -> Response:
        session = console.require_session(request)
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        _, document, errors = parse(form)
        return console.render(request, "_previews.html", session=session, preview=await _previews(document),
                              errors=errors)

    @router.get("/admin/settings/what-if/history")
    async def warm_what_if(request: Request) -> Response:
        """The panel asks for this as it opens: the history is read while the administrator looks
        at the panel, so the first what-if waits for the replay alone."""
        console.require_session(request)
        await what_if.warm()
        return Response(status_code=204, headers=SECURITY_HEADERS)

    @router.post("/admin/settings/what-if")
    async def preview_what_if(request: Request) -> Response:
        session = console.require_session(request)
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        settings, _, errors = parse(form)
        try:
            days = int(form.get("what_if_days") or DEFAULT_DAYS)
        except ValueError:
            days = 0
        if settings is None or not 1 <= days <= MAX_DAYS:
            return console.render(request, "_what_if.html", session=session, result=None, errors=errors,
                                  bad_days=not 1 <= days <= MAX_DAYS, max_days=MAX_DAYS)
        result = await what_if.run(settings, days)
        return console.render(request, "_what_if.html", session=session, result=result, errors={},
                              kinds=OUTCOME_KINDS, bad_days=False, max_days=MAX_DAYS)

    async def _review(
        request: Request, proposed: RecordSettings, session: Any, restoring: int | None = None
    ) -> Response:
        version, current = await _current()
        changes = settings_changes(current, proposed)  # the defaults when nothing was saved yet
        return console.render(
            request, "review.html", session=session, rows=diff_rows(changes), version=version,
            document_json=orjson.dumps(proposed.model_dump()).decode(), restoring=restoring,
        )

    @router.post("/admin/settings/review")
    async def review(request: Request) -> Response:
        session, form = await console.require_change(request)
        settings, document, errors = parse(form)
        if settings is None:
            return await _panel(request, document, errors, status=422)
        return await _review(request, settings, session)

    @router.post("/admin/settings/save")
    async def save(request: Request) -> Response:
        session, form = await console.require_change(request)
        try:
            proposed = RecordSettings.model_validate_json(form.get("document") or "")
        except ValidationError:
            raise Refused(
                422, N_("The reviewed settings were altered on the way: start again from the panel.")
            ) from None
        version, _ = await _current()
        if str(version or 0) != form.get("base_version"):
            # someone saved in between: show the diff against what is in force now
            return await _review(request, proposed, session)
        async with engine.begin() as conn:
            result = await save_settings(conn, proposed, session.principal, "admin console")
        return redirect(f"/admin/settings/history?saved={result.version or 0}")

    @router.get("/admin/settings/history")
    async def history(request: Request, before: int | None = None, saved: int | None = None) -> Response:
        session = console.require_session(request)
        async with engine.connect() as conn:
            versions = await settings_history(conn, limit=HISTORY_PAGE + 1, before_version=before)
            version, _ = await settings_repo.current(conn)
        return console.render(
            request, "history.html", session=session, versions=versions[:HISTORY_PAGE], current_version=version,
            next_before=versions[HISTORY_PAGE - 1].version if len(versions) > HISTORY_PAGE else None,
            saved=saved, first_page=before is None,
        )

    @router.post("/admin/settings/history/{number}/restore")
    async def restore(request: Request, number: int) -> Response:
        session, _ = await console.require_change(request)
        async with engine.connect() as conn:
            found = await settings_history(conn, limit=1, before_version=number + 1)
        if not found or found[0].version != number:
            raise Refused(404, N_("There is no settings version %(version)s."), version=number)
        return await _review(request, RecordSettings.model_validate(found[0].document), session, restoring=number)

    return router
