"""Metric names and labels follow Prometheus' conventions, so dashboards and alerts
stay valid and the series count stays bounded."""

from __future__ import annotations

import re

from prometheus_client import Counter, Gauge, Histogram

from app import metrics

# Labels whose values come from small fixed sets; an id or free text here would make
# one series per session.
BOUNDED_LABELS = {"reason", "kind", "crm", "action", "status", "operation", "outcome", "partition", "window"}


def _collectors():
    return [c for c in vars(metrics).values() if isinstance(c, (Counter, Gauge, Histogram))]


def test_every_metric_is_namespaced_snake_case_with_units():
    found = _collectors()
    assert len(found) >= 12
    for collector in found:
        name = collector._name
        assert re.fullmatch(r"crm_records_[a-z0-9_]+", name), name
        # prometheus_client stores a counter's name without `_total` and exposes it with
        # it; a gauge or histogram must not look like a counter.
        assert not name.endswith("_total"), name
        if isinstance(collector, Counter):
            assert f"{name}_total" in {s.name for m in collector.collect() for s in m.samples} or collector._labelnames
        if isinstance(collector, Histogram):
            assert name.endswith("_seconds"), f"{name}: a timing histogram is in seconds"
        assert "_ms" not in name and "milliseconds" not in name, name
        assert set(collector._labelnames) <= BOUNDED_LABELS, (name, collector._labelnames)


def test_dead_letter_reasons_fold_into_a_fixed_set():
    assert metrics.dead_letter_reason_class("schema: occurred_at: Field required") == "schema"
    assert metrics.dead_letter_reason_class("invalid JSON: unexpected character") == "invalid JSON"
    assert (
        metrics.dead_letter_reason_class("could not be stored: CharacterNotInRepertoireError x")
        == "could not be stored"
    )
    assert metrics.dead_letter_reason_class("some new free text 123") == "other"


def test_crm_outcome_is_a_class_not_a_status_code():
    assert metrics.crm_outcome_class(200, None) == "ok"
    assert metrics.crm_outcome_class(None, "timeout: ReadTimeout") == "timeout"
    assert metrics.crm_outcome_class(None, "connection: ConnectError()") == "connection_error"
    assert metrics.crm_outcome_class(429, "slow down") == "rate_limited"
    assert metrics.crm_outcome_class(401, "no") == "auth_refused"
    assert metrics.crm_outcome_class(503, "down") == "server_error"
    assert metrics.crm_outcome_class(422, "invalid") == "client_error"
