"""The dashboard page, its self-refreshing fragment, and the figures behind it."""

from __future__ import annotations

import re
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.lib.clock import utcnow
from app.models import TaskEvent
from app.services import dashboard, scheduling
from app.services.principal import operator as operator_principal
from tests.conftest import Api, Persona, Personas
from tests.ui.conftest import HTMX, form_token, text


def stat(body: str, name: str) -> str:
    match = re.search(rf'data-stat="{name}">(\d+)', body)
    assert match, f"no {name} figure"
    return match.group(1)


def finish(api: Api, agent_id: str, agent: Persona, *, fail: bool = False) -> str:
    """Claim the next task for the agent and complete or fail it; return its id."""
    (task,) = api.claim(agent_id, agent)
    if fail:
        body = {"error_message": "boom", "retryable": False}
        response = api.post(f"/ains/tasks/{task['task_id']}/fail", agent, json=body)
    else:
        response = api.post(f"/ains/tasks/{task['task_id']}/complete", agent, json={})
    assert response.status_code == 200, response.get_json()
    return task["task_id"]


def test_it_shows_counts_agents_online_and_the_last_hour(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=3)
    api.register_agent(personas.fleet, capabilities=("ocr-v2",), name="second")
    for priority in (9, 5):
        api.submit(personas.client, priority=priority)
    finish(api, agent_id, agent)
    finish(api, agent_id, agent, fail=True)
    # No agent offers this capability: these two wait in the queue, unassigned.
    for priority in (5, 2):
        api.submit(personas.client, priority=priority, capability_required="translate-v1")

    response = console.get("/")
    assert response.status_code == 200
    body = text(response)
    assert stat(body, "open") == "2"
    assert stat(body, "agents-online") == "2"
    assert stat(body, "completed-hour") == "1"
    assert stat(body, "failed-hour") == "1"
    assert "0 of 4 task slots in use" in body
    assert "50.0 % succeeded" in body
    assert 'aria-label="Completed: 1"' in body and 'aria-label="Failed: 1"' in body
    assert 'aria-label="Pending: 2"' in body
    queue = body[body.index('id="queue-title"') : body.index('id="recent-title"')]
    assert re.findall(r"<span class=\"prio prio-(\d+)\">", queue) == ["5", "2"]
    # A task routed to an agent that has not claimed it yet still waits in the queue.
    assigned = api.submit(personas.client, priority=7)
    assert assigned["status"] == "ASSIGNED"
    body = text(console.get("/"))
    assert stat(body, "open") == "3" and "1 assigned" in body
    queue = body[body.index('id="queue-title"') : body.index('id="recent-title"')]
    assert re.findall(r"<span class=\"prio prio-(\d+)\">", queue) == ["7", "5", "2"]


def test_it_refreshes_the_summary_with_a_fragment_every_5_seconds(console: FlaskClient) -> None:
    page = console.get("/")
    assert "HX-Request" in page.headers["Vary"]
    body = text(page)
    assert body.startswith("<!doctype html>")
    assert 'hx-get="/" hx-trigger="every 5s"' in body
    assert 'hx-swap="outerHTML"' in body

    fragment = console.get("/", headers=HTMX)
    assert fragment.status_code == 200
    assert "HX-Request" in fragment.headers["Vary"]
    body = text(fragment)
    assert "<html" not in body
    assert body.lstrip().startswith('<div id="dashboard-summary"')
    assert 'hx-trigger="every 5s"' in body  # the swapped-in region keeps polling


def test_it_links_the_latest_tasks(console: FlaskClient, api: Api, personas: Personas) -> None:
    task = api.submit(personas.client, task_type="nightly-report")["task_id"]
    body = text(console.get("/"))
    assert f'href="/tasks/{task}"' in body and "nightly-report" in body


def test_it_counts_agents_online_only_while_heartbeats_arrive(
    app: Flask, api: Api, personas: Personas
) -> None:
    api.register_agent(personas.fleet, slots=2)
    with app.app_context():
        now = utcnow()
        assert dashboard.agent_fleet(now).online == 1
        later = now + dashboard.heartbeat_silence() + timedelta(seconds=1)
        fleet = dashboard.agent_fleet(later)
        assert (fleet.total, fleet.online, fleet.slots_online) == (1, 0, 0)


def test_it_buckets_the_last_hour_by_five_minutes(app: Flask, api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    api.submit(personas.client)
    api.submit(personas.client)
    done = finish(api, agent_id, agent)
    failed = finish(api, agent_id, agent, fail=True)
    with app.app_context():
        ended = {
            e.task_id: e.at
            for e in db.session.scalars(
                db.select(TaskEvent).where(TaskEvent.to_status.in_(("COMPLETED", "FAILED")))
            )
        }
        at = max(ended[done], ended[failed])

        buckets = dashboard.throughput(at + timedelta(minutes=32))
        assert len(buckets) == 12
        assert [(b.completed, b.failed) for b in buckets][5] == (1, 1)
        assert sum(b.total for b in buckets) == 2
        assert buckets[0].start == at + timedelta(minutes=32) - timedelta(hours=1)

        assert dashboard.throughput(at)[-1].total == 2  # an event at 'now' is in the last slice
        assert sum(b.total for b in dashboard.throughput(at + timedelta(minutes=61))) == 0
        assert sum(b.total for b in dashboard.throughput(at - timedelta(seconds=1))) == 0


def test_it_summarises_an_empty_system(app: Flask) -> None:
    with app.app_context():
        summary = dashboard.summarise(utcnow())
    assert summary.open_tasks == 0 and summary.queue_depth == 0
    assert set(summary.tasks_by_status.values()) == {0}
    assert summary.fleet == dashboard.AgentFleet(total=0, online=0, slots_in_use=0, slots_online=0)
    assert summary.busiest_bucket == 0 and summary.recent_tasks == []


def test_it_buckets_the_last_day_by_hour_with_failure_rates(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    for _ in range(4):
        api.submit(personas.client)
    for fail in (False, False, False, True):
        finish(api, agent_id, agent, fail=fail)
    with app.app_context():
        at = db.session.scalar(db.select(db.func.max(TaskEvent.at)))
        later = at + timedelta(hours=5, minutes=10)
        day = dashboard.throughput(later, dashboard.DAY_WINDOW, dashboard.DAY_BUCKETS)
        assert len(day) == 24 and day[0].start == later - timedelta(days=1)
        # Five hours and ten minutes ago is the slice 18:50 to 19:50 of the 24.
        assert [(b.completed, b.failed) for b in day][18] == (3, 1)
        assert sum(b.total for b in day) == 4
        assert dashboard.failure_rate(day) == 25.0
        assert dashboard.failure_rate(dashboard.throughput(later)) is None  # none this hour
        a_day_on = at + timedelta(days=1, seconds=1)
        empty = dashboard.throughput(a_day_on, dashboard.DAY_WINDOW, dashboard.DAY_BUCKETS)
        assert sum(b.total for b in empty) == 0

    body = text(console.get("/"))
    assert stat(body, "completed-day-total") == "3" and stat(body, "failed-day-total") == "1"
    assert 'data-stat="failure-rate-day-total">25.0 %<' in body
    assert 'data-stat="failure-rate-hour-total">25.0 %<' in body
    assert body.count("<g data-slice=") == 12 + 24
    assert (
        'aria-label="Tasks finished per hour over the last 24 hours: 3 completed, 1 failed"' in body
    )


def test_it_says_no_failure_rate_when_nothing_finished(console: FlaskClient) -> None:
    body = text(console.get("/"))
    assert 'data-stat="failure-rate-day-total"><span class="muted">none ended</span>' in body
    assert "No task failed in the last 24 hours." in body
    assert "No active schedule is due." in body


def test_it_lists_the_active_schedules_due_next_soonest_first(
    app: Flask, console: FlaskClient
) -> None:
    seed = operator_principal("seed@example.com")
    base = {"client_id": "client-1", "task_type": "sync", "capability_required": "report-v1"}
    with app.app_context():
        ids = {
            name: scheduling.create_schedule(
                seed, {**base, "description": name, "interval_seconds": seconds}
            ).id
            for name, seconds in [("hourly", 3600), ("minutely", 60), ("paused", 30), ("gone", 10)]
        }
        scheduling.pause_schedule(seed, ids["paused"], True)
        scheduling.delete_schedule(seed, ids["gone"])
        due = [s.description for s in dashboard.schedules_due(5)]
        assert due == ["minutely", "hourly"]
        assert [s.description for s in dashboard.schedules_due(1)] == ["minutely"]
        db.session.remove()

    body = text(console.get("/"))
    section = body[body.index('id="schedules-due"') : body.index('id="recent-title"')]
    assert re.findall(r'<li data-schedule-id="([^"]+)"', section) == [
        ids["minutely"],
        ids["hourly"],
    ]
    assert f'href="/schedules/{ids["minutely"]}"' in section


def test_it_lists_the_latest_failures_of_the_day_with_their_reason(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    api.submit(personas.client, task_type="ocr-scan")
    api.submit(personas.client, task_type="late-report")
    first = finish(api, agent_id, agent, fail=True)  # "boom"
    (task,) = api.claim(agent_id, agent)
    second = task["task_id"]
    body = {"error_message": "<b>page 2</b> unreadable", "retryable": False}
    assert api.post(f"/ains/tasks/{second}/fail", agent, json=body).status_code == 200
    # Requeued since: still listed, with the status it has now.
    requeued = console.post(
        f"/tasks/{first}/requeue", data={"csrf_token": form_token(console, f"/tasks/{first}")}
    )
    assert requeued.status_code == 302

    page = text(console.get("/"))
    section = page[page.index('id="recent-failures"') :]
    assert re.findall(r'<li data-task-id="([^"]+)"', section) == [second, first]
    assert "&lt;b&gt;page 2&lt;/b&gt; unreadable" in section and "<b>page 2" not in section
    rows = {
        m: section[section.index(f'data-task-id="{m}"') :].split("</li>")[0]
        for m in (first, second)
    }
    assert 'class="badge' in rows[first]  # its status now, PENDING or ASSIGNED
    assert 'class="badge' not in rows[second]  # still FAILED: nothing more to say
    with app.app_context():
        at = db.session.scalar(db.select(db.func.max(TaskEvent.at)))
        assert [f.task_id for f in dashboard.recent_failures(at, 1)] == [second]
        assert dashboard.recent_failures(at + timedelta(days=1, seconds=1), 6) == []
