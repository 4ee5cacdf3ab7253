"""The Grafana dashboard, its provisioning files and the Prometheus alerts, as files: Grafana
does not run here, so their shape is checked, and promtool checks and unit-tests the rules."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.promql import (
    ALERTS,
    DASHBOARD,
    ROOT,
    alert_rules,
    dashboard,
    dashboard_exprs,
    metric_names,
    panels,
)

PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("L04_REQUIRE_TOOLS"):
            pytest.fail("promtool is required here (scripts/install.sh installs it)")
        pytest.skip("promtool is not installed (scripts/install.sh installs it)")
    return found


def run_promtool(*args: str) -> None:
    done = subprocess.run([promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_checks_the_rules_and_the_config() -> None:
    run_promtool("check", "rules", str(ALERTS.relative_to(ROOT)))
    run_promtool("check", "config", "deploy/prometheus.yml")  # its rule_files resolve


def test_promtool_fires_each_alert_on_its_synthetic_series() -> None:
    tests = yaml.safe_load((ALERTS.parent / "alerts_test.yml").read_text())
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == {rule["alert"] for rule in alert_rules()}  # each alert fires in some test
    run_promtool("test", "rules", "deploy/prometheus/alerts_test.yml")


def test_every_alert_pages_and_says_what() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == {
        "L04BreakerOpen",
        "L04QueueWaitHigh",
        "L04QueueWithoutWorkers",
        "L04ErrorRatioHigh",
        "L04UsageOutboxGrowing",
    }
    for rule in rules:
        assert rule["labels"]["severity"] == "page"
        assert rule["annotations"]["summary"] and rule["for"]
        assert metric_names(rule["expr"])


def test_the_dashboard_is_importable() -> None:
    board = dashboard()
    assert board["uid"] == "l04-fleet" and board["title"] and board["schemaVersion"] >= 36
    assert "id" not in board  # an import creates its own
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    charts = [panel for panel in panels(board) if panel["type"] != "row"]
    assert len(charts) >= 20
    for panel in charts:
        assert panel["title"] and panel["targets"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24 and place["h"] > 0
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"]
            assert target["expr"].count("(") == target["expr"].count(")")


def test_grafana_provisioning_files() -> None:
    (source,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "l04.yml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/var/lib/")
    assert DASHBOARD.is_file()


def test_every_metric_the_readme_lists_is_on_a_panel() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"`(l04_[a-z0-9_]+)", readme))
    assert {"l04_gateway_info", "l04_queue_depth", "l04_http_open_streams"} <= listed
    queried = {name for expr in dashboard_exprs(dashboard()) for name in metric_names(expr)}
    suffixes = ("", "_bucket", "_count", "_sum")
    missing = {m for m in listed if not any(m + s in queried for s in suffixes)}
    assert missing == set()
