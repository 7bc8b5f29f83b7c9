"""Measure the what-if preview over a large history: `make bench-whatif` (SESSIONS=100000).

Creates a database of its own on the PostgreSQL server at 127.0.0.1:5432 (or
BENCH_DATABASE_URL), fills it with synthetic sessions of the last 7 days (calls and chats
of every kind the policy tells apart, with their end-user messages and what happened to
them under the default settings), then times the what-if as the console runs it: the
first request (loading the history and replaying it) and the following ones (replaying
the history already loaded). Drops the database at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.adapters.db.engine import asyncpg_dsn, build_engine  # noqa: E402
from app.domain.kinds import DecisionKind  # noqa: E402
from app.domain.record_settings import DEFAULT_RECORD_SETTINGS, RecordSettings  # noqa: E402
from app.domain.session import SessionState  # noqa: E402
from app.domain.session_types import SESSION_TYPES  # noqa: E402
from app.domain.whatif import Outcome, historic_session, replay_verdict  # noqa: E402
from app.entrypoints.service import migrate  # noqa: E402
from app.service.whatif import WARM_ROWS_PER_CHUNK, WhatIf  # noqa: E402
from app.settings import Settings, normalize_database_url  # noqa: E402

CALL_TYPES = [c for c, t in SESSION_TYPES.items() if t.medium == "call"]
CHAT_TYPES = [c for c, t in SESSION_TYPES.items() if t.medium == "chat"]
PROPOSED = RecordSettings(
    delay_call_record_until_connected=True,
    delay_chat_record_until_consumer_messages=2,
    create_records_for_abandoned_calls=True,
    create_records_for_abandoned_chats="min_messages",
    abandoned_chat_min_messages=2,
    append_to_open_record_in_leaf_queue=True,
    append_to_closed_record_within_days=3,
)


def synthetic_session(n: int, rng: random.Random, now: datetime) -> tuple[SessionState, list[datetime]]:
    start = now - timedelta(seconds=rng.uniform(60, 7 * 86400 - 3600))
    is_chat = rng.random() < 0.4
    at = start
    moments: dict[str, datetime] = {"queued_at": at}
    messages: list[datetime] = []
    fate = rng.random()
    if is_chat:
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            at += timedelta(seconds=rng.uniform(1, 20))
            messages.append(at)
        if fate < 0.25:  # abandoned while waiting, after a short or a long wait
            moments["abandoned_at"] = at + timedelta(seconds=rng.uniform(1, 40))
        else:
            at += timedelta(seconds=rng.uniform(5, 120))
            moments["assigned_at"] = at
            for _ in range(rng.choice((0, 1, 2, 4, 8))):
                at += timedelta(seconds=rng.uniform(5, 60))
                messages.append(at)
            if fate < 0.95:
                moments["ended_at"] = at + timedelta(seconds=30)
    else:
        at += timedelta(seconds=rng.uniform(5, 120))
        if fate < 0.2:
            moments["abandoned_at"] = at
        else:
            moments["assigned_at"] = at
            if fate < 0.85:
                moments["connected_at"] = at + timedelta(seconds=rng.uniform(2, 15))
            if fate < 0.97:
                moments["ended_at"] = at + timedelta(seconds=rng.uniform(60, 900))
    agent = f"agent-{rng.randrange(200)}" if "assigned_at" in moments else None
    state = SessionState(
        session_id=f"bench-{n}",
        medium="chat" if is_chat else "call",
        session_type=rng.choice(CHAT_TYPES if is_chat else CALL_TYPES),
        queue_id=f"q-{rng.randrange(40)}",
        end_user_id=f"eu-{rng.randrange(20000)}",
        started_at=start,
        first_event_at=start,
        header_at=max([*moments.values(), *messages]),
        agent_id=agent,
        agent_name=agent and agent.replace("-", " ").title(),
        end_user_messages=len(messages),
        **moments,
    )
    return state, messages


def with_what_happened(state: SessionState, messages: list[datetime]) -> SessionState:
    """The state the consumer left under the default settings: the policy's verdict, replayed."""
    happened = replay_verdict(historic_session(state, messages, Outcome("waiting", "")), DEFAULT_RECORD_SETTINGS)
    if happened.outcome == DecisionKind.WAITING:
        return SessionState(**{**{f: getattr(state, f) for f in state.__slots__}, "last_wait_reason": happened.reason})
    return SessionState(**{**{f: getattr(state, f) for f in state.__slots__},
                           "record": "due" if happened.outcome == DecisionKind.RECORD_DUE else "skipped",
                           "record_reason": happened.reason, "record_decided_at": happened.at})


async def fill(dsn: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    session_rows, message_rows = [], []
    for n in range(count):
        state, messages = synthetic_session(n, rng, now)
        state = with_what_happened(state, messages)
        action = ("attached" if rng.random() < 0.1 else "created") if state.record == "due" else None
        seen = state.first_event_at
        session_rows.append((state.session_id, orjson.dumps(state.to_document()).decode(), state.record,
                             action, seen, seen))
        message_rows += [(state.session_id, f"{state.session_id}-m{i}", t, "end_user", "hello")
                         for i, t in enumerate(messages)]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "sessions", records=session_rows,
            columns=["session_id", "state", "record", "record_action", "created_at", "updated_at"])
        await conn.copy_records_to_table(
            "session_messages", records=message_rows,
            columns=["session_id", "event_id", "occurred_at", "sender", "text"])
        await conn.execute("ANALYZE sessions; ANALYZE session_messages")
    finally:
        await conn.close()
    print(f"filled {count} sessions and {len(message_rows)} end-user messages", flush=True)


async def _timed(label: str, what_if: WhatIf, proposed: RecordSettings,
                 timings: dict[str, list[tuple[float, float]]]):
    started, cpu = time.monotonic(), time.process_time()
    result = await what_if.run(proposed, 7)
    wall, used = time.monotonic() - started, time.process_time() - cpu
    timings.setdefault(label, []).append((wall, used))
    print(f"{label}: {wall:.2f} s, CPU {used:.2f} s (read {result.load_seconds:.2f} s, replay "
          f"{result.replay_seconds:.2f} s) for {result.report.sessions} sessions; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    return result


def _rss_mib() -> float:
    with open("/proc/self/status") as status:  # Linux: the bench's machine
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(frozen=True)
class WarmUp:
    wall: float
    cpu: float
    held_up: float  # the longest the event loop kept the consumer's stand-in waiting (wall time)
    held_up_p99: float
    cpu_between_turns: float  # the most CPU this process used between two turns of the stand-in
    rss_added_mib: float


def _gaps(samples: list[tuple[float, float]]) -> tuple[float, float, float]:
    walls = sorted(w for w, _ in samples)
    return walls[-1], walls[int(len(walls) * 0.99)], max(c for _, c in samples)


async def _warmed_in_background(what_if: WhatIf, warm: list[WarmUp], rows_per_chunk: int) -> None:
    """The service's background warm-up after a start (`WhatIf.keep_warm`), with a task that
    stands for the consumer asking for the event loop every millisecond: how long the loop
    kept it waiting (the longest and the 99th percentile, wall time, which the machine's
    load stretches; and the most CPU this process used in one wait, which it does not),
    the warm-up's wall and CPU time, and the process's resident memory it added."""
    samples: list[tuple[float, float]] = []
    done = asyncio.Event()

    async def consumer_stand_in() -> None:
        last, last_cpu = time.monotonic(), time.process_time()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now, now_cpu = time.monotonic(), time.process_time()
            samples.append((now - last, now_cpu - last_cpu))
            last, last_cpu = now, now_cpu

    # The stand-in alone for a second first: how long the machine's load alone keeps it waiting.
    ticking = asyncio.create_task(consumer_stand_in())
    await asyncio.sleep(1.0)
    done.set()
    await ticking
    alone = _gaps(samples)
    samples.clear()
    done.clear()
    rss_before = _rss_mib()
    ticking = asyncio.create_task(consumer_stand_in())
    started, cpu = time.monotonic(), time.process_time()
    await what_if.keep_warm(rows_per_chunk)
    wall, used = time.monotonic() - started, time.process_time() - cpu
    done.set()
    await ticking
    held_up, p99, cpu_between = _gaps(samples)
    rss = _rss_mib()
    warm.append(WarmUp(wall, used, held_up, p99, cpu_between, rss - rss_before))
    print(f"background warm-up after a start ({rows_per_chunk} rows a turn): {wall:.2f} s, CPU {used:.2f} s; "
          f"event loop held up at most {held_up * 1000:.0f} ms (99th percentile {p99 * 1000:.1f} ms, "
          f"{len(samples)} turns; at most {cpu_between * 1000:.1f} ms of CPU between two turns); RSS {rss:.0f} MiB "
          f"(+{rss - rss_before:.0f} MiB); load average {os.getloadavg()[0]:.1f}; the stand-in alone: at most "
          f"{alone[0] * 1000:.0f} ms (99th percentile {alone[1] * 1000:.1f} ms)", flush=True)


async def measure(url: str, dsn: str, runs: int, rows_per_chunk: int = WARM_ROWS_PER_CHUNK) -> None:
    """Wall time as the administrator waits for it, and this process's CPU time (the machine's
    load average shows how much the other work on it stretched the wall time). Three requests:
    the first what-if ever on the database (every session's replay input is worked out), the
    first after a start (the inputs are current: read and replayed), and the next one."""
    engine = build_engine(Settings(_env_file=None, database_url=url))
    timings: dict[str, list[tuple[float, float]]] = {}
    warm: list[WarmUp] = []
    try:
        for _ in range(runs):
            conn = await asyncpg.connect(dsn)
            await conn.execute("TRUNCATE whatif_inputs")
            await conn.close()
            first = await _timed("first what-if on this database", WhatIf(engine, "sandbox"), PROPOSED, timings)
            what_if = WhatIf(engine, "sandbox")  # a service just started: nothing in memory
            await _timed("first request after a start", what_if, PROPOSED, timings)
            await _timed("next request, other deciding settings", what_if,
                         RecordSettings(create_records_for_abandoned_calls=True), timings)
            del what_if
            what_if = WhatIf(engine, "sandbox")  # a service just started, with WHATIF_KEEP_WARM on (the default)
            await _warmed_in_background(what_if, warm, rows_per_chunk)
            await _timed("first request after a start, history warmed in the background", what_if, PROPOSED,
                         timings)
            del what_if
    finally:
        await engine.dispose()
    report = first.report
    print(f"sessions {report.sessions}; with every deciding setting changed: {report.changed} would end "
          f"differently, {report.depends_on_crm} depend on the CRM's state then")
    for label, values in timings.items():
        print(f"{label}: median {statistics.median(w for w, _ in values):.2f} s "
              f"(CPU {statistics.median(c for _, c in values):.2f} s) over {len(values)} runs")
    if warm:
        print(f"background warm-up: median {statistics.median(w.wall for w in warm):.2f} s (CPU "
              f"{statistics.median(w.cpu for w in warm):.2f} s); event loop held up at most "
              f"{max(w.held_up for w in warm) * 1000:.0f} ms (99th percentile at most "
              f"{max(w.held_up_p99 for w in warm) * 1000:.1f} ms; at most "
              f"{max(w.cpu_between_turns for w in warm) * 1000:.1f} ms of CPU between two turns); "
              f"RSS added {min(w.rss_added_mib for w in warm):.0f}-{max(w.rss_added_mib for w in warm):.0f} MiB")
    print("uptime:", os.popen("uptime").read().strip())


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--rows-per-chunk", type=int, default=WARM_ROWS_PER_CHUNK,
                        help="rows the background warm-up loads per turn of the event loop")
    args = parser.parse_args()
    server = normalize_database_url(
        os.environ.get("BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"))
    name = f"crm_records_whatif_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(asyncpg_dsn(server))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = server.rsplit("/", 1)[0] + "/" + name
    try:
        await asyncio.to_thread(migrate, Settings(_env_file=None, database_url=url))
        await fill(asyncpg_dsn(url), args.sessions, args.seed)
        await measure(url, asyncpg_dsn(url), args.runs, args.rows_per_chunk)
    finally:
        admin = await asyncpg.connect(asyncpg_dsn(server))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
