"""The request guard: a cap on the body's size and a deadline for its arrival, and an
answer (not a traceback) for anything unexpected."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from fastapi import HTTPException
from sqlalchemy.exc import DataError

log = logging.getLogger("app.http")


def _route(scope: Any) -> str:
    """The route's template (`/api/sessions/{session_id}`), not the path with its values."""
    route = scope.get("route")
    return getattr(route, "path", None) or "(no route)"


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body may be at most {limit} bytes")


class BodyTooSlow(HTTPException):
    def __init__(self, timeout: float):
        super().__init__(408, f"the request body did not arrive within {timeout:g} s")


async def _answer(send: Any, status: int, detail: Any) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": orjson.dumps({"detail": detail})})


class RequestGuard:
    """ASGI middleware: 413 for a body over the cap (declared or streamed), 408 for a body
    that does not arrive in time, and a JSON 500 with one log line for anything unexpected.

    The body errors are HTTPExceptions, raised from `receive`: FastAPI passes those on
    whoever reads the body (its own parameter parsing or a route), and its handler answers them."""

    def __init__(self, app: Any, *, max_body_bytes: int, read_timeout: float):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await _answer(send, 413, BodyTooLarge(self.max_body_bytes).detail)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout
        received = 0
        body_done = False
        started = False

        async def guarded_receive() -> Any:
            nonlocal received, body_done
            if body_done:
                return await receive()  # after the body: only a disconnect, no deadline
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTooSlow(self.read_timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except (BodyTooLarge, BodyTooSlow) as exc:  # read outside FastAPI's handlers
            if not started:
                await _answer(send, exc.status_code, exc.detail)
        except DataError:
            # A value the database cannot take that no validation caught: still the caller's input.
            log.warning("%s %s: the database refused a value of the request", scope["method"], _route(scope))
            if not started:
                reason = "a value of the request cannot be stored or compared by the database"
                await _answer(send, 422, [{"field": "(request)", "reason": reason, "loc": ["request"], "msg": reason}])
        except Exception as exc:
            self._unexpected(scope, exc)
            if not started:
                await _answer(send, 500, "internal error")

    @staticmethod
    def _unexpected(scope: Any, exc: BaseException) -> None:
        # One line, not a traceback per request: a fuzzing client must not flood the log.
        log.error("%s %s failed: %s", scope["method"], _route(scope), type(exc).__name__)
        log.debug("traceback", exc_info=exc)
