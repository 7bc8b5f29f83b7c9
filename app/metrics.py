"""Prometheus metrics, one registry per process (scraped at GET /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

events_consumed = Counter(
    "crm_records_events_consumed_total", "Session events applied (first delivery)", registry=REGISTRY
)
events_duplicate = Counter(
    "crm_records_events_duplicate_total", "Session events seen again and ignored", registry=REGISTRY
)
events_dead_lettered = Counter(
    "crm_records_events_dead_lettered_total", "Messages sent to the dead-letter topic", ["reason"], registry=REGISTRY
)
decisions = Counter("crm_records_decisions_total", "Policy decisions", ["kind"], registry=REGISTRY)
records = Counter(
    "crm_records_records_total", "CRM record outcomes (created, attached, reopened)", ["crm", "action"], registry=REGISTRY
)
outbox_backlog = Gauge(
    "crm_records_outbox_backlog", "Outbox rows not yet done, by status", ["status"], registry=REGISTRY
)
outbox_parked = Counter(
    "crm_records_outbox_parked_total", "Outbox rows parked (will not be retried)", ["crm", "kind"], registry=REGISTRY
)
crm_validation_errors = Counter(
    "crm_records_crm_validation_errors_total", "CRM answers refusing a request as invalid", ["crm"], registry=REGISTRY
)
crm_rate_limited = Counter(
    "crm_records_crm_rate_limited_total", "CRM answers asking to slow down", ["crm"], registry=REGISTRY
)
crm_call_latency = Histogram(
    "crm_records_crm_call_seconds",
    "CRM HTTP call latency",
    ["crm", "operation", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
batch_seconds = Histogram(
    "crm_records_consumer_batch_seconds",
    "Time to apply one partition batch in the database",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
