"""The API's dependencies, as `Annotated` types a route names in its signature:
`RuntimeDep` (the running service), `Reader` (any signed-in token), `Admin` (a token with
the admin role: 403 for a viewer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.entrypoints.http.runtime import Runtime
from app.service.auth import Principal

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
# Declares the bearer scheme in the OpenAPI document; the check itself is ours (below).
_bearer = HTTPBearer(auto_error=False, description="a token of ADMIN_API_TOKEN, ADMIN_API_TOKENS or the tokens file")


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def signed_in(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    tokens = runtime.token_book
    if not tokens.configured:
        raise HTTPException(
            401, "the admin API is disabled: neither ADMIN_API_TOKEN nor ADMIN_API_TOKENS is set", headers=_CHALLENGE
        )
    principal = tokens.authenticate(credentials.credentials if credentials else None)
    if principal is None:
        raise HTTPException(401, "missing or wrong bearer token", headers=_CHALLENGE)
    return principal


Reader = Annotated[Principal, Depends(signed_in)]


def may_change(principal: Reader) -> Principal:
    if not principal.can_change:
        raise HTTPException(403, f"the token {principal.name!r} has the viewer role: it may read, not change")
    return principal


Admin = Annotated[Principal, Depends(may_change)]
