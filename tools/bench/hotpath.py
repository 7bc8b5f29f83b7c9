"""The consumer's hot path taken apart, in-process, in CPU time (not wall time), so that
other work on the machine inflates every line alike. Against a fresh database:

    python -m tools.bench.hotpath [--sessions 1500]

- parsing: orjson alone, then the service's validation (msgspec structs, events.py) per event;
- the pure fold (apply_event + decide) per event, and the state document per session;
- one statement through SQLAlchemy's AsyncConnection against the same statement on the
  raw asyncpg connection: the overhead every repository call pays;
- apply_batch (the whole use case, one transaction) per event at the batch sizes a
  busy (333 events per partition) and a quiet (4) stream produce, alone and with the
  parsing, first with Python's default garbage collector settings, then with the
  service's (`tune_garbage_collector`).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from sqlalchemy import text

from app.adapters.db import raw
from app.adapters.db.engine import build_engine
from app.domain.events import parse_event
from app.domain.policy import decide
from app.domain.record_settings import DEFAULT_RECORD_SETTINGS
from app.domain.session import apply_event
from app.entrypoints.service import migrate, tune_garbage_collector
from app.service.consume import apply_batch
from app.settings import Settings
from tools.bench import traffic as synthetic
from tools.bench.harness import Resources


def cpu_us(work: Callable[[], object], count: int, repeat: int = 3) -> float:
    """Best of `repeat`: CPU µs per item."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return 1e6 * best / count


async def acpu_us(work, count: int) -> float:
    started = time.process_time()
    await work()
    return 1e6 * (time.process_time() - started) / count


def fold(events):
    states = {}
    for event in events:
        session_id = event.session.id
        states[session_id] = decide(apply_event(states.get(session_id), event), DEFAULT_RECORD_SETTINGS).state
    return states


async def measure(url: str, sessions: int) -> None:
    stream = synthetic.generate("hot", sessions=sessions)
    values = [m.value for m in stream.messages]
    events = [parse_event(v) for v in values]
    n = len(values)
    print(f"{sessions} sessions, {n} events; CPU µs (best of 3)")
    print(
        f"  orjson.loads                      : {cpu_us(lambda: [orjson.loads(v) for v in values], n):6.1f} per event"
    )
    print(f"  parse_event (msgspec)             : {cpu_us(lambda: [parse_event(v) for v in values], n):6.1f} per event")
    print(f"  apply_event + decide              : {cpu_us(lambda: fold(events), n):6.1f} per event")
    states = list(fold(events).values())
    print(f"  state document + orjson.dumps     : "
          f"{cpu_us(lambda: [orjson.dumps(s.to_document()) for s in states], len(states)):6.1f} per session")
    engine = build_engine(Settings(_env_file=None, database_url=url))
    try:
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            statement = text("SELECT CAST(:a AS int)")

            async def through_sqlalchemy():
                for i in range(1000):
                    await conn.execute(statement, {"a": i})

            async def through_asyncpg():
                for i in range(1000):
                    await driver.fetch("SELECT $1::int", i)

            await through_sqlalchemy()  # warm both statement caches
            await through_asyncpg()
            sa = await acpu_us(through_sqlalchemy, 1000)
            pg = await acpu_us(through_asyncpg, 1000)
            print(f"  one statement, SQLAlchemy / asyncpg: {sa:6.1f} / {pg:.1f} per statement (round trip included)")
        for gc_settings in ("default", "service"):
            if gc_settings == "service":
                tune_garbage_collector()  # what `python -m app run` does at start-up
            for size in (333, 4):
                async def apply_all(size: int = size) -> None:  # this pass's batch size, bound now
                    for start in range(0, n, size):
                        async with raw.transaction(engine) as pg:
                            await apply_batch(pg, events[start:start + size], "sandbox")

                async def parse_and_apply(size: int = size) -> None:
                    for start in range(0, n, size):
                        parsed = [parse_event(v) for v in values[start:start + size]]
                        async with raw.transaction(engine) as pg:
                            await apply_batch(pg, parsed, "sandbox")

                for label, work in (("apply_batch", apply_all), ("parse + apply_batch", parse_and_apply)):
                    async with engine.begin() as conn:
                        await conn.execute(
                            text("TRUNCATE processed_events, sessions, session_messages, decisions, outbox CASCADE")
                        )
                    print(f"  {label:>19}, {size:3d} a batch, GC {gc_settings:>7}: "
                          f"{await acpu_us(work, n):6.1f} per event")
    finally:
        await engine.dispose()


async def _main(sessions: int) -> None:
    resources = Resources(Path(tempfile.mkdtemp(prefix="crm-records-hotpath-")))
    try:
        await resources.create_database(Settings())
        url = resources.url()
        await asyncio.to_thread(migrate, Settings(_env_file=None, database_url=url))
        await measure(url, sessions)
    finally:
        await asyncio.to_thread(resources.cleanup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1500)
    asyncio.run(_main(parser.parse_args().sessions))


if __name__ == "__main__":
    main()
