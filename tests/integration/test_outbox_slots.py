"""`OUTBOX_CONCURRENCY` bounds the rows whose CRM work is in flight: a row whose CRM work
is done gives its slot to the next row while its own bookkeeping and outcome events
finish. Found by `make bench` at 1,000 events/s: rows held their slots through the
bookkeeping and the broker's answer, slots ran out, and due rows waited for a claim."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from app.adapters.crm.sandbox import SandboxAdapter
from app.domain.outcome import OutcomeEvent
from app.entrypoints.worker import OutboxWorker
from app.service.ingest import PartitionIngest
from app.service.outbox import OutboxRunner
from app.settings import Settings
from tests.factories import call_events
from tests.integration.test_outbox_wake import _message


async def _records(engine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT count(*) FROM sandbox_records"))).scalar_one()


async def test_a_row_whose_crm_work_is_done_frees_its_slot_before_its_events_are_published(clean_db):
    settings = Settings(_env_file=None, outbox_concurrency=1, outbox_poll_seconds=0.1)
    broker_answers = asyncio.Event()  # the broker holds the first outcome event's answer
    published: list[str] = []

    async def slow_publish(session_id: str, event: OutcomeEvent) -> None:
        await broker_answers.wait()
        published.append(session_id)

    worker = OutboxWorker(settings, clean_db,
                          OutboxRunner(clean_db, SandboxAdapter(clean_db), slow_publish, settings))

    async def no_listener():
        return None

    worker._listen = no_listener  # type: ignore[method-assign]
    ingest = PartitionIngest(clean_db, "sandbox")
    messages = [event for n in (1, 2) for event in call_events(f"slot-{n}", end_user_id=f"eu-slot-{n}")[:2]]
    await ingest.apply([_message(n, e) for n, e in enumerate(messages)])
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(10):
            while await _records(clean_db) < 2:  # the second record, while the first row publishes
                await asyncio.sleep(0.02)
        assert published == []
        broker_answers.set()
        async with asyncio.timeout(10):
            while len(published) < 2:
                await asyncio.sleep(0.02)
    finally:
        broker_answers.set()
        stop.set()
        await running
    assert sorted(published) == ["slot-1", "slot-2"]
