"""monitoring/: promtool checks the Prometheus config and rules, runs the rules' unit tests,
and the Grafana and compose files agree with each other."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.monitoring.support import (
    ALERTS,
    DASHBOARDS,
    MONITORING,
    PROMETHEUS_CONFIG,
    RULE_TESTS,
    RULES,
    dashboard,
    dashboard_expressions,
    load_yaml,
    promql_metric_names,
    require_binary,
)


def promtool(*args: str | Path, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool")
    return subprocess.run(
        [binary, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def rules() -> list[dict]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_config_and_finds_the_rule_file() -> None:
    result = promtool("check", "config", PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr
    config = load_yaml(PROMETHEUS_CONFIG)
    [job] = config["scrape_configs"]
    assert job["job_name"] == "ains" and job["metrics_path"] == "/metrics"


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n  - name: x\n    rules:\n"
        "      - alert: Broken\n        expr: sum(rate(ains_tasks_failed_total[5m])\n"
    )
    result = promtool("check", "rules", broken)
    assert result.returncode != 0
    assert "parse error" in (result.stdout + result.stderr).lower()


def test_every_alert_has_a_severity_summary_and_description() -> None:
    found = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    assert set(found) == ALERTS
    for name, rule in found.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert len(rule["annotations"]["description"].strip()) > 40, name


def test_the_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rule_unit_tests_show_each_alert_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == ALERTS, ALERTS - firing
    assert quiet == ALERTS, ALERTS - quiet


def test_promtool_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The unit tests can fail: with the queue-age threshold raised they do."""
    text = RULES.read_text()
    assert "ains_queue_oldest_pending_age_seconds) > 900" in text
    (tmp_path / RULES.name).write_text(
        text.replace(
            "ains_queue_oldest_pending_age_seconds) > 900",
            "ains_queue_oldest_pending_age_seconds) > 5000",
        )
    )
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "AinsQueueOldestPendingTooOld" in result.stdout + result.stderr


def test_the_compose_file_mounts_files_that_exist() -> None:
    compose = load_yaml(MONITORING / "docker-compose.yml")
    services = compose["services"]
    assert {"prometheus", "grafana"} <= set(services)
    assert "host.docker.internal:host-gateway" in services["prometheus"]["extra_hosts"]
    mounts = {}
    for service in services.values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (MONITORING / source).exists(), volume
                mounts[target] = MONITORING / source
    provider = load_yaml(MONITORING / "grafana/provisioning/dashboards/ains.yml")
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert mounts[dashboards_path] == MONITORING / "grafana" / "dashboards"
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG
    # the config's rule file, relative to the config, is inside the mounted rules folder
    [rule_file] = load_yaml(PROMETHEUS_CONFIG)["rule_files"]
    assert mounts["/etc/prometheus/rules"] / Path(rule_file).name == RULES


def test_the_dashboards_use_the_provisioned_data_source() -> None:
    datasources = load_yaml(MONITORING / "grafana/provisioning/datasources/prometheus.yml")
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert {p.name for p in DASHBOARDS} == {"ains-http.json", "ains-tasks-agents.json"}
    uids = set()
    for path in DASHBOARDS:
        board = dashboard(path)
        uids.add(board["uid"])
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), path
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == source["uid"], (path, panel["title"])
            assert panel["targets"], (path, panel["title"])
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, (path, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == source["uid"]
    assert len(uids) == len(DASHBOARDS)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job="ains"} == 0', {"up"}),
        (
            'sum by (status) (rate(flask_http_request_total{status=~"5.."}[$__rate_interval]))',
            {"flask_http_request_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (le) (rate(ains_task_run_seconds_bucket[5m])))",
            {"ains_task_run_seconds_bucket"},
        ),
        (
            "max without (instance) (ains_capability_pending_tasks) > 0 unless on (capability)"
            " max without (instance) (ains_capability_agents_online) > 0",
            {"ains_capability_pending_tasks", "ains_capability_agents_online"},
        ),
        (
            '60 * max by (outcome) (rate(ains_webhook_deliveries_total{outcome="a b"}[1m]))',
            {"ains_webhook_deliveries_total"},
        ),
    ],
)
def test_the_metric_name_extractor(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_the_dashboards_cover_what_the_brief_names() -> None:
    """Each dashboard's expressions reach the metrics its panels are about."""
    used = {
        path.name: set().union(*map(promql_metric_names, dashboard_expressions(dashboard(path))))
        for path in DASHBOARDS
    }
    assert {
        "flask_http_request_total",
        "flask_http_request_duration_seconds_bucket",
        "flask_http_request_duration_seconds_count",
    } <= used["ains-http.json"]
    assert {
        "ains_tasks_created_total",
        "ains_tasks_completed_total",
        "ains_tasks_failed_total",
        "ains_queue_tasks",
        "ains_task_dispatch_latency_seconds_bucket",
        "ains_task_run_seconds_bucket",
        "ains_agents",
        "ains_agent_trust_score",
        "ains_agent_heartbeats_total",
        "ains_task_retries_total",
        "ains_schedule_fire_lateness_seconds_bucket",
        "ains_webhook_deliveries_total",
        "ains_rq_queue_jobs",
        "ains_rq_workers",
    } <= used["ains-tasks-agents.json"]
