"""One trace from a published `assigned` event to the CRM's create request and the
record event on the output topic, through the outbox row (in-memory span exporter)."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select

from app.adapters.db.schema import outbox
from app.observability import tracing
from tests.factories import call_events
from tests.helpers import eventually, run_in_process
from tests.integration.crm_backends import ZendeskBackend
from tests.integration.kafka_helpers import read_all

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert tracing.setup_tracing(None, provider=provider)
    yield exporter
    tracing.shutdown_tracing()


async def test_one_trace_from_the_assigned_event_to_the_crm_create_request(spans, clean_db, make_settings,
                                                                           kafka_bootstrap, topics):
    zendesk = ZendeskBackend()
    zendesk.start()
    events = call_events("traced-call-1")
    try:
        async with run_in_process(make_settings(**zendesk.settings())) as service:
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            try:
                for document in events:
                    headers = None
                    if document["event_type"] == "assigned":
                        headers = [("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01".encode())]
                    await producer.send_and_wait(topics.events, key=b"traced-call-1",
                                                 value=orjson.dumps(document), headers=headers)
            finally:
                await producer.stop()

            async def created():
                return await zendesk.record_of("traced-call-1")

            await eventually(created, timeout=30)
            async with clean_db.connect() as conn:
                stored = (await conn.execute(
                    select(outbox.c.trace_context).where(outbox.c.kind == "record"))).scalar_one()
            assert stored.startswith(f"00-{TRACE_ID}-")
            async with service.client() as client:  # the HTTP API is instrumented too
                assert (await client.get("/api/sessions/traced-call-1")).status_code == 200
    finally:
        zendesk.stop()

    finished = spans.get_finished_spans()
    in_trace = [s for s in finished if format(s.context.trace_id, "032x") == TRACE_ID]
    by_id = {s.context.span_id: s for s in in_trace}
    create_requests = [
        s
        for s in in_trace
        if s.kind.name == "CLIENT"
        and s.attributes.get("http.request.method", s.attributes.get("http.method")) == "POST"
        and str(s.attributes.get("url.full", s.attributes.get("http.url", ""))).endswith("/api/v2/tickets")
    ]
    assert create_requests, [s.name for s in in_trace]
    # Walk up from the create request: CRM operation, outbox row, the event's span, the
    # published message.
    chain = []
    span = create_requests[0]
    while span is not None:
        chain.append(span.name)
        parent = span.parent.span_id if span.parent else None
        if parent == int(PARENT_SPAN, 16):
            chain.append("published assigned event")
            break
        span = by_id.get(parent)
    assert chain[-1] == "published assigned event", chain
    assert "crm create_record" in chain and "outbox record" in chain, chain
    assert any(name.startswith("process ") for name in chain), chain
    # The instrumented SQLAlchemy statements of the outbox row are in the same trace.
    outbox_spans = {s.context.span_id for s in in_trace if s.name == "outbox record"}
    assert any(s.attributes.get("db.system", s.attributes.get("db.system.name")) == "postgresql"
               and s.parent and s.parent.span_id in outbox_spans for s in in_trace), [s.name for s in in_trace]
    assert any(s.kind.name == "SERVER" and s.name == "GET /api/sessions/{session_id}" for s in finished)
    # The batch span links the event's span.
    assert any(s.name == "apply batch" and s.links for s in finished)

    outcomes = await read_all(kafka_bootstrap, topics.output, expect=2)
    created_event = next(m for m in outcomes if orjson.loads(m.value)["event_type"] == "record.created")
    header = dict(created_event.headers)["traceparent"].decode()
    assert header.split("-")[1] == TRACE_ID
