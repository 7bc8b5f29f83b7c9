"""The alert rules and the dashboard: valid PromQL over metrics the service exports,
and alerts that fire when they should (promtool's own unit tests, alerts_test.yml)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client import Counter, Histogram

from app import metrics
from tests.ops.tools import tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "crm-records.json"


def _exported_series() -> set[str]:
    names = set()
    for collector in vars(metrics).values():
        if isinstance(collector, Histogram):
            names |= {f"{collector._name}_{s}" for s in ("bucket", "count", "sum")}
        elif isinstance(collector, Counter):
            names.add(f"{collector._name}_total")
        elif hasattr(collector, "_name") and hasattr(collector, "_labelnames"):
            names.add(collector._name)
    return names


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bcrm_records_[a-z0-9_]+", expr))


def _dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def _alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_rules():
    result = _promtool("check", "rules", RULES.name, cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass():
    result = _promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_the_operators_need_exist_with_runbooks():
    rules = {rule["alert"]: rule for rule in _alert_rules()}
    assert set(rules) == {
        "CrmRecordsConsumerLagGrowing", "CrmRecordsOutboxOldestDueRowOld", "CrmRecordsOutboxRowParked",
        "CrmRecordsDeadLetterRate", "CrmRecordsCrmCredentialsRefused", "CrmRecordsPartitionStuck",
    }
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and len(rule["annotations"]["runbook"]) > 40


def test_every_expression_names_only_exported_metrics():
    exported = _exported_series()
    used = [(rule["alert"], rule["expr"]) for rule in _alert_rules()] + _dashboard_exprs()
    for where, expr in used:
        names = _metric_names(expr)
        assert names, (where, expr)
        assert names <= exported, (where, names - exported)


def test_the_dashboard_has_the_listed_panels():
    titles = [title for title, _ in _dashboard_exprs()]
    for needed in ("Events/s and dead letters/s", "Consumer lag per partition", "Decisions by kind",
                   "Outbox backlog", "Oldest due outbox row", "CRM latency p50 / p95 by CRM and operation",
                   "CRM errors by CRM, operation and outcome", "Rate-limit answers", "Parked rows"):
        assert needed in titles, needed


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses each panel query as a recording rule."""
    rules = [
        {"record": f"dashboard:panel_{n}", "expr": expr.replace("$__rate_interval", "5m")}
        for n, (_, expr) in enumerate(_dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
