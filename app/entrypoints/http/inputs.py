"""Path and query parameters shared by several routes, with the limits the database
imposes spelled out, so a value it cannot take is a 422 naming it, never a 500."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

# No stored session id contains NUL (PostgreSQL text cannot hold it), and none is longer.
SESSION_ID_PATTERN = r"^[^\x00]+$"
SESSION_ID_MAX = 512
BIGINT_MAX = 2**63 - 1

SessionIdPath = Annotated[
    str, Path(min_length=1, max_length=SESSION_ID_MAX, pattern=SESSION_ID_PATTERN, description="the session's id")
]
SessionIdQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=SESSION_ID_MAX, pattern=SESSION_ID_PATTERN, description="only this session's"),
]
Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many, newest first")]
SandboxRecordId = Annotated[int, Path(ge=1, le=BIGINT_MAX, description="the sandbox record's id")]
