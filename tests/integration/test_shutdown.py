"""SIGTERM in the middle of a burst (issue 10, item 5): the replica stops fetching,
commits the offsets of what it applied, hands back the outbox rows it cannot finish in
time, and exits within SHUTDOWN_TIMEOUT_SECONDS. A replica started after it finishes
everything: no event lost, no record or note made twice."""

from __future__ import annotations

import asyncio
import collections
import signal
import time

from sqlalchemy import func, select

from app.adapters.db.schema import outbox, processed_events, sandbox_notes, sandbox_records
from tests.factories import call_events
from tests.helpers import eventually
from tests.integration.kafka_helpers import publish
from tests.integration.service_process import ServiceProcess
from tests.integration.test_consumer import _committed


async def _scalar(engine, statement):
    async with engine.connect() as conn:
        return (await conn.execute(statement)).scalar()


async def _at_least(engine, statement, minimum: int):
    value = await _scalar(engine, statement)
    return value if value >= minimum else None


async def test_sigterm_mid_burst_loses_nothing_and_makes_nothing_twice(
    clean_db, make_settings, kafka_bootstrap, topics, tmp_path
):
    deadline = 6.0
    # The CRM answers slowly, so rows are still in flight at SIGTERM and must be handed
    # back; a lease of 120 s means only that hand-back lets the next replica do them soon.
    slow = make_settings(sandbox_latency_ms=20_000, shutdown_timeout_seconds=deadline, outbox_lease_seconds=120,
                         kafka_max_poll_records=20)
    documents = []
    for n in range(40):
        documents += call_events(f"term-{n}", end_user_id=f"term-eu-{n}", end_user_phone=f"+1555200{n:04d}")
    log = tmp_path / "service.log"
    service = ServiceProcess(slow, log).start()
    try:
        await service.wait_ready()

        async def publish_slowly():
            for start in range(0, len(documents), 8):
                await publish(kafka_bootstrap, topics.events, documents[start:start + 8])
                await asyncio.sleep(0.1)

        publisher = asyncio.create_task(publish_slowly())
        in_flight = select(func.count()).select_from(outbox).where(outbox.c.status == "in_progress")
        await eventually(lambda: _at_least(clean_db, in_flight, 1), timeout=30, interval=0.05)
        service.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await eventually(lambda: service.process.poll() is not None, timeout=deadline + 10, interval=0.05)
        took = time.monotonic() - signalled
        print(f"exited {took:.1f} s after SIGTERM")
        await publisher
        output = log.read_text()
        assert service.process.returncode == 0, output[-3000:]
        assert took <= deadline + 1.0, f"exited {took:.1f} s after SIGTERM"
        assert "released" in output and "unfinished outbox rows" in output, output[-3000:]

        # Offsets: exactly what was applied is committed (each message is one event).
        applied = await _scalar(clean_db, select(func.count()).select_from(processed_events))
        assert 0 < applied < len(documents), "SIGTERM came after the burst"
        assert await _committed(slow, applied) == applied
        assert await _scalar(clean_db, in_flight) == 0  # nothing left holding a lease

        fast = slow.model_copy(update={"sandbox_latency_ms": 0})
        service = ServiceProcess(fast, log).start()
        await service.wait_ready()
        await eventually(lambda: _exactly(clean_db, select(func.count()).select_from(processed_events),
                                          len(documents)), timeout=60)
        unfinished = select(func.count()).select_from(outbox).where(outbox.c.status != "done")
        await eventually(lambda: _exactly(clean_db, unfinished, 0), timeout=30)
    finally:
        service.stop()

    async with clean_db.connect() as conn:
        records = collections.Counter((await conn.execute(select(sandbox_records.c.external_id))).scalars())
        notes = collections.Counter((await conn.execute(select(sandbox_notes.c.record_id))).scalars())
    assert records == {f"term-{n}": 1 for n in range(40)}
    assert len(notes) == 40 and set(notes.values()) == {1}


async def _exactly(engine, statement, expected: int) -> bool:
    return await _scalar(engine, statement) == expected
