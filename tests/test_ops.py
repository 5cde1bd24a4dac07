"""The ops assets under ops/: the alert rules pass promtool's checks and their unit
tests, each alert has a runbook in the docs (docs/operating.md) and is tested firing
and not firing,
and the dashboard covers what ops watch. (That the worker exports every metric they
name, and that a real Prometheus fires them: tests/integration/test_ops_metrics.py.)"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from markdown.extensions.toc import slugify

from tests.support import prometheus_tool

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "ops" / "prometheus"
RULES = PROMETHEUS / "rules.yml"
RULE_TESTS = PROMETHEUS / "rules.test.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "churn.json"
RUNBOOKS = "docs/operating.md"  # the alerts' runbooks, as their runbook_url names it


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = prometheus_tool("promtool")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules_and_the_compose_prometheus_config() -> None:
    for args in (
        ("check", "rules", str(RULES)),
        ("check", "config", str(PROMETHEUS / "prometheus.yml")),
    ):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases: dict[str, list[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(bool(case.get("exp_alerts")))
    for rule in alerts():
        fires = cases.get(rule["alert"], [])
        assert True in fires and False in fires, f"{rule['alert']}: needs both kinds of case"


def heading_anchors(markdown: str) -> set[str]:
    """The anchors the headings of a Markdown page get: the site's (MkDocs' `toc`
    slugs), which are GitHub's too for headings such as these."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        anchors.add(slugify(heading.strip(), "-"))
    return anchors


def test_every_alert_says_what_happened_and_links_its_runbook_in_the_docs() -> None:
    anchors = heading_anchors((ROOT / RUNBOOKS).read_text())
    for rule in alerts():
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == RUNBOOKS and anchor in anchors, f"{rule['alert']}: no {RUNBOOKS}#{anchor}"
        assert anchor == rule["alert"].lower(), rule["alert"]  # its own runbook
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]


def test_the_dashboard_shows_throughput_latency_lag_risk_dead_letters_and_drift() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in (
        "churn_events_total",
        "churn_end_to_end_latency_seconds_bucket",
        "churn_batch_duration_seconds_bucket",
        "churn_consumer_lag",
        "churn_event_time_lag_seconds",
        "churn_predictions_total",
        "churn_risk_changes_total",
        "churn_predicted_churn_rate",
        "churn_dead_letters_total",
        "churn_drift_statistic",
        "churn_drift_alert",
    ):
        assert metric in exprs, metric
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["targets"] and panel["description"], panel["title"]
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
