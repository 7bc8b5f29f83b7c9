"""The outbox worker taken apart, in-process, in CPU time (not wall time), so that other
work on the machine inflates every figure alike. Against a fresh database, with the
sandbox CRM and a publisher that only counts:

    python -m tools.bench_outbox [--sessions 600] [--profile out.prof]

The consumer's use case applies a synthetic stream (every session gets its record row
and its end-of-session note row), then one OutboxWorker drains the outbox. Reported:
the worker's CPU µs per outbox row, its wall time, and PostgreSQL statements per row
(from pg_stat_database's transaction counter and pg_stat_statements when present).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from app.adapters.crm.sandbox import SandboxAdapter
from app.adapters.db import raw
from app.adapters.db.engine import build_engine
from app.domain.events import parse_event
from app.domain.outcome import OutcomeEvent
from app.entrypoints.service import migrate, run_until_complete
from app.entrypoints.worker import OutboxWorker
from app.service.consume import apply_batch
from app.service.outbox import OutboxRunner
from app.settings import Settings
from tools.bench import traffic as synthetic
from tools.bench.harness import Resources


async def _not_done(engine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT count(*) FROM outbox WHERE status <> 'done'"))).scalar_one()


async def _transactions(engine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(text(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ))).scalar_one()


async def measure(url: str, sessions: int, profile: str | None) -> None:
    settings = Settings(_env_file=None, database_url=url)
    stream = synthetic.generate("outbox", sessions=sessions)
    events = [parse_event(m.value) for m in stream.messages]
    engine = build_engine(settings)
    published: list[dict[str, Any]] = []
    sandbox: SandboxAdapter | None = None

    async def publish(session_id: str, event: OutcomeEvent) -> None:
        published.append(event.payload())

    try:
        for start in range(0, len(events), 500):
            async with raw.transaction(engine) as pg:
                await apply_batch(pg, events[start:start + 500], "sandbox")
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
        sandbox = SandboxAdapter.from_settings(settings, engine=engine)  # its own pool, as the service has it
        runner = OutboxRunner(engine, sandbox, publish, settings)
        worker = OutboxWorker(settings, engine, runner)
        stop = asyncio.Event()
        statements: dict[str, int] = {}

        def count(conn, cursor, statement, parameters, context, executemany) -> None:
            key = " ".join(statement.split())[:60]
            statements[key] = statements.get(key, 0) + 1

        event.listen(engine.sync_engine, "before_cursor_execute", count)  # statements through SQLAlchemy
        opened = [0]
        event.listen(engine.sync_engine, "connect", lambda *_: opened.__setitem__(0, opened[0] + 1))
        xacts_before = await _transactions(engine)
        profiler = cProfile.Profile() if profile else None
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        task = asyncio.create_task(worker.run(stop))
        while await _not_done(engine):
            await asyncio.sleep(0.05)
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        stop.set()
        await task
        xacts = await _transactions(engine) - xacts_before
        print(f"{sessions} sessions, {len(events)} events; {rows} outbox rows before the outcome events, "
              f"{len(published)} events published")
        print(f"  worker CPU     : {1e6 * cpu / rows:8.1f} µs per outbox row (the drain's polls included)")
        print(f"  wall           : {wall:8.2f} s, {rows / wall:,.0f} rows/s")
        print(f"  transactions   : {xacts / rows:8.2f} per outbox row (each statement outside one counts as one)")
        print(f"  connections    : {opened[0]:8d} opened by the pool during the drain")
        print(f"  statements     : {sum(statements.values()) / rows:8.2f} per outbox row through SQLAlchemy "
              "(BEGIN, COMMIT and statements on asyncpg's connection not counted)")
        for key, n in sorted(statements.items(), key=lambda kv: -kv[1])[:14]:
            print(f"    {n / rows:6.2f}  {key}")
        if profiler and profile:
            profiler.dump_stats(profile)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(45)
    finally:
        if sandbox is not None:
            await sandbox.aclose()
        await engine.dispose()


async def _main(sessions: int, profile: str | None) -> None:
    resources = Resources(Path(tempfile.mkdtemp(prefix="crm-records-outbox-")))
    try:
        await resources.create_database(Settings())
        url = resources.url()
        await asyncio.to_thread(migrate, Settings(_env_file=None, database_url=url))
        await measure(url, sessions, profile)
    finally:
        await asyncio.to_thread(resources.cleanup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=600)
    parser.add_argument("--profile", help="cProfile the drain into this file and print the top functions")
    args = parser.parse_args()
    run_until_complete(_main(args.sessions, args.profile))  # on uvloop, as the service runs


if __name__ == "__main__":
    main()
