"""The Grafana dashboard (ops/grafana/dashboards/churn.json), checked as far as it can be
without a Grafana: against Grafana 11.1's own JSON Schemas (the version compose runs;
vendored in tests/vendor/grafana-11.1/) for the dashboard, each panel's options and each
Prometheus query; every query parses as PromQL (promtool); and every metric it reads is
one the worker exports (stream_app/metrics.py). What the panels show: tests/test_ops.py;
the queries against a live worker: tests/integration/test_ops_metrics.py."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from prometheus_client.metrics import MetricWrapperBase

from stream_app import metrics
from tests.integration.test_ops_metrics import metric_names
from tests.support import prometheus_tool
from tests.test_compose import services

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "churn.json"
GRAFANA = Path(__file__).resolve().parent / "vendor" / "grafana-11.1"
GRAFANA_VERSION = "11.1."
# A panel type (Grafana's plugin id) and the file of its options' schema.
PANELS = {
    "timeseries": "timeseries",
    "stat": "stat",
    "state-timeline": "statetimeline",
    "table": "table",
}
# Grafana's variables in a query, and what stands in for them when promtool parses it.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
# Series Prometheus makes itself.
PROMETHEUS_SERIES = {"up"}
# The samples a metric of each type is exported as (`_created` left out: never queried).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in document["panels"] if panel["type"] != "row"]


def schema(name: str) -> dict[str, Any]:
    return json.loads((GRAFANA / f"{name}.jsonschema.json").read_text())


def definition(name: str, of: str) -> jsonschema.Draft7Validator:
    """A validator of definition `of` in the vendored schema `name` (draft-07)."""
    document = {**schema(name), "$ref": f"#/definitions/{of}"}
    jsonschema.Draft7Validator.check_schema(document)
    return jsonschema.Draft7Validator(document)


def problems(document: dict[str, Any]) -> list[str]:
    """What Grafana 11.1's schemas find wrong with a dashboard: the dashboard itself, each
    panel's options and custom field config against its plugin's, each query against the
    Prometheus data source's. A panel's option left out is not wrong: Grafana fills it
    from the plugin's defaults when it loads the panel (the generated schemas call some
    required, as the types Grafana saves have them all)."""
    found = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in definition("dashboard", "Dashboard").iter_errors(document)
    ]
    query = definition("prometheus", "dataquery")
    for panel in panels(document):
        where = f"panel {panel.get('title')!r}"
        if panel["type"] not in PANELS:
            found.append(f"{where}: no schema for panel type {panel['type']!r}")
            continue
        plugin = PANELS[panel["type"]]
        parts = [("options", "Options", panel.get("options"))]
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None:
            parts.append(("fieldConfig.defaults.custom", "FieldConfig", custom))
        for part, of, value in parts:
            found += [
                f"{where} {part}/{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in definition(plugin, of).iter_errors(value or {})
                if e.validator != "required"
            ]
        for target in panel["targets"]:
            found += [f"{where} query: {e.message}" for e in query.iter_errors(target)]
    return found


def test_the_dashboard_is_valid_against_grafana_11_1s_schemas() -> None:
    assert services()["grafana"]["image"].startswith(f"grafana/grafana:{GRAFANA_VERSION}")
    assert problems(dashboard()) == []
    # The schema version Grafana 11.1 saves: it loads the dashboard without migrating it.
    current = schema("dashboard")["definitions"]["Dashboard"]["properties"]["schemaVersion"]
    assert dashboard()["schemaVersion"] == current["default"]
    for panel in panels(dashboard()):
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_grafanas_schemas_reject_a_misspelt_field() -> None:
    # The check above is only worth something if the schemas are strict.
    for break_it in (
        lambda d: d["panels"][1].update(gridpos=d["panels"][1].pop("gridPos")),
        lambda d: d.update(refreshes=d.pop("refresh")),
        lambda d: d["panels"][1]["targets"][0].update(expression="up"),
        lambda d: panels(d)[-1]["options"].update(showHeaders=True),
        lambda d: panels(d)[1]["options"].update(legend={"showLegend": "yes"}),
    ):
        broken = copy.deepcopy(dashboard())
        break_it(broken)
        assert problems(broken), break_it


def queries(document: dict[str, Any]) -> dict[str, str]:
    """Every query of the dashboard by a recording-rule name, with Grafana's variables
    replaced by durations."""
    found = {}
    for panel in panels(document):
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: a variable promtool cannot stand in for"
            found[f"dashboard:panel_{panel['id']}_{target['refId']}"] = expr
    return found


def promtool_check(exprs: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    rules = [{"record": name, "expr": expr} for name, expr in exprs.items()]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return subprocess.run(
        [prometheus_tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_dashboard_query_parses_as_promql(tmp_path: Path) -> None:
    exprs = queries(dashboard())
    assert exprs
    result = promtool_check(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_promtool_refuses_a_query_that_does_not_parse(tmp_path: Path) -> None:
    # The check above is only worth something if promtool parses the expressions.
    (name, expr), *_ = queries(dashboard()).items()
    result = promtool_check({name: expr + ")"}, tmp_path)
    assert result.returncode != 0 and name in result.stdout + result.stderr


def exported() -> set[str]:
    """The names of the samples the worker's metrics (stream_app/metrics.py) export."""
    names = set()
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():
                names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def test_every_metric_the_dashboard_reads_is_one_the_worker_exports() -> None:
    known = exported()
    assert {"churn_events_total", "churn_batch_duration_seconds_bucket"} <= known
    assert "churn_model_info" in known and "churn_consumer_lag" in known
    read = {name for expr in queries(dashboard()).values() for name in metric_names(expr)}
    assert read - PROMETHEUS_SERIES, "no metric found in the queries"
    assert not read - PROMETHEUS_SERIES - known, "queried, but not exported by the worker"
    # The queries' label matchers and groupings name labels the metrics have.
    labels = {
        family.name + suffix: set(collector._labelnames)
        for collector in vars(metrics).values()
        if isinstance(collector, MetricWrapperBase)
        for family in collector.describe()
        for suffix in SUFFIXES[family.type]
    }
    for expr in queries(dashboard()).values():
        for name, matchers in re.findall(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}", expr):
            if name in PROMETHEUS_SERIES:
                continue
            used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
            assert used <= labels[name], f"{expr}: {sorted(used - labels[name])}"
