"""Every refused request answers with the field and the reason: 422 for bad input, in
one shape (`{"detail": [{"field", "reason", "loc", "msg"}]}`), and 401/403/404 with
`{"detail": "..."}`. An unexpected error answers 500 with one log line, not a traceback."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.entrypoints.http.models import ErrorMessage, FieldError, ValidationErrors

log = logging.getLogger("app.http")

_LOCATIONS = ("body", "query", "path", "header", "cookie")


class JSONBody(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str, option=orjson.OPT_NON_STR_KEYS)


T = TypeVar("T")


def found(value: T | None, detail: str) -> T:
    """`value`, or a 404 saying what was not found."""
    if value is None:
        raise HTTPException(404, detail)
    return value


def field_error(field: str, reason: str, loc: list[str] | None = None) -> FieldError:
    return FieldError(field=field, reason=reason, loc=loc or [field], msg=reason)


def refused(errors: list[FieldError]) -> JSONBody:
    return JSONBody(ValidationErrors(detail=errors).model_dump(mode="json"), status_code=422)


def field_errors(errors: Sequence[Any], *, unknown: str = "unknown field") -> list[FieldError]:
    """pydantic's errors (ErrorDetails) as FieldErrors: the field without its location prefix."""
    found = []
    for item in errors:
        location = [str(p) for p in item["loc"]]
        named = location[1:] if location and location[0] in _LOCATIONS else location
        reason = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            reason = unknown
        elif item["type"] == "json_invalid":
            named = []
            reason = f"invalid JSON: {(item.get('ctx') or {}).get('error', reason)}"
        found.append(field_error(".".join(named) or "(body)", reason, location))
    return found


def validation_errors(exc: ValidationError, *, unknown: str = "unknown field") -> list[FieldError]:
    return field_errors(exc.errors(include_url=False, include_input=False), unknown=unknown)


async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONBody:
    return refused(field_errors(list(exc.errors())))


# What FastAPI answers (400) when a body cannot be read as text, e.g. JSON that is not UTF-8.
_UNREADABLE_BODY = "There was an error parsing the body"


async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
    if exc.status_code == 400 and exc.detail == _UNREADABLE_BODY:
        return refused([field_error("(body)", "invalid JSON: the body is not UTF-8 text", ["body"])])
    return await http_exception_handler(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _request_invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of the error answers a route can give."""
    described: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        if code == 422:
            described[code] = {"model": ValidationErrors, "description": "invalid input: the field and the reason"}
        else:
            text = {401: "missing or wrong bearer token", 403: "the token's role may not do this",
                    404: "not found", 413: "request body too large"}[code]
            described[code] = {"model": ErrorMessage, "description": text}
    return described


READ = responses(401, 422)
CHANGE = responses(401, 403, 413, 422)
