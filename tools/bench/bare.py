"""The yardstick: a bare batched consumer on the same broker, database and stream.

It does the least a correct consumer of this stream must do, and nothing else: parse
each event, then per fetch one statement that inserts the event ids into a dedup table
and upserts one state row per session whose events were new, commit, then commit the
offsets. The service's rate is reported as a ratio to this one, measured in the same
run, so the figure means the same on a quiet machine and on a busy one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer

from tools.bench.procstat import CpuWindow

# Its own tables in the bench database: the service's are not touched.
_SETUP = """
CREATE TABLE IF NOT EXISTS bare_events (
    event_id text PRIMARY KEY, session_id text NOT NULL, first_seen_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS bare_sessions (
    session_id text PRIMARY KEY, state jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
TRUNCATE bare_events, bare_sessions;
"""

# One statement per fetch: dedup rows, then one state row per session with a new event.
# (A fetch that holds both new and repeated events of one session folds the repeats into
# the state too: the yardstick does not pay for per-event filtering.)
_APPLY = """
WITH new AS (
    INSERT INTO bare_events (event_id, session_id)
    SELECT * FROM unnest($1::text[], $2::text[])
    ON CONFLICT (event_id) DO NOTHING
    RETURNING session_id
)
INSERT INTO bare_sessions (session_id, state)
SELECT s.id, s.state::jsonb FROM unnest($3::text[], $4::text[]) AS s(id, state)
WHERE s.id IN (SELECT session_id FROM new)
ON CONFLICT (session_id) DO UPDATE
SET state = EXCLUDED.state || jsonb_build_object('events', (bare_sessions.state->>'events')::int
                                                           + (EXCLUDED.state->>'events')::int),
    updated_at = now()
"""

_SPAN = "SELECT count(*), extract(epoch FROM max(first_seen_at) - min(first_seen_at)) FROM bare_events"


@dataclass(frozen=True, slots=True)
class BareResult:
    events: int
    seconds: float  # first to last fetch applied (transaction starts, as for the service)
    cpu: CpuWindow

    @property
    def events_per_second(self) -> float:
        # A stream consumed in one fetch has no span to divide by: no rate (too short).
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def _fold(values: list[bytes]) -> tuple[list[str], list[str], list[str], list[str]]:
    event_ids, event_sessions = [], []
    states: dict[str, dict] = {}
    for value in values:
        event = orjson.loads(value)
        session_id = event["session"]["id"]
        event_ids.append(event["event_id"])
        event_sessions.append(session_id)
        state = states.setdefault(session_id, {"events": 0})
        state["events"] += 1
        state["last_event"] = event["event_type"]
        state["at"] = event["occurred_at"]
    return event_ids, event_sessions, list(states), [orjson.dumps(s).decode() for s in states.values()]


async def run(bootstrap: str, topic: str, group: str, database_url: str, events: int, cpu: CpuWindow,
              *, max_poll_records: int, fetch_max_wait_ms: int, timeout: float = 300.0) -> BareResult:
    """Consume `events` events of `topic` from the start, in a new consumer group."""
    db = await asyncpg.connect(database_url)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", max_poll_records=max_poll_records, fetch_max_wait_ms=fetch_max_wait_ms,
    )
    try:
        await db.execute(_SETUP)
        await consumer.start()
        cpu.start()
        seen = 0
        deadline = time.perf_counter() + timeout
        while seen < events:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"bare consumer: {seen} of {events} events after {timeout:.0f} s")
            batches = await consumer.getmany(timeout_ms=200, max_records=max_poll_records)
            values = [m.value for messages in batches.values() for m in messages]
            if not values:
                continue
            await db.execute(_APPLY, *_fold(values))
            await consumer.commit({tp: messages[-1].offset + 1 for tp, messages in batches.items()})
            seen += len(values)
        cpu.stop()
        count, seconds = await db.fetchrow(_SPAN)
        return BareResult(int(count), float(seconds or 0.0), cpu)
    finally:
        await consumer.stop()
        await db.close()
