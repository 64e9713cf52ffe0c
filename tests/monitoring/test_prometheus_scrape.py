"""A real Prometheus scrapes a real gunicorn AINS, loads the alert rules and sees the tasks."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from flask import Flask

from tests.conftest import Personas
from tests.monitoring.support import (
    ALERTS,
    DASHBOARDS,
    MONITORING,
    RULES,
    dashboard,
    require_binary,
)
from tests.processes import Process, WebServer, free_port, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def web(app: Flask) -> Iterator[WebServer]:
    server = start_web(app, name="web-monitoring")
    yield server
    server.process.stop()


class Prometheus:
    def __init__(self, url: str, process: Process) -> None:
        self.url = url
        self.process = process

    def query(self, expr: str) -> dict[str, float]:
        """An instant query's result: one value per series, keyed by its labels as text."""
        response = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        body = response.json()
        assert body["status"] == "success", body
        return {
            ",".join(f"{k}={v}" for k, v in sorted(item["metric"].items())): float(item["value"][1])
            for item in body["data"]["result"]
        }

    def eventually(self, check: Any, timeout: float = 120) -> Any:
        """Call ``check`` until it returns something truthy; fail with Prometheus' output."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except requests.RequestException as exc:
                last = exc
            if last and not isinstance(last, Exception):
                return last
            time.sleep(0.5)
        tail = self.process.output()[-3000:]
        raise AssertionError(f"not within {timeout}s (last: {last!r}); prometheus:\n{tail}")


@pytest.fixture
def prometheus(web: WebServer, tmp_path: Path) -> Iterator[Prometheus]:
    binary = require_binary("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "ains",
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": [web.url.removeprefix("http://")]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    process = Process(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        dict(os.environ),
    )
    server = Prometheus(f"http://127.0.0.1:{port}", process)
    try:
        server.eventually(
            lambda: requests.get(f"{server.url}/-/ready", timeout=2).status_code == 200
        )
        yield server
    finally:
        process.stop()


def test_prometheus_scrapes_the_app_and_counts_the_created_tasks(
    prometheus: Prometheus, web: WebServer, personas: Personas
) -> None:
    up = prometheus.eventually(lambda: prometheus.query('up{job="ains"}'))
    assert list(up.values()) == [1.0]
    assert not prometheus.query("ains_tasks_created_total > 0")

    headers = {"Authorization": f"Bearer {personas.client.key}"}
    for capability in ("report-v1", "report-v1", "report-v1", "ocr-v1", "ocr-v1"):
        response = requests.post(
            f"{web.url}/ains/tasks",
            json={"task_type": "report", "capability_required": capability},
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 201, response.text

    expected = {"capability=ocr-v1": 2.0, "capability=report-v1": 3.0}
    prometheus.eventually(
        lambda: prometheus.query("sum by (capability) (ains_tasks_created_total)") == expected
    )
    # the gauges are read from the database and cached for a few seconds by the app
    prometheus.eventually(
        lambda: prometheus.query("sum by (capability) (ains_capability_pending_tasks)") == expected
    )

    # The rules load from the repository's file and evaluate against the real series: no
    # agent offers either capability, so that alert is pending (its `for` is 5 minutes).
    def no_agents_pending() -> dict[str, Any] | None:
        body = requests.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()
        rules = {r["name"]: r for g in body["data"]["groups"] for r in g["rules"]}
        alerts = rules["AinsCapabilityNoAgentsOnline"]["alerts"]
        if {a["labels"]["capability"] for a in alerts} == {"report-v1", "ocr-v1"}:
            return rules
        return None

    rules = prometheus.eventually(no_agents_pending)
    assert set(rules) == ALERTS
    health = {name: (r["health"], r.get("lastError", "")) for name, r in rules.items()}
    assert health == dict.fromkeys(ALERTS, ("ok", "")), health
    assert {a["state"] for a in rules["AinsCapabilityNoAgentsOnline"]["alerts"]} == {"pending"}


def renderer() -> Any:
    spec = importlib.util.spec_from_file_location("render_dashboard", RENDERER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


RENDERER = MONITORING / "render_dashboard.py"


def test_prometheus_runs_every_dashboard_query_and_the_renderer_draws_them(
    prometheus: Prometheus, web: WebServer, personas: Personas, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {personas.client.key}"}
    for _ in range(2):
        response = requests.post(
            f"{web.url}/ains/tasks",
            json={"task_type": "report", "capability_required": "report-v1"},
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 201, response.text
    prometheus.eventually(lambda: prometheus.query("ains_tasks_created_total") != {})

    render = renderer()
    now = time.time()
    for path in DASHBOARDS:
        # every target of every panel is valid PromQL to a real Prometheus (else QueryError)
        panels = render.load_panels(dashboard(path), prometheus.url, now - 120, now, 2, "10s")
        assert len(panels) == len(dashboard(path)["panels"])
        titles = {p.spec["title"] for p in panels if any(s.points for s in p.series)}
        assert titles, path  # some panels have data already
    tasks_board = dashboard(MONITORING / "grafana/dashboards/ains-tasks-agents.json")

    def open_tasks() -> bool:
        start = time.time() - 120
        panels = render.load_panels(tasks_board, prometheus.url, start, time.time(), 2, "10s")
        [stat] = [p for p in panels if p.spec["title"] == "Open tasks"]
        return bool(stat.series) and stat.series[0].last == 2.0

    prometheus.eventually(open_tasks)

    # the command line: a PNG of the panels, and a refused query is an error naming it
    out = tmp_path / "tasks.png"
    board = MONITORING / "grafana/dashboards/ains-tasks-agents.json"
    args = [sys.executable, str(RENDERER), str(board), "--prometheus", prometheus.url]
    result = subprocess.run(
        [*args, "--minutes", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    broken = tmp_path / "broken.json"
    board_json = dashboard(board)
    board_json["panels"][0]["targets"][0]["expr"] = "sum(rate(ains_tasks_created_total[1m])"
    broken.write_text(json.dumps(board_json))
    result = subprocess.run(
        [
            sys.executable,
            str(RENDERER),
            str(broken),
            "--prometheus",
            prometheus.url,
            "--out",
            str(tmp_path / "x.png"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Open tasks" in result.stderr and "parse error" in result.stderr
    assert not (tmp_path / "x.png").exists()
