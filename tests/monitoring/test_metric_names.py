"""Every metric the dashboards and alert rules query is one the app exposes on /metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Flask

from app.extensions import db
from app.services import scheduling
from tests.conftest import Api, Personas
from tests.monitoring.support import (
    DASHBOARDS,
    dashboard,
    dashboard_expressions,
    dashboard_variable_metrics,
    exposition_names,
    family_of,
    promql_metric_names,
    rule_expressions,
)

# Prometheus' own series, not the app's.
NOT_THE_APPS = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"}


def referenced_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is used."""
    used: dict[str, set[str]] = {}
    sources = [("monitoring/rules/ains.rules.yml", rule_expressions(), set())]
    for path in DASHBOARDS:
        board = dashboard(path)
        sources.append((path.name, dashboard_expressions(board), dashboard_variable_metrics(board)))
    for where, expressions, extra in sources:
        names = set(extra).union(*map(promql_metric_names, expressions))
        for name in names - NOT_THE_APPS:
            used.setdefault(name, set()).add(where)
    return used


def some_activity(app: Flask, api: Api, personas: Personas) -> None:
    """Tasks created, claimed, completed, failed, retried and cancelled; an agent; a schedule."""
    agent_id, agent = api.register_agent(personas.fleet, slots=4)
    beat = api.post(f"/ains/agents/{agent_id}/heartbeat", agent, json={"status": "ACTIVE"})
    assert beat.status_code == 200, beat.get_json()
    done, failed, retried = (
        api.submit(personas.client, max_retries=m)["task_id"] for m in (0, 0, 3)
    )
    claimed = {t["task_id"] for t in api.claim(agent_id, agent, max_tasks=4)}
    assert claimed == {done, failed, retried}
    assert api.post(f"/ains/tasks/{done}/complete", agent, json={}).status_code == 200
    for task_id in (failed, retried):
        response = api.post(f"/ains/tasks/{task_id}/fail", agent, json={"error_message": "x"})
        assert response.status_code == 200, response.get_json()
    cancelled = api.submit(personas.client, priority=9)["task_id"]
    response = api.post(f"/ains/tasks/{cancelled}/cancel", personas.client, json={})
    assert response.status_code == 200, response.get_json()
    api.submit(personas.client, capability_required="ocr-v1")  # waits: no agent offers it
    schedule = api.post(
        "/aitp/tasks/schedule",
        personas.client,
        json={"task_type": "report", "capability_required": "report-v1", "interval_seconds": 60},
    )
    assert schedule.status_code == 201, schedule.get_json()
    with app.app_context():
        scheduling.fire_due(now=datetime.now(UTC) + timedelta(seconds=61))
        db.session.remove()


def test_every_metric_in_the_dashboards_and_rules_is_exposed(
    app: Flask, api: Api, personas: Personas
) -> None:
    used = referenced_metrics()
    # the extractor found the metrics (a test over an empty set would prove nothing)
    assert {"ains_tasks_created_total", "flask_http_request_total"} <= set(used)
    assert len(used) >= 20, sorted(used)

    some_activity(app, api, personas)
    response = api.get("/metrics")
    assert response.status_code == 200
    samples, families = exposition_names(response.get_data(as_text=True))
    declared = {family_of(name) for name in families}

    missing = {
        name: sorted(where)
        for name, where in used.items()
        if name not in samples and name not in families and family_of(name) not in declared
    }
    assert not missing, f"used but not on /metrics: {missing}"
