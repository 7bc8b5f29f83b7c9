"""PostgreSQL's execution time for the consumer's write, per event
(`python -m tools.bench.pg_write [--sessions 2500] [--batch 16] [--rounds 3]`).

The consumer's write (adapters/db/batch_writes.py) is most of what PostgreSQL does for
an ingested event; under `make bench` its time is the machine's as much as the
statement's (the backends wait for a core). Here it is measured alone:

1. a stream of synthetic sessions is applied, in batches of `--batch` events as the
   consumer applies a poll, to a fresh database, and each write's statement and
   arguments are captured (asyncpg's query logger);
2. each round empties the tables and runs the captured writes again, in order, each
   under `EXPLAIN (ANALYZE)`: the same states at the same versions, the same rows.

It reports the best round's execution time (PostgreSQL's own, without planning, the
round trip or the client) per event, and each part's (the dedup rows, the states, the
messages, the decisions, the outbox rows). Run it at two commits to compare statements.
Needs the local PostgreSQL (a database of its own is made and dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

_TABLES = "processed_events, sessions, session_messages, decisions, outbox"


@dataclass(frozen=True)
class CapturedWrite:
    arguments: tuple[Any, ...]


@dataclass(frozen=True)
class RoundTime:
    milliseconds: float  # execution time of every write, summed
    by_part: dict[str, float]  # CTE name (part_e, part_s, ...) -> its nodes' time, summed


async def capture(url: str, sessions: int, batch: int) -> tuple[str, list[CapturedWrite], int]:
    """Apply the stream in batches; the write statement's text, each write's arguments,
    and the events applied."""
    from app.adapters.db import batch_writes, raw
    from app.adapters.db.engine import build_engine
    from app.domain.events import parse_event
    from app.service.consume import apply_batch
    from app.service.saved_states import SavedStates
    from app.settings import Settings
    from tools.bench import traffic

    sql = batch_writes.STATEMENT_SQL
    writes: list[CapturedWrite] = []

    def keep(logged: Any) -> None:
        if logged.query == sql and logged.exception is None:
            writes.append(CapturedWrite(tuple(logged.args)))

    engine = build_engine(Settings(_env_file=None, database_url=url))
    values = [m.value for m in traffic.generate("pgw", sessions=sessions).messages]
    saved = SavedStates()
    applied = 0
    try:
        for start in range(0, len(values), batch):
            events = [parse_event(value) for value in values[start:start + batch]]
            async with raw.connection(engine) as pg:
                pg.add_query_logger(keep)
                try:
                    applied += (await apply_batch(pg, events, "sandbox", saved=saved)).applied
                    await asyncio.sleep(0)  # asyncpg calls its query loggers soon after, not at once
                finally:
                    pg.remove_query_logger(keep)
    finally:
        await engine.dispose()
    return sql, writes, applied


def _parts(plan: dict[str, Any]) -> dict[str, float]:
    return {node["Subplan Name"].removeprefix("CTE "): node["Actual Total Time"]
            for node in plan.get("Plans", []) if node.get("Subplan Name", "").startswith("CTE ")}


async def replay(dsn: str, sql: str, writes: list[CapturedWrite]) -> RoundTime:
    pg = await asyncpg.connect(dsn)
    try:
        await pg.execute(f"TRUNCATE {_TABLES} CASCADE")
        await pg.execute("CHECKPOINT")
        total, parts = 0.0, Counter[str]()
        for write in writes:
            explained = await pg.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *write.arguments)
            [plan] = orjson.loads(explained) if isinstance(explained, str) else explained
            total += plan["Execution Time"]
            parts.update(_parts(plan["Plan"]))
        return RoundTime(total, dict(parts))
    finally:
        await pg.close()


async def measure(sessions: int, batch: int, rounds: int) -> tuple[int, int, RoundTime]:
    """Events applied, writes captured, and the best of `rounds` replays."""
    from app.adapters.db.engine import asyncpg_dsn
    from app.entrypoints.service import migrate
    from app.settings import Settings
    from tools.bench.harness import Resources

    resources = Resources(Path(tempfile.mkdtemp(prefix="crm-records-pg-write-")))
    try:
        await resources.create_database(Settings())
        url = resources.url()
        await asyncio.to_thread(migrate, Settings(_env_file=None, database_url=url))
        sql, writes, applied = await capture(url, sessions, batch)
        times = [await replay(asyncpg_dsn(url), sql, writes) for _ in range(rounds)]
        return applied, len(writes), min(times, key=lambda t: t.milliseconds)
    finally:
        await asyncio.to_thread(resources.cleanup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=16, help="events a write (a poll's batch)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    applied, writes, best = asyncio.run(measure(args.sessions, args.batch, args.rounds))
    per_event = 1000 * best.milliseconds / applied
    print(f"{applied} events in {writes} writes of up to {args.batch}; best of {args.rounds} rounds:")
    print(f"  PostgreSQL's execution time: {best.milliseconds:.1f} ms, {per_event:.2f} µs per event")
    for part, ms in sorted(best.by_part.items()):
        print(f"    {part}: {ms:.1f} ms, {1000 * ms / applied:.2f} µs per event")


if __name__ == "__main__":
    main()
