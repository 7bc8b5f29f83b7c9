"""A CRM write that timed out may still be under way at the CRM: the retry must not look
for it (and, not finding it, write it again) before it can have landed. Found by the
chaos run: Zendesk answered 5 s late with a 4 s timeout, the end-of-session note was
retried 0.4 s after the timeout, looked, found nothing, and the first write landed
after the second: two notes."""

from __future__ import annotations

import asyncio

from app.adapters.crm.factory import build_crm_adapter
from app.domain.outcome import OutcomeEvent
from app.entrypoints.worker import OutboxWorker
from app.service.ingest import PartitionIngest
from app.service.outbox import OutboxRunner
from app.settings import Settings
from tests.factories import call_events
from tests.integration.crm_backends import ZendeskBackend
from tests.integration.test_outbox_wake import _message

CRM_TIMEOUT = 0.3
ANSWER_DELAY = 0.5  # longer than the timeout: the first write lands after it timed out


def _summary_notes(backend: ZendeskBackend, ticket_id) -> list[dict]:
    return [n for n in backend.fake.notes_for(ticket_id) if "[ref ended_note:zendesk:late-note]" in n["body"]]


async def test_a_timed_out_note_write_is_not_written_again_while_it_may_still_land(clean_db):
    backend = ZendeskBackend()
    backend.start()
    settings = Settings(_env_file=None, **backend.settings(), crm_timeout_seconds=CRM_TIMEOUT,
                        outbox_backoff_base_seconds=0.01, outbox_poll_seconds=0.05)
    crm = build_crm_adapter(settings, engine=clean_db)

    async def publish(session_id: str, event: OutcomeEvent) -> None:
        return None

    worker = OutboxWorker(settings, clean_db, OutboxRunner(clean_db, crm, publish, settings))

    async def no_listener():
        return None

    worker._listen = no_listener  # type: ignore[method-assign]
    ingest = PartitionIngest(clean_db, "zendesk", on_outbox_rows=worker.wake)
    events = call_events("late-note", end_user_id="eu-late", end_user_phone="+15550001111")
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await ingest.apply([_message(n, e) for n, e in enumerate(events[:2])])  # the record
        async with asyncio.timeout(10):
            while not backend.fake.records():
                await asyncio.sleep(0.02)
        [ticket] = backend.fake.records()
        backend.fake.set_faults(delay_seconds=ANSWER_DELAY)
        await ingest.apply([_message(n, e) for n, e in enumerate(events[2:], start=2)])  # the note
        await asyncio.sleep(0.15)  # the note's first write is at the CRM, answered late
        backend.fake.set_faults(delay_seconds=0.0)
        async with asyncio.timeout(10):
            while not _summary_notes(backend, ticket["id"]):
                await asyncio.sleep(0.02)
        await asyncio.sleep(2 * ANSWER_DELAY + CRM_TIMEOUT)  # any second write has landed by now
        notes = _summary_notes(backend, ticket["id"])
    finally:
        stop.set()
        await running
        await crm.aclose()
        backend.stop()
    assert len(notes) == 1, [(r.method, r.path, r.status) for r in backend.fake.requests]
