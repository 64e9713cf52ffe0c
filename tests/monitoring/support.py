"""Shared pieces of the monitoring tests: the binaries, the files, PromQL metric names."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
MONITORING = ROOT / "monitoring"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
RULES = MONITORING / "rules" / "ains.rules.yml"
RULE_TESTS = MONITORING / "rules" / "tests.yml"
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))

# The alerts the monitoring stack promises (README "Monitoring").
ALERTS = {
    "AinsScrapeDown",
    "AinsMetricsSourceDown",
    "AinsCapabilityNoAgentsOnline",
    "AinsQueueOldestPendingTooOld",
    "AinsTaskFailureRateHigh",
    "AinsWebhookDeliveriesFailing",
    "AinsWebhookDeliveriesGivenUp",
    "AinsSchedulesLate",
    "AinsNoRqWorkers",
    "AinsRqQueueBacklog",
}


def require_binary(name: str) -> str:
    """The path of a Prometheus binary (Debian's `prometheus` package).

    Missing outside CI: skip with the reason. Missing in CI (CI=true): fail, since .ci/run
    installs the package and a skip there would hide that the checks never ran.
    """
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found on PATH (Debian package `prometheus`: apt-get install prometheus)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run the monitoring checks")
    pytest.skip(message)


def dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def dashboard_expressions(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard's panels (rows' nested panels too)."""
    panels = list(board.get("panels", []))
    for panel in list(panels):
        panels.extend(panel.get("panels", []))
    return [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]


def dashboard_variable_metrics(board: dict[str, Any]) -> set[str]:
    """Metric names in the dashboard's label_values(metric, label) variable queries."""
    names = set()
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        names.update(re.findall(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,", text))
    return names


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, keywords or label names).

    Good enough for hand-written dashboards and rules: strings, label matchers, ranges and
    grouping label lists are removed, then what is left that looks like a name and is not
    called like a function is a metric.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    # `max by (x) (...)`: dropping the clause leaves the aggregation called like a function
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def exposition_names(text: str) -> tuple[set[str], set[str]]:
    """(sample names, declared family names) of a Prometheus text exposition."""
    samples, families = set(), set()
    for line in text.splitlines():
        if line.startswith("# TYPE ") or line.startswith("# HELP "):
            families.add(line.split()[2])
        elif line and not line.startswith("#"):
            samples.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return samples, families


def family_of(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_total", "_created"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
