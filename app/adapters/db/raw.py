"""The consumer's hot path on the pooled connection's own asyncpg connection.

A statement through SQLAlchemy's AsyncConnection costs the service several hundred µs
of CPU (statement and cache-key handling, the greenlet hop, result wrapping) against
about a hundred for the same statement on asyncpg (docs/bench.md). The consumer runs a
handful of statements per partition batch, so on a quiet stream, with a few events per
batch, that overhead was most of its CPU. Here the statements are the repositories' own
SQL text, their `:name` binds turned into asyncpg's `$n` once, at import.

The connection still comes from the engine's pool (one pool, one limit), and errors are
asyncpg's own: they carry `sqlstate` as SQLAlchemy's wrapped ones do, which is what
`errors.rejects_the_data` reads.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

# A `:name` bind, not a `::type` cast and not part of a word (as SQLAlchemy's text() reads it).
_BIND = re.compile(r"(?<![:\w]):(\w+)")


@dataclass(frozen=True, slots=True)
class Statement:
    """SQL with `$n` placeholders, and the parameter name each number stands for."""

    sql: str
    names: tuple[str, ...]

    def arguments(self, parameters: Mapping[str, Any]) -> list[Any]:
        return [parameters[name] for name in self.names]


def positional(sql: str) -> Statement:
    """`:name` binds as `$1`, `$2`, ... (a name used twice gets one number)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return Statement(_BIND.sub(number, sql.strip()), tuple(names))


def with_parts(parts: Mapping[str, str], final: str) -> Statement:
    """Statements as the parts `part_<prefix>` of one WITH, each part's `:name` binds
    renamed `:<prefix>_name` (give their parameters with `prefixed`), then `final`. Every
    data-modifying part runs exactly once and to completion, read or not (PostgreSQL's
    rule), and an error in any part fails the whole statement."""
    renamed = {prefix: _BIND.sub(rf":{prefix}_\1", sql.strip()) for prefix, sql in parts.items()}
    return positional(
        "WITH " + ",\n".join(f"part_{prefix} AS (\n{sql}\n)" for prefix, sql in renamed.items()) + "\n" + final
    )


def prefixed(prefix: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A part's parameters under the names `with_parts` gave its binds."""
    return {f"{prefix}_{name}": value for name, value in parameters.items()}


def json_rows(rows: Any) -> str:
    """Rows as one JSON array of objects (dataclasses and dicts alike), for SQL that reads
    them with `jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(column type, ...)`.

    One text parameter per table instead of one array per column: asyncpg checks every
    element of an array parameter against three abstract base classes before encoding it,
    about a fifth of the consumer's CPU at busy batch sizes (docs/bench.md). orjson writes
    a datetime as RFC 3339, which PostgreSQL reads back as the same instant.

    Read as jsonb, not json: a json parameter is parsed three times (its cast checks it,
    json_to_recordset parses it again, and a jsonb column, the session state, a third
    time), jsonb once; the consumer's write spent a third to two fifths less of PostgreSQL's
    time (docs/bench.md, tenth pass)."""
    return orjson.dumps(rows).decode()


async def fetch(pg: asyncpg.Connection, statement: Statement, parameters: Mapping[str, Any]) -> list[Any]:
    return await pg.fetch(statement.sql, *statement.arguments(parameters))


async def execute(pg: asyncpg.Connection, statement: Statement, parameters: Mapping[str, Any]) -> None:
    await pg.execute(statement.sql, *statement.arguments(parameters))


@asynccontextmanager
async def connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A connection of `engine`'s pool as asyncpg's connection, outside any transaction:
    each statement commits on its own. A connection that died on the way (the server
    restarted, the socket dropped) is taken out of the pool, not handed on.

    Checked out of the pool directly, without SQLAlchemy's Connection around it: the
    Connection's set-up and events cost about 330 µs of CPU per checkout against 150
    (more than a statement's round trip), and the worker checks out once per row.

    A connection left inside a transaction it began itself is discarded too: SQLAlchemy
    rolls back on return only the transactions it began, so that one would reach the
    next user still open."""
    fairy = await engine.raw_connection()
    pg = fairy.driver_connection
    assert pg is not None, "a checked-out connection has a driver connection"
    try:
        yield pg
    except BaseException:
        if pg.is_closed() or pg.is_in_transaction():
            await greenlet_spawn(fairy.invalidate)
        raise
    finally:
        await greenlet_spawn(fairy.close)  # back to the pool (an invalidated one is discarded)


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on a connection of `engine`'s pool (see `connection`): committed
    when the block ends, rolled back when it raises."""
    async with connection(engine) as pg, pg.transaction():
        yield pg
