"""Prometheus metrics, one registry per process (scraped at GET /metrics).

Names follow Prometheus' conventions: the `crm_records_` namespace, base units in the
name (`_seconds`), `_total` on counters only, and label values from small fixed sets
(a CRM name, an operation, an outcome class, a partition number), never ids or free
text. deploy/grafana and deploy/prometheus/alerts.yml use these names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

events_consumed = Counter(
    "crm_records_events_consumed_total", "Session events applied (first delivery)", registry=REGISTRY
)
events_duplicate = Counter(
    "crm_records_events_duplicate_total", "Session events seen again and ignored", registry=REGISTRY
)
consumer_batches_locked = Counter(
    "crm_records_consumer_batches_locked_total",
    "Consumer batches applied the locked way after their unlocked write found an event seen before "
    "or a session saved meanwhile (a replay, a rebalance)",
    registry=REGISTRY,
)
events_dead_lettered = Counter(
    "crm_records_events_dead_lettered_total",
    "Messages sent to the dead-letter topic, by reason class",
    ["reason"],
    registry=REGISTRY,
)
decisions = Counter("crm_records_decisions_total", "Policy decisions", ["kind"], registry=REGISTRY)
records = Counter(
    "crm_records_crm_records_total",
    "CRM record outcomes (created, attached, reopened)",
    ["crm", "action"],
    registry=REGISTRY,
)
outbox_rows = Gauge(
    "crm_records_outbox_rows", "Outbox rows not yet done, by status", ["status"], registry=REGISTRY
)
outbox_oldest_due_age = Gauge(
    "crm_records_outbox_oldest_due_age_seconds",
    "How long the oldest pending outbox row has been due (0 when none is)",
    registry=REGISTRY,
)
outbox_parked = Counter(
    "crm_records_outbox_parked_total", "Outbox rows parked (will not be retried)", ["crm", "kind"], registry=REGISTRY
)
crm_validation_errors = Counter(
    "crm_records_crm_validation_errors_total", "CRM answers refusing a request as invalid", ["crm"], registry=REGISTRY
)
crm_rate_limited = Counter(
    "crm_records_crm_rate_limited_total", "CRM answers asking to slow down (429 and the like)", ["crm"],
    registry=REGISTRY,
)
crm_request_duration = Histogram(
    "crm_records_crm_request_duration_seconds",
    "CRM HTTP request duration, by outcome class (ok, rate_limited, auth_refused, client_error, "
    "server_error, timeout, connection_error)",
    ["crm", "operation", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
# Requests per record (or per note) by CRM and operation:
#   crm_records_crm_requests_total{kind="record"} / crm_records_crm_work_done_total{kind="record"}
crm_requests = Counter(
    "crm_records_crm_requests_total",
    "CRM HTTP requests sent, by the kind of outbox work that sent them (record, ended_note, other)",
    ["crm", "kind", "operation"],
    registry=REGISTRY,
)
crm_work_done = Counter(
    "crm_records_crm_work_done_total",
    "Outbox rows finished against the CRM (kind record or ended_note), the denominator of requests per record",
    ["crm", "kind", "action"],
    registry=REGISTRY,
)
crm_quota_remaining = Gauge(
    "crm_records_crm_quota_remaining",
    "Requests the CRM account has left in its window, as the vendor's last answer said",
    ["crm", "window"],
    registry=REGISTRY,
)
crm_quota_limit = Gauge(
    "crm_records_crm_quota_limit",
    "Requests the CRM account may make per window, as the vendor announces",
    ["crm", "window"],
    registry=REGISTRY,
)
crm_quota_usable = Gauge(
    "crm_records_crm_quota_usable",
    "Of a daily allocation, what is left for this service above the share reserved for other integrations",
    ["crm", "window"],
    registry=REGISTRY,
)
crm_budget_wait = Histogram(
    "crm_records_crm_budget_wait_seconds",
    "How long a CRM request waited for the account's shared rate budget",
    ["crm"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
crm_credentials_accepted = Gauge(
    "crm_records_crm_credentials_accepted",
    "1 when the CRM accepted the credentials at the last check, 0 when it refused them or could not be reached",
    ["crm"],
    registry=REGISTRY,
)
batch_duration = Histogram(
    "crm_records_consumer_batch_duration_seconds",
    "Time to apply one partition batch in the database",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
consumer_lag = Gauge(
    "crm_records_consumer_lag_messages",
    "Messages in the partition after the consumer's position (high watermark - position), per assigned partition",
    ["partition"],
    registry=REGISTRY,
)
consumer_partition_stalled = Gauge(
    "crm_records_consumer_partition_stalled_seconds",
    "How long an assigned partition with messages waiting has not advanced (0 when it moves or is caught up)",
    ["partition"],
    registry=REGISTRY,
)

DEAD_LETTER_REASONS = (
    "invalid JSON",
    "schema",
    "unknown schema_version",
    "could not be stored",
    "undecodable batch",
    "too large",
)


def dead_letter_reason_class(reason: str) -> str:
    """The bounded label for a dead letter's free-text reason."""
    head = reason.split(":", 1)[0].strip()
    return head if head in DEAD_LETTER_REASONS else "other"


def crm_outcome_class(status: int | None, error: str | None) -> str:
    """The bounded outcome label for a CRM request: a class, not the status code."""
    if error is None:
        return "ok"
    if status is None:
        return "timeout" if error.startswith("timeout") else "connection_error"
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth_refused"
    return "server_error" if status >= 500 else "client_error"
