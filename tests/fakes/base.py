"""A small real HTTP server for fake CRMs: stdlib ThreadingHTTPServer on a loopback
port, a regex router, JSON helpers, a request log, and faults a test can switch on.

It is deliberately a real socket server rather than an httpx mock transport, so
the adapters are exercised through real HTTP, timeouts and dropped connections.
Each fake serves from a thread of the process that starts it (a test, or a tool such as
the chaos run); a service run as a subprocess reaches it over loopback like any CRM.
Faults are switched on the object (`set_faults`) or over HTTP (`POST /__fake__/faults`),
and `GET /__fake__/requests` returns the request log.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # from the route's named groups

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialisable, or bytes, or None
    headers: dict[str, str] = field(default_factory=dict)


class DropConnection(Exception):
    """Raised by a handler (after doing its work) to close the socket without answering."""


@dataclass
class Faults:
    """Switches a test flips. Counts go down as they are used."""

    rate_limit_next: int = 0  # answer the next N requests with 429
    retry_after_seconds: float = 1.0
    server_error_next: int = 0  # answer the next N requests with 500/503
    delay_seconds: float = 0.0  # answer every request this much later
    drop_after_create_next: int = 0  # create the record, then drop the connection, N times
    invalid_next: int = 0  # refuse the next N requests as invalid (the vendor's validation error)


Handler = Callable[[Request], Response]


@dataclass
class LoggedRequest:
    at: float
    method: str
    path: str
    status: int


class FakeServer:
    """Subclass and register routes in `setup_routes` with `self.route(method, pattern, handler)`."""

    name = "fake"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.faults = Faults()
        self.requests: list[LoggedRequest] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.setup_routes()

    # --- to override -----------------------------------------------------------------------
    def setup_routes(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def authenticate(self, request: Request) -> Response | None:
        """Return an error response when the request's credentials are wrong."""
        return None

    def rate_limited_response(self) -> Response:
        return Response(429, {"error": "rate limited"}, {"Retry-After": f"{self.faults.retry_after_seconds:g}"})

    def server_error_response(self) -> Response:
        return Response(503, {"error": "service unavailable"})

    def invalid_response(self) -> Response:
        return Response(422, {"error": "invalid", "description": "refused as invalid"})

    # --- plumbing ----------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler, *, authenticated: bool = True) -> None:
        compiled = re.compile("^" + pattern + "$")
        self._routes.append((method, compiled, handler if not authenticated else self._with_auth(handler)))

    def _with_auth(self, handler: Handler) -> Handler:
        def wrapped(request: Request) -> Response:
            refused = self.authenticate(request)
            return refused if refused is not None else handler(request)

        return wrapped

    def take_drop_after_create(self) -> bool:
        """Handlers that create call this after creating: True means drop the connection now."""
        with self.lock:
            if self.faults.drop_after_create_next > 0:
                self.faults.drop_after_create_next -= 1
                return True
        return False

    def set_faults(self, **changes: Any) -> None:
        with self.lock:
            for key, value in changes.items():
                if not hasattr(self.faults, key):
                    raise KeyError(key)
                setattr(self.faults, key, value)

    def dispatch(self, request: Request) -> Response:
        if request.path == "/__fake__/faults" and request.method == "POST":
            self.set_faults(**(request.json() or {}))
            return Response(200, {"faults": self.faults.__dict__})
        if request.path == "/__fake__/requests" and request.method == "GET":
            return Response(200, [r.__dict__ for r in self.requests])
        with self.lock:
            if self.faults.rate_limit_next > 0:
                self.faults.rate_limit_next -= 1
                return self.rate_limited_response()
            if self.faults.server_error_next > 0:
                self.faults.server_error_next -= 1
                return self.server_error_response()
            if self.faults.invalid_next > 0:
                self.faults.invalid_next -= 1
                return self.invalid_response()
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                request.params = match.groupdict()
                with self.lock:
                    return handler(request)
        return Response(404, {"error": "not found", "path": request.path})

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                if fake.faults.delay_seconds and not parts.path.startswith("/__fake__"):
                    time.sleep(fake.faults.delay_seconds)
                try:
                    response = fake.dispatch(request)
                except DropConnection:
                    fake.requests.append(LoggedRequest(time.time(), request.method, request.path, 0))
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass
                    return
                if not parts.path.startswith("/__fake__"):
                    fake.requests.append(LoggedRequest(time.time(), request.method, request.path, response.status))
                if isinstance(response.body, bytes):
                    payload = response.body
                    content_type = "application/octet-stream"
                elif response.body is None:
                    payload = b""
                    content_type = "application/json"
                else:
                    payload = json.dumps(response.body).encode()
                    content_type = "application/json; charset=utf-8"
                self.send_response(response.status)
                self.send_header("Content-Type", response.headers.pop("Content-Type", content_type))
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        return self.base_url

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def requests_in_window(self, seconds: float) -> int:
        """The most requests seen in any rolling window of this length (budget checks)."""
        times = sorted(r.at for r in self.requests)
        best, start = 0, 0
        for end, moment in enumerate(times):
            while moment - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best
