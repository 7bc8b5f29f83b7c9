"""OpenTelemetry traces: from the Kafka event to the CRM call and the outcome event.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set: then nothing is instrumented, no span
is made and no header is read or written, so the hot path costs what it did (measured
in docs/bench.md). On, it exports with OTLP (http/protobuf; the standard `OTEL_*`
variables tune the exporter) and:

- continues the W3C `traceparent` of each incoming Kafka message: every event gets a
  span in its producer's trace, linked from the span of the partition batch that
  applied it;
- writes that span's context into the outbox rows the event made, so the CRM call,
  made later and perhaps by another replica, joins the same trace;
- makes a span per outbox row and per CRM operation, around the httpx client spans of
  the instrumentation package (and SQLAlchemy's, and FastAPI's for the HTTP API);
- puts the context on the record events published to the output topic (`traceparent`
  header).

The aiokafka instrumentation package is not used: it appends a second `traceparent` to
every dead letter (which must keep its original headers as they were) and makes a span
per received record; the few lines here do the propagation the service needs."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

_PROPAGATOR = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"


@dataclass
class _State:
    enabled: bool = False
    tracer: Tracer = field(default_factory=trace.NoOpTracer)
    provider: Any = None
    instrumentors: list[Any] = field(default_factory=list)


_state = _State()


def enabled() -> bool:
    return _state.enabled


def setup_tracing(endpoint: str | None, service_name: str = "crm-records", provider: Any = None) -> bool:
    """Turn tracing on when an OTLP endpoint is configured (or a provider is given, as
    tests do); returns whether it is on. Calling it again changes nothing."""
    if _state.enabled:
        return True
    if provider is None:
        if not endpoint:
            return False
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    httpx_instrumentor = HTTPXClientInstrumentor()
    httpx_instrumentor.instrument(tracer_provider=provider)
    _state.instrumentors = [httpx_instrumentor]
    _state.provider = provider
    _state.tracer = provider.get_tracer("crm-records")
    _state.enabled = True
    return True


def shutdown_tracing() -> None:
    """Flush and turn tracing off again (tests; the process end flushes by itself)."""
    for instrumentor in _state.instrumentors:
        with contextlib.suppress(Exception):
            instrumentor.uninstrument()
    if _state.provider is not None and hasattr(_state.provider, "force_flush"):
        _state.provider.force_flush()
    _state.enabled, _state.tracer, _state.provider, _state.instrumentors = False, trace.NoOpTracer(), None, []


def instrument_engine(engine: Any) -> None:
    if not _state.enabled:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # The package declares SQLAlchemy < 2.1 and would refuse 2.1; its event hooks are the
    # same in 2.1 (tests/integration/test_tracing.py checks the statements' spans).
    SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, tracer_provider=_state.provider,
                                        skip_dep_check=True)


def instrument_app(app: Any) -> None:
    if not _state.enabled:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=_state.provider, excluded_urls="healthz,readyz,metrics")


# --- propagation ----------------------------------------------------------------------------------


def context_from_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> Context | None:
    """The trace context a Kafka message's `traceparent` header carries, if any."""
    for key, value in headers or ():
        if key == TRACEPARENT and value:
            carrier = {TRACEPARENT: value.decode("ascii", "replace")}
            extracted = _PROPAGATOR.extract(carrier)
            if trace.get_current_span(extracted).get_span_context().is_valid:
                return extracted
    return None


def context_from_traceparent(traceparent: str | None) -> Context | None:
    if not traceparent:
        return None
    extracted = _PROPAGATOR.extract({TRACEPARENT: traceparent})
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


def current_traceparent(span: trace.Span | None = None) -> str | None:
    """The W3C traceparent of `span` (default: the current one), None when it has no
    valid context. Formatted here rather than through the propagator: it runs per event."""
    context = (span or trace.get_current_span()).get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def outgoing_headers() -> list[tuple[str, bytes]]:
    """Headers for a record event published now: the current trace, when tracing is on."""
    if not _state.enabled:
        return []
    traceparent = current_traceparent()
    return [(TRACEPARENT, traceparent.encode("ascii"))] if traceparent else []


# --- spans ----------------------------------------------------------------------------------------


@dataclass
class BatchTrace:
    """The spans of one poll's batches: the batch's own, and one per event in its
    producer's trace. `traceparent_for(event_id)` is what that event's outbox rows carry."""

    batch: trace.Span
    events: dict[str, trace.Span] = field(default_factory=dict)

    def traceparent_for(self, event_id: str) -> str | None:
        span = self.events.get(event_id) or self.batch
        return current_traceparent(span)


@contextlib.contextmanager
def batch_span(batches: Mapping[Any, Sequence[Any]], event_ids: dict[tuple[int, int], str]) -> Iterator[
        BatchTrace | None]:
    """A span for applying one poll's batches (`batches`: partition -> its messages), and
    one per event whose message carried a trace context (`event_ids` maps a message's
    (partition, offset) to its event id). Yields None, costing nothing, when tracing is off."""
    if not _state.enabled:
        yield None
        return
    tracer = _state.tracer
    messages = [message for batch in batches.values() for message in batch]
    topic = messages[0].topic if messages else ""
    partitions = sorted({message.partition for message in messages})
    attributes: dict[str, AttributeValue] = {"messaging.system": "kafka", "messaging.destination.name": topic,
                  "messaging.batch.message_count": len(messages)}
    if len(partitions) == 1:
        attributes["messaging.destination.partition.id"] = str(partitions[0])
    else:
        attributes["crm_records.partitions"] = [str(p) for p in partitions]
    event_spans: dict[str, trace.Span] = {}
    links = []
    name = f"process {topic}"
    for message in messages:
        parent = context_from_headers(message.headers)
        event_id = event_ids.get((message.partition, message.offset))
        if parent is None or event_id is None:
            continue
        # Few attributes: this runs per event; the batch span carries the rest.
        span = tracer.start_span(
            name, context=parent, kind=SpanKind.CONSUMER,
            attributes={"messaging.kafka.offset": message.offset, "crm_records.event_id": event_id},
        )
        event_spans[event_id] = span
        links.append(Link(span.get_span_context()))
    with tracer.start_as_current_span("apply batch", links=links, attributes=attributes) as batch:
        try:
            yield BatchTrace(batch, event_spans)
        finally:
            for span in event_spans.values():
                span.end()


@contextlib.contextmanager
def outbox_span(row: Any, crm: str) -> Iterator[None]:
    """The span of one outbox row, a child of the event that made the row."""
    if not _state.enabled:
        yield
        return
    parent = context_from_traceparent(getattr(row, "trace_context", None))
    attributes = {"crm_records.outbox_id": row.id, "crm_records.outbox_kind": row.kind,
                  "crm_records.session_id": row.session_id, "crm_records.crm": crm, "crm_records.attempt": row.attempts}
    with _state.tracer.start_as_current_span(f"outbox {row.kind}", context=parent, attributes=attributes):
        yield


def trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class TracedCrm:
    """A CRM adapter whose operations are spans (`crm create_record`, ...)."""

    OPERATIONS = ("check_credentials", "find_or_create_end_user", "find_record_by_session", "create_record",
                  "get_record", "reopen_record", "attach_session", "add_note")

    def __init__(self, adapter: Any):
        self._adapter = adapter
        self.name = adapter.name
        for operation in self.OPERATIONS:
            if hasattr(adapter, operation):
                setattr(self, operation, self._traced(operation, getattr(adapter, operation)))

    def _traced(self, operation: str, method: Any) -> Any:
        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            with _state.tracer.start_as_current_span(
                f"crm {operation}", kind=SpanKind.INTERNAL,
                attributes={"crm_records.crm": self.name, "crm_records.operation": operation},
            ):
                return await method(*args, **kwargs)

        return call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)


def traced_crm(adapter: Any) -> Any:
    return TracedCrm(adapter) if _state.enabled else adapter
