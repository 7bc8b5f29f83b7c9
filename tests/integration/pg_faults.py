"""A TCP proxy in front of the real PostgreSQL that can misbehave the way a restarting
server does, speaking just enough of the PostgreSQL wire protocol:

- `starting_up()`: every existing connection is cut, and every new one is answered with
  the server's own `FATAL 57P03 the database system is starting up` ErrorResponse;
- `cut_at_next_commits(n, touching=...)`: the next `n` COMMITs of transactions that ran a
  statement naming `touching` never reach the server; the client's connection is
  dropped instead, so the transaction is rolled back mid-batch (optionally followed by
  `starting_up()`, as when the server crashed and is recovering). A statement naming
  `touching` outside a transaction commits alone: it is its own COMMIT, and is cut so;
- `down()`: new connections are refused outright (nothing listens), existing ones cut;
- `recover()`: back to a transparent pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


def error_response(sqlstate: str, message: str, severity: str = "FATAL") -> bytes:
    fields = b"".join(
        code + value.encode() + b"\x00"
        for code, value in ((b"S", severity), (b"V", severity), (b"C", sqlstate), (b"M", message))
    ) + b"\x00"
    return b"E" + struct.pack("!i", len(fields) + 4) + fields


class PostgresFaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.mode = "pass"  # pass | starting_up
        self.commits_to_cut = 0
        self.cut_touching = b""
        self.then_starting_up = False
        self.cut_commits = 0
        self.refused_with_57p03 = 0
        self._server: asyncio.base_events.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> PostgresFaultProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port or self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._cut_all()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    # --- faults -----------------------------------------------------------------------------

    def starting_up(self) -> None:
        self.mode = "starting_up"
        self._cut_all()

    def cut_at_next_commits(self, count: int, *, touching: bytes = b"", then_starting_up: bool = False) -> None:
        self.commits_to_cut = count
        self.cut_touching = touching
        self.then_starting_up = then_starting_up

    async def down(self) -> None:
        await self.stop()

    async def recover(self) -> None:
        self.mode = "pass"
        self.commits_to_cut = 0
        if self._server is None:
            await self.start(self.port)

    def _cut_all(self) -> None:
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()

    # --- the protocol -----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.mode == "starting_up":
                await self._refuse_starting_up(reader, writer)
                return
            await self._pipe(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.transport.abort()

    async def _refuse_starting_up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            length = struct.unpack("!i", await reader.readexactly(4))[0]
            body = await reader.readexactly(length - 4)
            code = struct.unpack("!i", body[:4])[0]
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                writer.write(b"N")  # no encryption; the client sends its StartupMessage next
                continue
            break
        self.refused_with_57p03 += 1
        writer.write(error_response("57P03", "the database system is starting up"))
        await writer.drain()

    async def _pipe(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        self._pipes.update((client_writer, server_writer))
        try:
            upstream = asyncio.create_task(self._client_to_server(client_reader, server_writer, client_writer))
            downstream = asyncio.create_task(self._copy(server_reader, client_writer))
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
            for task in (upstream, downstream):
                task.cancel()
        finally:
            self._pipes.discard(client_writer)
            self._pipes.discard(server_writer)
            server_writer.transport.abort()
            client_writer.transport.abort()

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    def _cut_commit(self, client_writer: asyncio.StreamWriter, server_writer: asyncio.StreamWriter) -> None:
        self.commits_to_cut -= 1
        self.cut_commits += 1
        if self.then_starting_up:
            self.starting_up()
        client_writer.transport.abort()
        server_writer.transport.abort()

    async def _client_to_server(self, reader, server_writer, client_writer) -> None:
        # Untyped start-up packets first (SSLRequest, then the StartupMessage), then typed messages.
        while True:
            header = await reader.readexactly(4)
            body = await reader.readexactly(struct.unpack("!i", header)[0] - 4)
            if struct.unpack("!i", body[:4])[0] in (SSL_REQUEST, GSSENC_REQUEST):
                # Answered here: the proxy reads the messages, so the session stays in clear.
                client_writer.write(b"N")
                continue
            server_writer.write(header + body)
            await server_writer.drain()
            break
        statements: dict[bytes, bytes] = {}  # prepared statement name -> SQL text
        touched = False  # the open transaction ran a statement naming `cut_touching`
        in_transaction = False  # a BEGIN was sent, and no COMMIT or ROLLBACK since
        while True:
            kind = await reader.readexactly(1)
            header = await reader.readexactly(4)
            body = await reader.readexactly(struct.unpack("!i", header)[0] - 4)
            if kind == b"P":  # Parse: name, query
                name, query = body.split(b"\x00", 2)[:2]
                statements[name] = query
                touched = touched or self.cut_touching in query
            elif kind == b"B":  # Bind: portal, statement
                naming = self.cut_touching in statements.get(body.split(b"\x00", 2)[1], b"")
                if naming and not in_transaction and self.commits_to_cut:
                    self._cut_commit(client_writer, server_writer)
                    return
                touched = touched or naming
            elif kind == b"Q":
                query = body.lstrip().upper()
                if query.startswith(b"COMMIT") and self.commits_to_cut and touched:
                    self._cut_commit(client_writer, server_writer)
                    return
                if query.startswith((b"COMMIT", b"ROLLBACK", b"BEGIN")):
                    touched = False
                    in_transaction = query.startswith(b"BEGIN")
            server_writer.write(kind + header + body)
            await server_writer.drain()
