"""The example sessions, end to end: broker -> consumer -> PostgreSQL -> outbox -> sandbox CRM."""

from __future__ import annotations

from pathlib import Path

import orjson
from sqlalchemy import func, select

from app.adapters.db.schema import processed_events, sandbox_notes, sandbox_records
from tests.helpers import eventually, run_in_process
from tests.integration.kafka_helpers import publish, read_all

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_documents() -> list[dict]:
    documents = []
    for path in sorted(EXAMPLES.glob("*.jsonl")):
        documents += [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return documents


async def test_example_streams_make_one_record_per_due_session(clean_db, make_settings, kafka_bootstrap, topics):
    documents = example_documents()
    settings = make_settings()
    async with run_in_process(settings) as service:
        await publish(kafka_bootstrap, topics.events, documents)

        async def two_records_with_notes():
            async with clean_db.connect() as conn:
                notes = (await conn.execute(select(func.count()).select_from(sandbox_notes))).scalar()
                records = (await conn.execute(select(sandbox_records.c.external_id))).scalars().all()
            return sorted(records) if notes == 2 else None

        # The call and the assigned chat get records; the short abandoned chat does not.
        assert await eventually(two_records_with_notes) == ["call-1001", "chat-2001"]
        async with service.client() as client:
            trace = (await client.get("/api/sessions/chat-2002")).json()
        assert trace["record"]["progress"] == "skipped"
        assert "4 s after queueing" in trace["record"]["reason"]

    outcomes = await read_all(kafka_bootstrap, topics.output, expect=5)
    kinds = sorted((m.key.decode(), orjson.loads(m.value)["event_type"]) for m in outcomes)
    assert kinds == [
        ("call-1001", "record.created"),
        ("call-1001", "record.updated"),
        ("chat-2001", "record.created"),
        ("chat-2001", "record.updated"),
        ("chat-2002", "record.skipped"),
    ]
    async with clean_db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(processed_events))).scalar() == len(documents)
