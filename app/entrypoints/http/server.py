"""The HTTP server, built so it cannot be exhausted: a cap on open connections and a
deadline for a request's headers (the body's cap and deadline are in guard.py).

uvicorn's own settings do part of it: `timeout_keep_alive` closes a connection idle
between requests, `h11_max_incomplete_event_size` caps the headers' size. Nothing in
uvicorn closes a connection that never sends a complete request (a socket opened and left
idle, or headers trickled a byte at a time), and its `limit_concurrency` keeps accepting
sockets: `GuardedH11Protocol` adds the header deadline and the connection cap, so file
descriptors stay bounded whatever clients do.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.settings import Settings


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap and a header deadline (class attributes
    set by `guarded_protocol`).

    At the cap, a new connection takes the place of the one that has waited longest
    without sending a complete request; only when every connection is busy with a request
    is the new one refused. So idle sockets cannot lock out a client that sends its request."""

    max_connections = 256
    header_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_deadline: asyncio.TimerHandle | None = None
        self.idle_since: float | None = None  # None while a request is being answered
        if len(self.connections) >= self.max_connections and not self._evict_longest_idle():
            self.transport = transport
            transport.abort()  # every connection is busy: refuse, freeing the descriptor now
            return
        super().connection_made(transport)
        self._arm_header_deadline()

    def _evict_longest_idle(self) -> bool:
        waiting = [c for c in self.connections if getattr(c, "idle_since", None) is not None]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.idle_since)
        oldest.transport.abort()
        self.connections.discard(oldest)  # at once: connection_lost comes a loop turn later
        return True

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self.idle_since = self.loop.time()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._header_deadline_passed)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if self._answering():
            return  # the request arrived and is being answered (its body has its own deadline)
        if not self.transport.is_closing():
            self.transport.abort()

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def handle_events(self) -> None:
        super().handle_events()
        if self._answering():
            self.idle_since = None  # headers complete: no longer a candidate for eviction

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()  # the next request on this connection gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        self.idle_since = None
        if self.flow is None:  # refused in connection_made: nothing was set up
            return
        super().connection_lost(exc)


def guarded_protocol(settings: Settings) -> type[GuardedH11Protocol]:
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"max_connections": settings.http_max_connections, "header_timeout": settings.http_read_timeout_seconds},
    )


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        http=guarded_protocol(settings),
        # No limit_concurrency: uvicorn's check counts open connections, which the protocol
        # caps itself, and would answer 503 to a real request while idle sockets fill the
        # cap. With HTTP/1.1 a connection carries one request at a time, so the connection
        # cap is the concurrency cap.
        timeout_keep_alive=settings.http_keepalive_timeout_seconds,
        h11_max_incomplete_event_size=16 * 1024,  # request line and headers together
        log_level="warning",
        access_log=False,
        lifespan="off",
    )




class HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the service stops everything together."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield

    def install_signal_handlers(self) -> None:
        pass


def build_http_server(app: Any, settings: Settings) -> HttpServer:
    return HttpServer(uvicorn_config(app, settings))
