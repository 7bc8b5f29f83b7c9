"""The consumer wakes its own replica's worker when a batch it committed added outbox rows,
so the worker claims them without waiting for PostgreSQL's notification or its poll."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka.structs import ConsumerRecord

from app.adapters.crm.sandbox import SandboxAdapter
from app.domain.outcome import OutcomeEvent
from app.entrypoints.worker import OutboxWorker
from app.service.ingest import PartitionIngest
from app.service.outbox import OutboxRunner
from app.settings import Settings
from tests.factories import call_events


def _message(offset: int, document: dict) -> ConsumerRecord:
    return ConsumerRecord("events", 0, offset, 0, 0, None, orjson.dumps(document), None, 0, 0, [])


async def test_only_a_batch_that_added_outbox_rows_wakes_the_worker(clean_db):
    woken: list[int] = []
    ingest = PartitionIngest(clean_db, "sandbox", on_outbox_rows=lambda: woken.append(1))
    queued, assigned = call_events("call-wake", end_user_id="eu-wake")[:2]
    assert await ingest.apply([_message(0, queued)]) == []
    assert woken == []  # queued: nothing to do yet
    assert await ingest.apply([_message(1, assigned)]) == []
    assert woken == [1]  # assigned: the record row


async def test_a_woken_worker_claims_at_once_without_notifications_or_polls(clean_db):
    settings = Settings(_env_file=None, outbox_poll_seconds=60)
    published: list[dict] = []

    async def publish(session_id: str, event: OutcomeEvent) -> None:
        published.append(event.payload())

    worker = OutboxWorker(settings, clean_db, OutboxRunner(clean_db, SandboxAdapter(clean_db), publish, settings))

    async def no_listener():
        return None  # no LISTEN connection: only the in-process wake (or a 60 s poll) can start a claim

    worker._listen = no_listener  # type: ignore[method-assign]
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.3)  # the worker's first claim found nothing; it now sleeps up to 60 s
    ingest = PartitionIngest(clean_db, "sandbox", on_outbox_rows=worker.wake)
    await ingest.apply([_message(n, e) for n, e in enumerate(call_events("call-woken", end_user_id="eu-woken")[:2])])
    async with asyncio.timeout(10):
        while not published:
            await asyncio.sleep(0.02)
    assert [e["event_type"] for e in published] == ["record.created"]
    stop.set()
    await running
