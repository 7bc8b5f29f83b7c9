"""`python -m tools.bench_observability`: what the logging and tracing hooks
cost per event and per outbox row, measured in-process on one core (no broker, no
database), with tracing off (no OTLP endpoint) and on (spans made, exporter dropped).

`make bench` measures the whole service, but its run-to-run noise on a shared machine is
larger than these hooks; this isolates them (figures in docs/bench.md)."""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass

from app.observability import tracing
from app.observability.logs import configure_logging, log_context

ROUNDS = 3000


@dataclass
class _Message:
    offset: int
    headers: list


@dataclass
class _Row:
    id: int
    kind: str
    session_id: str
    attempts: int
    trace_context: str | None


def _per_call_us(action, rounds: int = ROUNDS) -> float:
    started = time.perf_counter()
    for n in range(rounds):
        action(n)
    return (time.perf_counter() - started) / rounds * 1e6


def measure() -> dict[str, float]:
    log = logging.getLogger("app.service.outbox")
    batch = [_Message(n, [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")])
             for n in range(100)]
    event_ids = {m.offset: f"event-{m.offset}" for m in batch}

    def batch_hooks(_n):  # per partition batch of 100 events
        with tracing.batch_span("events", 0, batch, event_ids) as traced:
            if traced is not None:
                for event_id in event_ids.values():
                    traced.traceparent_for(event_id)

    def row_hooks(n):  # per outbox row: context, span, the "record created" line, output header
        row = _Row(n, "record", f"call-{n}", 1, None)
        with log_context(outbox_id=row.id, session_id=row.session_id, crm="sandbox", outbox_kind=row.kind), \
                tracing.outbox_span(row, "sandbox"):
            log.info("record %s", "created", extra={"record_id": str(n), "action": "created"})
            tracing.outgoing_headers()

    def plain_line(n):  # what the same line cost before: stdlib formatter, no context
        log.info("outbox row %s (%s, session %s) record %s", n, "record", f"call-{n}", "created")

    root = logging.getLogger()
    saved = list(root.handlers), root.level
    plain = logging.StreamHandler(io.StringIO())
    plain.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers, root.level = [plain], logging.INFO
    results = {"before: one plain log line per row": _per_call_us(plain_line)}
    configure_logging("INFO", "json", io.StringIO())
    results |= {
        "off: per batch of 100 events": _per_call_us(batch_hooks, 200),
        "off: per outbox row (incl. one JSON log line)": _per_call_us(row_hooks),
    }
    from opentelemetry.sdk.trace import TracerProvider

    tracing.setup_tracing(None, provider=TracerProvider())  # spans made, nothing exported
    try:
        results["on: per batch of 100 events"] = _per_call_us(batch_hooks, 200)
        results["on: per outbox row (incl. one JSON log line)"] = _per_call_us(row_hooks)
    finally:
        tracing.shutdown_tracing()
        root.handlers, root.level = saved
    return results


if __name__ == "__main__":
    # The best of three runs: the machine's other work only ever adds time.
    runs = [measure() for _ in range(3)]
    for name in runs[0]:
        print(f"{name:48s} {min(run[name] for run in runs):8.1f} µs")
