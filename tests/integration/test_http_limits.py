"""The HTTP server cannot be exhausted by idle or slow sockets (issue 9, item 3): loopback
only, bounded in size and time. The flood comes from a child process, so the file
descriptors counted here are the server's own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys

import httpx
import pytest

from app.entrypoints.http import create_app
from app.entrypoints.http.server import build_http_server
from tests.helpers import eventually
from tests.integration.asgi_api import api_settings, build_runtime
from tools.dev.embedded import free_port

MAX_CONNECTIONS = 50
READ_TIMEOUT = 1.0
FLOOD = 300
FLOOD_SECONDS = 4.0

# Opens FLOOD sockets, sends nothing, and reports how many the server closed.
_FLOODER = """
import json, select, socket, sys, time
port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks = []
for _ in range(count):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    socks.append(s)
closed, deadline = set(), time.monotonic() + seconds
while time.monotonic() < deadline and len(closed) < count:
    open_ones = [s for s in socks if s.fileno() not in closed]
    readable, _, _ = select.select(open_ones, [], [], 0.05)
    for s in readable:
        try:
            if s.recv(1) == b"":
                closed.add(s.fileno())
        except OSError:
            closed.add(s.fileno())
print(json.dumps({"opened": count, "closed_by_server": len(closed)}))
"""


def server_sockets(port: int) -> int:
    """Descriptors of this process that are accepted connections on `port` (not the listener)."""
    inodes = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
                if local_port == port and state != "0A":  # 0A: LISTEN
                    inodes.add(inode)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            count += target.startswith("socket:[") and target[8:-1] in inodes
    return count


@contextlib.asynccontextmanager
async def http_server(clean_db, database_url):
    settings = api_settings(
        database_url, http_host="127.0.0.1", http_port=free_port(),
        http_max_connections=MAX_CONNECTIONS, http_read_timeout_seconds=READ_TIMEOUT,
    )
    server = build_http_server(create_app(build_runtime(settings, clean_db)), settings)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, timeout=10)
        yield server, f"http://127.0.0.1:{settings.http_port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


@pytest.mark.skipif(not os.path.isdir("/proc/self/net"), reason="counts the server's sockets in /proc")
async def test_an_idle_socket_flood_stays_bounded_and_is_closed(clean_db, database_url):
    async with http_server(clean_db, database_url) as (server, base_url):
        port = int(base_url.rsplit(":", 1)[1])
        flooder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _FLOODER, base_url.rsplit(":", 1)[1], str(FLOOD), str(FLOOD_SECONDS),
            stdout=asyncio.subprocess.PIPE,
        )
        peak = 0
        answered_during_flood = False
        async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as client:
            while flooder.returncode is None:
                peak = max(peak, server_sockets(port))
                assert len(server.server_state.connections) <= MAX_CONNECTIONS
                if not answered_during_flood:
                    with contextlib.suppress(httpx.HTTPError):
                        answered_during_flood = (await client.get("/healthz")).status_code == 200
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(flooder.wait(), timeout=0.05)
        report = json.loads((await flooder.stdout.read()).decode())
        # Connections beyond the cap are refused at once, the rest closed at the header deadline.
        assert report == {"opened": FLOOD, "closed_by_server": FLOOD}
        assert 0 < peak <= MAX_CONNECTIONS, peak
        assert answered_during_flood  # a real request still got through while the flood was on
        await eventually(lambda: server_sockets(port) == 0, timeout=10)
        async with httpx.AsyncClient(base_url=base_url) as client:
            assert (await client.get("/healthz")).status_code == 200


async def test_headers_trickled_slowly_are_cut_off_at_the_deadline(clean_db, database_url):
    async with http_server(clean_db, database_url) as (_, base_url):
        reader, writer = await asyncio.open_connection("127.0.0.1", int(base_url.rsplit(":", 1)[1]))
        started = asyncio.get_running_loop().time()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed_after = None
        for n in range(40):  # one header line every 0.1 s, never finishing: a slowloris
            await asyncio.sleep(0.1)
            try:
                writer.write(f"X-Slow-{n}: y\r\n".encode())
                await writer.drain()
                gone = writer.is_closing() or await asyncio.wait_for(reader.read(1), timeout=0.01) == b""
            except TimeoutError:
                gone = False
            except ConnectionError:
                gone = True
            if gone:
                closed_after = asyncio.get_running_loop().time() - started
                break
        writer.close()
        assert closed_after is not None and closed_after < READ_TIMEOUT + 1.5, closed_after


async def test_a_kept_alive_connection_serves_requests_then_is_closed_when_idle(clean_db, database_url):
    async with http_server(clean_db, database_url) as (_, base_url):
        reader, writer = await asyncio.open_connection("127.0.0.1", int(base_url.rsplit(":", 1)[1]))
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            assert head.startswith(b"HTTP/1.1 200")
            length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                          if line.startswith(b"content-length"))
            await reader.readexactly(length)
        assert await asyncio.wait_for(reader.read(1), timeout=READ_TIMEOUT + 6) == b""
        writer.close()
