"""The record-creation settings document: read, replace, and its history."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import ValidationError

from app.domain.record_settings import RecordSettings
from app.entrypoints.http.deps import Admin, Reader, RuntimeDep
from app.entrypoints.http.errors import CHANGE, READ, field_error, refused, validation_errors
from app.entrypoints.http.models import SettingsChange, SettingsVersionView
from app.service import admin
from app.service.auth import ACTOR_NOTE_MAX_CHARS, ActorNoteTooLong, actor_note

router = APIRouter(prefix="/api/settings", tags=["settings"])

VERSION_HEADER = {
    "X-Settings-Version": {"description": "the version in force (0: nothing saved, the defaults)",
                           "schema": {"type": "integer"}}
}
# The body is parsed here rather than by FastAPI, so that the token is checked before the
# body and a bad document gets this API's {field, reason} errors ("unknown setting").
_SETTINGS_BODY = {
    "requestBody": {
        "required": True,
        "description": "the whole settings document; a field left out returns to its default",
        "content": {"application/json": {"schema": RecordSettings.model_json_schema()}},
    }
}
MAX_VERSION = 2**31 - 1


@router.get(
    "", response_model=RecordSettings, responses={**READ, 200: {"headers": VERSION_HEADER}},
    summary="the settings in force",
)
async def get_settings(runtime: RuntimeDep, _: Reader, response: Response) -> RecordSettings:
    current = await admin.current_settings(runtime.engine)
    response.headers["X-Settings-Version"] = str(current.version or 0)
    return current.settings


@router.put(
    "", response_model=RecordSettings, responses={**CHANGE, 200: {"headers": VERSION_HEADER}},
    openapi_extra=_SETTINGS_BODY,
    summary="replace the settings; a document equal to the one in force saves no new version",
)
async def put_settings(
    runtime: RuntimeDep,
    principal: Admin,
    request: Request,
    response: Response,
    x_actor: Annotated[
        str | None,
        Header(alias="X-Actor", description=f"a note for the history beside the token's name, "
                                            f"at most {ACTOR_NOTE_MAX_CHARS} characters"),
    ] = None,
) -> RecordSettings | Response:
    try:
        note = actor_note(x_actor)
    except ActorNoteTooLong as exc:
        return refused([field_error("X-Actor", str(exc), ["header", "X-Actor"])])
    raw = await request.body()
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return refused([field_error("(body)", f"invalid JSON: {exc}", ["body"])])
    if not isinstance(document, dict):
        return refused([field_error("(body)", "the settings must be a JSON object", ["body"])])
    try:
        parsed = RecordSettings.model_validate_json(raw)
    except ValidationError as exc:
        return refused(validation_errors(exc, unknown="unknown setting"))
    result = await admin.save_settings_version(runtime.engine, parsed, principal, note)
    response.headers["X-Settings-Version"] = str(result.version or 0)
    return result.document


@router.get(
    "/history",
    response_model=list[SettingsVersionView],
    responses={**READ, 200: {"headers": {"Link": {"description": 'the next page, rel="next", when this one is full',
                                                  "schema": {"type": "string"}}}}},
    summary="every version, newest first, a page at a time",
)
async def settings_history(
    runtime: RuntimeDep,
    _: Reader,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_version: Annotated[int | None, Query(ge=1, le=MAX_VERSION, description="versions older than this")] = None,
) -> list[SettingsVersionView]:
    rows = await admin.settings_history_page(runtime.engine, limit=limit, before_version=before_version)
    if len(rows) == limit and rows[-1].version > 1:
        next_page = f"/api/settings/history?limit={limit}&before_version={rows[-1].version}"
        response.headers["Link"] = f'<{next_page}>; rel="next"'
    return [
        SettingsVersionView(
            version=r.version, saved_at=r.saved_at, actor=r.actor, note=r.actor_note,
            changes={name: SettingsChange.model_validate(c.to_document()) for name, c in r.changes.items()},
            settings=r.document,
        )
        for r in rows
    ]
