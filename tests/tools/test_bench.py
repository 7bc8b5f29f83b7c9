"""The bench's own parts: its traffic is valid and ordered, its yardstick consumer
applies a stream exactly once, its /proc readings and percentiles are right."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import defaultdict

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from app.adapters.db.engine import asyncpg_dsn
from app.domain.events import parse_event
from app.domain.session_types import SESSION_TYPES
from tests.helpers import create_topics
from tools.bench import bare
from tools.bench import traffic as synthetic
from tools.bench.phases import percentile
from tools.bench.procstat import CpuWindow, cpu_seconds, status_kb


def test_traffic_is_valid_whole_sessions_in_order():
    stream = synthetic.generate("t", sessions=450)
    assert len(stream.session_ids) == 450 and stream.calls + stream.chats == 450
    by_session: dict[str, list[str]] = defaultdict(list)
    for message in stream.messages:
        event = parse_event(message.value)  # the service's own validation accepts every one
        assert event.session.id == message.session_id == message.key.decode()
        assert message.event_id == event.event_id
        assert message.assigned == (event.event_type == "assigned")
        by_session[message.session_id].append(event.event_type)
    for kinds in by_session.values():
        assert kinds[0] == "queued" and kinds[-1] == "ended" and kinds.count("assigned") == 1
        assert kinds.index("assigned") < kinds.index("connected")
    # Interleaved: the first two messages are two different sessions' `queued`.
    assert stream.messages[0].session_id != stream.messages[1].session_id
    types = {parse_event(m.value).session.session_type for m in stream.messages}
    assert types == set(SESSION_TYPES)
    assert len({m.event_id for m in stream.messages}) == len(stream.messages)


def test_traffic_for_a_number_of_events():
    stream = synthetic.generate("t", min_events=1000)
    assert 1000 <= len(stream.messages) < 1100  # whole sessions, about 8 events each


def test_percentile_is_nearest_rank():
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0


def test_cpu_window_counts_this_process():
    window = CpuWindow({"me": [os.getpid()]}, database="no_such_database").start()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    window.stop()
    assert 0.2 <= window.used["me"] <= 1.0
    assert window.used["postgres"] == 0.0
    assert cpu_seconds(os.getpid()) > 0 and status_kb(os.getpid(), "VmHWM") > 0


async def test_bare_consumer_applies_a_stream_once(database_url, kafka_bootstrap):
    topic = f"bare-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_bootstrap, [topic])
    stream = synthetic.generate("bare", sessions=30)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for message in stream.messages + stream.messages[:10]:  # ten delivered twice
            await producer.send(topic, key=message.key, value=message.value)
        await producer.flush()
    finally:
        await producer.stop()
    dsn = asyncpg_dsn(database_url)
    cpu = CpuWindow({"bench": [os.getpid()]}, database="")
    result = await asyncio.wait_for(
        bare.run(kafka_bootstrap, topic, f"g-{uuid.uuid4().hex[:6]}", dsn, len(stream.messages) + 10, cpu,
                 max_poll_records=50, fetch_max_wait_ms=20),
        timeout=60,
    )
    assert result.events == len(stream.messages)  # the repeats were deduplicated
    db = await asyncpg.connect(dsn)
    try:
        rows = {r["session_id"]: orjson.loads(r["state"]) for r in await db.fetch("SELECT * FROM bare_sessions")}
    finally:
        await db.execute("DROP TABLE bare_events, bare_sessions")  # not the service's schema
        await db.close()
    assert set(rows) == set(stream.session_ids)
    counts = defaultdict(int)
    for message in stream.messages:
        counts[message.session_id] += 1
    # Counted across fetches; a repeat may be folded in with new events of its fetch.
    assert all(counts[s] <= rows[s]["events"] <= counts[s] + 1 for s in rows)


def test_a_stream_applied_in_one_fetch_has_no_rate():
    import math

    window = CpuWindow({}, database="")
    assert math.isnan(bare.BareResult(100, 0.0, window).events_per_second)
    assert bare.BareResult(100, 0.5, window).events_per_second == 200.0


def test_the_probe_waits_ten_times_its_last_look_and_never_less_than_the_poll():
    from tools.bench.phases import POLL_SECONDS, pause_after

    assert pause_after(0.001) == POLL_SECONDS
    assert pause_after(0.045) == pytest.approx(0.45)


async def test_the_instruction_count_runs_the_consumers_path_over_every_event():
    """What `tools.bench.instructions` runs under valgrind, without it: every event of
    both streams applied (none refused, none taken for a duplicate)."""
    from tools.bench import instructions

    assert await instructions._apply(2, 333) == 2 * len(synthetic.generate("i0", sessions=instructions.SESSIONS)
                                                        .messages)


async def test_the_write_replay_runs_every_captured_write_again_and_times_each_part():
    """`tools.bench.pg_write`: every event's write captured, and each replay (on emptied
    tables) runs all of them again without a conflict, with a time for each part."""
    from tools.bench import pg_write

    stream_events = len(synthetic.generate("pgw", sessions=12).messages)
    applied, writes, best = await pg_write.measure(sessions=12, batch=16, rounds=2)
    assert applied == stream_events
    assert writes == -(-stream_events // 16)  # one write a batch, none lost to the logger
    assert best.milliseconds > 0
    assert set(best.by_part) == {"part_e", "part_s", "part_m", "part_d", "part_o"}
