"""The "CRM record creation details" panel: previews, the what-if, review and save,
history and restore."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.adapters.db import explorer_repo, settings_repo
from app.adapters.db.settings_repo import SettingsInForce
from app.console.panel import diff_rows, parse, previews
from app.console.web import N_, SECURITY_HEADERS, Console, Refused, redirect
from app.domain.record_settings import RecordSettings, settings_changes
from app.domain.whatif import OUTCOME_KINDS
from app.service.admin import save_settings, settings_history
from app.service.crm_setup import crm_setup
from app.service.whatif import DEFAULT_DAYS, MAX_DAYS, WhatIf

HISTORY_PAGE = 20


async def _form(request: Request) -> dict[str, str]:
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


class SettingsPages:
    """The panel's pages and fragments; each public method is one route."""

    def __init__(self, console: Console, runtime: Any) -> None:
        self.console = console
        self.engine = runtime.engine
        self.crm_name = runtime.crm.name
        self.what_if: WhatIf = runtime.what_if or WhatIf(self.engine, self.crm_name)
        # The same account of the CRM side that GET /api/crm serves (settings only, no CRM call).
        self.setup = crm_setup(runtime.settings)

    async def _current(self) -> SettingsInForce:
        async with self.engine.connect() as conn:
            return await settings_repo.in_force(conn)

    async def _previews(self, document: dict[str, Any]):
        async with self.engine.connect() as conn:
            sample = await explorer_repo.newest_session(conn)
        return previews(document, self.crm_name, sample)

    async def _panel(self, request: Request, document: dict[str, Any], errors: dict[str, str],
                     status: int = 200) -> Response:
        session = self.console.require_session(request)
        version = (await self._current()).version
        return self.console.render(
            request, "panel.html", status=status, session=session, doc=document, errors=errors,
            version=version, preview=await self._previews(document), days=DEFAULT_DAYS, max_days=MAX_DAYS,
            notice=None, crm_setup=self.setup,
        )

    async def _review(self, request: Request, proposed: RecordSettings, session: Any,
                      restoring: int | None = None) -> Response:
        current = await self._current()
        changes = settings_changes(current.settings, proposed)  # the defaults when nothing was saved yet
        return self.console.render(
            request, "review.html", session=session, rows=diff_rows(changes), version=current.version,
            document_json=orjson.dumps(proposed.model_dump()).decode(), restoring=restoring,
        )

    async def panel(self, request: Request) -> Response:
        self.console.require_session(request)
        current = await self._current()
        return await self._panel(request, current.settings.model_dump(), {})

    async def preview(self, request: Request) -> Response:
        session = self.console.require_session(request)
        _, document, errors = parse(await _form(request))
        return self.console.render(request, "_previews.html", session=session,
                                   preview=await self._previews(document), errors=errors)

    async def warm_what_if(self, request: Request) -> Response:
        """The panel asks for this as it opens: the history is read while the administrator looks
        at the panel, so the first what-if waits for the replay alone."""
        self.console.require_session(request)
        await self.what_if.warm()
        return Response(status_code=204, headers=SECURITY_HEADERS)

    async def preview_what_if(self, request: Request) -> Response:
        session = self.console.require_session(request)
        form = await _form(request)
        settings, _, errors = parse(form)
        try:
            days = int(form.get("what_if_days") or DEFAULT_DAYS)
        except ValueError:
            days = 0
        if settings is None or not 1 <= days <= MAX_DAYS:
            return self.console.render(request, "_what_if.html", session=session, result=None, errors=errors,
                                       bad_days=not 1 <= days <= MAX_DAYS, max_days=MAX_DAYS)
        result = await self.what_if.run(settings, days)
        return self.console.render(request, "_what_if.html", session=session, result=result, errors={},
                                   kinds=OUTCOME_KINDS, bad_days=False, max_days=MAX_DAYS)

    async def review(self, request: Request) -> Response:
        session, form = await self.console.require_change(request)
        settings, document, errors = parse(form)
        if settings is None:
            return await self._panel(request, document, errors, status=422)
        return await self._review(request, settings, session)

    async def save(self, request: Request) -> Response:
        session, form = await self.console.require_change(request)
        try:
            proposed = RecordSettings.model_validate_json(form.get("document") or "")
        except ValidationError:
            raise Refused(
                422, N_("The reviewed settings were altered on the way: start again from the panel.")
            ) from None
        version = (await self._current()).version
        if str(version or 0) != form.get("base_version"):
            # someone saved in between: show the diff against what is in force now
            return await self._review(request, proposed, session)
        async with self.engine.begin() as conn:
            result = await save_settings(conn, proposed, session.principal, "admin console")
        return redirect(f"/admin/settings/history?saved={result.version or 0}")

    async def history(self, request: Request, before: int | None = None, saved: int | None = None) -> Response:
        session = self.console.require_session(request)
        async with self.engine.connect() as conn:
            versions = await settings_history(conn, limit=HISTORY_PAGE + 1, before_version=before)
            version = (await settings_repo.in_force(conn)).version
        return self.console.render(
            request, "history.html", session=session, versions=versions[:HISTORY_PAGE], current_version=version,
            next_before=versions[HISTORY_PAGE - 1].version if len(versions) > HISTORY_PAGE else None,
            saved=saved, first_page=before is None,
        )

    async def restore(self, request: Request, number: int) -> Response:
        session, _ = await self.console.require_change(request)
        async with self.engine.connect() as conn:
            found = await settings_history(conn, limit=1, before_version=number + 1)
        if not found or found[0].version != number:
            raise Refused(404, N_("There is no settings version %(version)s."), version=number)
        return await self._review(request, RecordSettings.model_validate(found[0].document), session,
                                  restoring=number)


def settings_router(console: Console, runtime: Any) -> APIRouter:
    pages = SettingsPages(console, runtime)
    router = APIRouter()
    router.add_api_route("/admin/settings", pages.panel, methods=["GET"])
    router.add_api_route("/admin/settings/preview", pages.preview, methods=["POST"])
    router.add_api_route("/admin/settings/what-if/history", pages.warm_what_if, methods=["GET"])
    router.add_api_route("/admin/settings/what-if", pages.preview_what_if, methods=["POST"])
    router.add_api_route("/admin/settings/review", pages.review, methods=["POST"])
    router.add_api_route("/admin/settings/save", pages.save, methods=["POST"])
    router.add_api_route("/admin/settings/history", pages.history, methods=["GET"])
    router.add_api_route("/admin/settings/history/{number}/restore", pages.restore, methods=["POST"])
    return router
