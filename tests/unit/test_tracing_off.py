"""With no OTLP endpoint set, tracing is off: no span, no header, nothing instrumented."""

from __future__ import annotations

from opentelemetry import trace

from app.observability import tracing


def test_off_without_an_endpoint():
    assert tracing.setup_tracing(None) is False
    assert not tracing.enabled()
    with tracing.batch_span({}, {}) as batch:
        assert batch is None
    assert tracing.outgoing_headers() == []
    sentinel = object()
    assert tracing.traced_crm(sentinel) is sentinel
    assert not trace.get_current_span().get_span_context().is_valid


def test_traceparent_round_trip():
    value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    context = tracing.context_from_headers([("other", b"x"), ("traceparent", value.encode())])
    assert context is not None
    assert trace.get_current_span(context).get_span_context().trace_id == int("4bf92f3577b34da6a3ce929d0e0e4736", 16)
    assert tracing.context_from_headers([("traceparent", b"garbage")]) is None
    assert tracing.context_from_traceparent(None) is None
