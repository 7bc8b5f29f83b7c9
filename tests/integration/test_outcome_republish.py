"""An outcome event whose publisher died (or lost the database) between publishing it and
marking its outbox row done is not published a second time by the worker that claims the
row after the lease; one whose publisher died before publishing it is published once.
The chaos run found `record.skipped` twice for 7 sessions (50 kills, 3 PostgreSQL
restarts, seed 5151) before this."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

from app.adapters.db import outbox_repo, trace_repo
from app.adapters.db.outbox_repo import NewOutboxRow
from app.adapters.kafka.producer import KafkaPublisher
from app.domain.kinds import OutcomeEventType
from app.domain.outcome import OutcomeEvent
from tests.helpers import driver_connection, eventually, run_in_process
from tests.integration.kafka_helpers import read_all


def _skipped(session_id: str) -> OutcomeEvent:
    return OutcomeEvent(OutcomeEventType.RECORD_SKIPPED, session_id, "sandbox", None, None,
                        "call ended without being assigned to an agent", datetime(2026, 11, 23, 13, 5, tzinfo=UTC))


async def _claimed_by_a_worker_that_dies(engine, session_id: str) -> None:
    async with engine.begin() as conn:
        await outbox_repo.enqueue(conn, [NewOutboxRow(f"skipped:sandbox:{session_id}", "publish", session_id, None,
                                                      _skipped(session_id).payload())])
        assert len(await outbox_repo.claim(await driver_connection(conn), 10, lease_seconds=0.5)) == 1


async def _done(engine, session_id: str) -> bool:
    async with engine.connect() as conn:
        return [r.status for r in await trace_repo.outbox_rows(conn, session_id)] == ["done"]


async def _outcomes_after_the_service_takes_over(engine, settings, session_id: str) -> list[bytes]:
    async with run_in_process(settings):
        await eventually(lambda: _done(engine, session_id), timeout=30)
    messages = await read_all(settings.kafka_bootstrap_servers, settings.kafka_output_topic, expect=10, timeout=3)
    return [m.key for m in messages]


async def test_an_event_published_before_its_publisher_died_is_not_published_again(clean_db, make_settings):
    settings = make_settings()
    await _claimed_by_a_worker_that_dies(clean_db, "died-after-publish")
    publisher = KafkaPublisher(settings)
    await publisher.start()
    try:  # what the dead worker got out before it died; another session's event besides
        await publisher.publish_outcome("other-session", _skipped("other-session"))
        await publisher.publish_outcome("died-after-publish", _skipped("died-after-publish"))
    finally:
        await publisher.stop()
    await asyncio.sleep(0.6)  # its lease runs out
    keys = await _outcomes_after_the_service_takes_over(clean_db, settings, "died-after-publish")
    assert keys.count(b"died-after-publish") == 1


async def test_an_event_its_publisher_died_before_publishing_is_published_once(clean_db, make_settings):
    settings = make_settings()
    await _claimed_by_a_worker_that_dies(clean_db, "died-before-publish")
    publisher = KafkaPublisher(settings)
    await publisher.start()
    try:  # the same session's record event is on the topic: not the same outcome
        await publisher.publish_outcome("died-before-publish", replace(_skipped("died-before-publish"),
                                                                       event_type=OutcomeEventType.RECORD_CREATED,
                                                                       record_id="7"))
    finally:
        await publisher.stop()
    await asyncio.sleep(0.6)
    keys = await _outcomes_after_the_service_takes_over(clean_db, settings, "died-before-publish")
    assert keys == [b"died-before-publish", b"died-before-publish"]
