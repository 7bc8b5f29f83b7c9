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


async def _no_publishing(session_id: str, event: OutcomeEvent) -> None:
    return None


async def _record_made(backend: ZendeskBackend, ingest: PartitionIngest, events: list[dict]) -> dict:
    """Apply the session's first two events and wait for its ticket."""
    await ingest.apply([_message(n, e) for n, e in enumerate(events[:2])])
    async with asyncio.timeout(10):
        while not backend.fake.records():
            await asyncio.sleep(0.02)
    [ticket] = backend.fake.records()
    return ticket


async def test_a_timed_out_note_write_is_not_written_again_while_it_may_still_land(clean_db):
    backend = ZendeskBackend()
    backend.start()
    settings = Settings(_env_file=None, **backend.settings(), crm_timeout_seconds=CRM_TIMEOUT,
                        outbox_backoff_base_seconds=0.01, outbox_poll_seconds=0.05)
    crm = build_crm_adapter(settings, engine=clean_db)
    worker = OutboxWorker(settings, clean_db, OutboxRunner(clean_db, crm, _no_publishing, settings))

    async def no_listener():
        return None

    worker._listen = no_listener  # type: ignore[method-assign]
    ingest = PartitionIngest(clean_db, "zendesk", on_outbox_rows=worker.wake)
    events = call_events("late-note", end_user_id="eu-late", end_user_phone="+15550001111")
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        ticket = await _record_made(backend, ingest, events)
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



async def test_a_row_handed_back_at_shutdown_is_not_written_again_while_its_write_may_still_land(clean_db):
    # A replica stopping hands its unfinished rows back. One whose write was under way at
    # the CRM (cancelled here, answered there later) must wait as a timed-out write waits:
    # another replica claiming it at once looked, found nothing, and wrote it again.
    backend = ZendeskBackend()
    backend.start()
    settings = Settings(_env_file=None, **backend.settings(), crm_timeout_seconds=2 * ANSWER_DELAY + 0.5,
                        shutdown_timeout_seconds=0.5, outbox_poll_seconds=0.05)
    crm = build_crm_adapter(settings, engine=clean_db)

    def replica() -> OutboxWorker:
        return OutboxWorker(settings, clean_db, OutboxRunner(clean_db, crm, _no_publishing, settings))

    events = call_events("late-note", end_user_id="eu-handed-back", end_user_phone="+15550002222")
    ingest = PartitionIngest(clean_db, "zendesk")
    stopping, other = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(replica().run(stopping))
    second: asyncio.Task | None = None
    try:
        ticket = await _record_made(backend, ingest, events)
        backend.fake.set_faults(delay_seconds=2 * ANSWER_DELAY)  # the note lands 1 s after it was sent
        await ingest.apply([_message(n, e) for n, e in enumerate(events[2:], start=2)])  # the note
        await asyncio.sleep(0.3)  # the note's write is at the CRM
        stopping.set()
        await first  # handed back within its shutdown grace
        backend.fake.set_faults(delay_seconds=0.0)
        second = asyncio.create_task(replica().run(other))
        async with asyncio.timeout(10):
            while not _summary_notes(backend, ticket["id"]):
                await asyncio.sleep(0.02)
        await asyncio.sleep(settings.crm_timeout_seconds + 1)  # any second write has landed by now
        notes = _summary_notes(backend, ticket["id"])
    finally:
        stopping.set()
        other.set()
        if second is not None:
            await second
        await crm.aclose()
        backend.stop()
    assert len(notes) == 1, [(r.method, r.path, r.status) for r in backend.fake.requests]
