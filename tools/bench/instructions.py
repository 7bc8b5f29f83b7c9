"""The consumer's path in instructions per event (`python -m tools.bench.instructions`):
a yardstick that does not move with the machine, as the seconds of `make bench` do.

It runs itself twice under valgrind's callgrind, which counts the instructions the
process executes whatever else the machine is doing: once applying one stream of
synthetic sessions, once applying two; the difference, divided by the events of one
stream, is what an event costs the consumer's process (decoding, the fold, the
statements' parameters, asyncpg's protocol, the event loop; not the kernel's side of
its round trips, nor PostgreSQL's work). Both runs generate both streams, so
generating them cancels out. The events go in batches of `--batch` as the consumer
applies a poll: outside a transaction, with its memory of what it saved.

Needs valgrind (Debian's package) and the local PostgreSQL (a database of its own is
made and dropped). Under valgrind a run takes a minute or two.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SESSIONS = 300
_COLLECTED = re.compile(r"Collected : (\d+)")


async def _apply(streams: int, batch: int) -> int:
    """Apply `streams` of the two streams; returns the events applied."""
    from app.adapters.db import raw
    from app.adapters.db.engine import build_engine
    from app.domain.events import parse_event
    from app.entrypoints.service import migrate, tune_garbage_collector
    from app.service.consume import apply_batch
    from app.service.saved_states import SavedStates
    from app.settings import Settings
    from tools.bench import traffic
    from tools.bench.harness import Resources

    resources = Resources(Path(tempfile.mkdtemp(prefix="crm-records-instructions-")))
    try:
        await resources.create_database(Settings())
        url = resources.url()
        await asyncio.to_thread(migrate, Settings(_env_file=None, database_url=url))
        engine = build_engine(Settings(_env_file=None, database_url=url))
        tune_garbage_collector()  # as `python -m app run` does
        generated = [[m.value for m in traffic.generate(f"i{n}", sessions=SESSIONS).messages] for n in range(2)]
        saved = SavedStates()
        applied = 0
        for values in generated[:streams]:
            for start in range(0, len(values), batch):
                events = [parse_event(value) for value in values[start:start + batch]]
                async with raw.connection(engine) as pg:
                    applied += (await apply_batch(pg, events, "sandbox", saved=saved)).applied
        await engine.dispose()
        return applied
    finally:
        await asyncio.to_thread(resources.cleanup)


def _counted(streams: int, batch: int) -> tuple[int, int]:
    """(instructions, events of one stream) of a run applying `streams` streams."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("needs valgrind: apt-get install -y valgrind")
    done = subprocess.run(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-m", "tools.bench.instructions", "--inner", str(streams), "--batch", str(batch)],
        capture_output=True, text=True, check=True,
    )
    instructions = int(_COLLECTED.search(done.stderr).group(1))  # type: ignore[union-attr]
    events = int(done.stdout.split()[-1])
    return instructions, events // streams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=333, help="events a poll applies at once")
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)  # the run under valgrind
    args = parser.parse_args()
    if args.inner is not None:
        print(asyncio.run(_apply(args.inner, args.batch)))
        return
    one, events = _counted(1, args.batch)
    two, _ = _counted(2, args.batch)
    print(f"consumer path, batches of {args.batch}: {(two - one) / events:,.0f} instructions per event "
          f"({events} events a stream of {SESSIONS} sessions)")


if __name__ == "__main__":
    main()
