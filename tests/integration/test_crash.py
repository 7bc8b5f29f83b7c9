"""SIGKILL the service in the middle of a batch and in the middle of CRM calls, restart
it, and find every session with exactly one record and no event lost."""

from __future__ import annotations

import asyncio
import collections

import orjson
import pytest
from sqlalchemy import func, select

from app.adapters.db.schema import outbox, processed_events, sessions
from tests.factories import call_events, chat_events
from tests.helpers import eventually
from tests.integration.crm_backends import SandboxBackend, ZendeskBackend
from tests.integration.kafka_helpers import publish
from tests.integration.service_process import ServiceProcess


async def scalar(engine, statement):
    async with engine.connect() as conn:
        return (await conn.execute(statement)).scalar()


@pytest.fixture(params=["sandbox", "zendesk"])
def crash_crm(request, clean_db):
    if request.param == "sandbox":
        # Half the answer time comes after the write: a kill then leaves a record made
        # but not marked done.
        backend, overrides = SandboxBackend(clean_db), {"sandbox_latency_ms": 300}
    else:
        backend = ZendeskBackend()
        overrides = {}
    backend.start()
    if request.param == "zendesk":
        # Tickets are made at once but answered late: the same window, in a vendor's shape.
        backend.fake.create_answer_delay_seconds = 0.3
        backend.fake.set_faults(delay_seconds=0.05)
    yield backend, {**backend.settings(), **overrides}
    backend.stop()


async def test_sigkill_mid_batch_and_mid_crm_call(clean_db, make_settings, kafka_bootstrap, topics, tmp_path,
                                                  crash_crm):
    crm, overrides = crash_crm
    settings = make_settings(**overrides, outbox_lease_seconds=2.0, kafka_max_poll_records=40,
                             outbox_concurrency=8)
    documents = []
    for n in range(40):
        documents += call_events(f"crash-call-{n}", end_user_id=f"eu-call-{n}", end_user_phone=f"+1555000{n:04d}")
    for n in range(16):
        documents += chat_events(f"crash-chat-{n}", end_user_id=f"eu-chat-{n}", end_user_phone=None,
                                 end_user_email=f"chat{n}@example.com")
    session_ids = sorted({d["session"]["id"] for d in documents})
    log = tmp_path / "service.log"
    service = ServiceProcess(settings, log).start()
    try:
        await service.wait_ready()

        async def publish_slowly():
            for start in range(0, len(documents), 10):
                await publish(kafka_bootstrap, topics.events, documents[start:start + 10])
                await asyncio.sleep(0.1)

        publisher = asyncio.create_task(publish_slowly())
        # Kill 1: while events are still being consumed.
        await eventually(lambda: _at_least(clean_db, select(func.count()).select_from(processed_events), 30),
                         interval=0.02)
        service.kill()
        applied_at_first_kill = await scalar(clean_db, select(func.count()).select_from(processed_events))
        await publisher
        assert applied_at_first_kill < len(documents), "the first kill came too late to hit a batch"

        service = ServiceProcess(settings, log).start()
        await service.wait_ready()
        # Kill 2: while CRM calls are in flight.
        in_flight = select(func.count()).select_from(outbox).where(outbox.c.status == "in_progress",
                                                                   outbox.c.kind == "record")
        await eventually(lambda: _at_least(clean_db, in_flight, 1), interval=0.02)
        service.kill()

        service = ServiceProcess(settings, log).start()
        await service.wait_ready()
        # Every event applied first (only then do all outbox rows exist), then all rows done.
        await eventually(lambda: _exactly(clean_db, select(func.count()).select_from(processed_events),
                                          len(documents)), timeout=60)
        unfinished = select(func.count()).select_from(outbox).where(outbox.c.status != "done")
        await eventually(lambda: _exactly(clean_db, unfinished, 0), timeout=60)
    finally:
        service.stop()

    records = await crm.records()
    per_session = collections.Counter(r.session_id for r in records)
    assert sorted(per_session) == session_ids
    assert set(per_session.values()) == {1}, {s: c for s, c in per_session.items() if c != 1}
    async with clean_db.connect() as conn:
        rows = (await conn.execute(select(sessions.c.session_id, sessions.c.record_id, sessions.c.state))).all()
    assert len(rows) == len(session_ids)
    by_session = {r.session_id: r for r in records}
    for row in rows:
        assert row.record_id == by_session[row.session_id].record_id
        expected_events = sum(1 for d in documents if d["session"]["id"] == row.session_id)
        assert row.state["events_applied"] == expected_events, orjson.dumps(row.state)


async def _at_least(engine, statement, minimum: int):
    value = await scalar(engine, statement)
    return value if value >= minimum else None


async def _exactly(engine, statement, expected: int):
    return await scalar(engine, statement) == expected
