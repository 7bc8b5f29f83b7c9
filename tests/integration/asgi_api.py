"""The HTTP API in-process over ASGI (no socket, no Kafka), against the real database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.crm.sandbox import SandboxAdapter
from app.entrypoints.http import Runtime, create_app
from app.settings import Settings

ADMIN = "admin-token-0123456789"
VIEWER = "viewer-token-0123456789"
TOKENS = f"ana:{ADMIN}:admin,vic:{VIEWER}:viewer"


def api_settings(database_url: str, **overrides) -> Settings:
    values = dict(database_url=database_url, admin_api_tokens=TOKENS)
    values.update(overrides)
    return Settings(_env_file=None, **values)


def build_runtime(settings: Settings, engine: AsyncEngine, **runtime_fields) -> Runtime:
    return Runtime(settings, engine, SandboxAdapter(engine), **runtime_fields)


@contextlib.asynccontextmanager
async def asgi_client(runtime: Runtime, token: str | None = ADMIN) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test", headers=headers) as client:
        yield client
