"""The task page's lifecycle: attempts, retries, deadlines, expiry, cancel and requeue."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import time_machine
from flask import Flask
from flask.testing import FlaskClient

from app.lib.clock import utcnow
from app.services import lifecycle
from app.services.settings import settings
from tests.conftest import Api, Personas
from tests.ui.conftest import fail_tasks, form_token, sign_in, text

ATTEMPT_ROW = re.compile(r'<tr data-attempt="(\d+)">(.*?)</tr>', re.S)


def task_json(api: Api, personas: Personas, task_id: str) -> dict[str, Any]:
    response = api.get(f"/ains/tasks/{task_id}", personas.admin)
    assert response.status_code == 200
    return response.get_json()


def attempts(body: str) -> dict[int, str]:
    return {int(number): row for number, row in ATTEMPT_ROW.findall(body)}


def sweep(app: Flask, after_seconds: float) -> None:
    with app.app_context():
        lifecycle.sweep(utcnow() + timedelta(seconds=after_seconds))


def test_it_shows_each_attempt_with_its_agent_times_outcome_and_error(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    first_id, first = api.register_agent(personas.fleet, name="first")
    task = api.submit(personas.client, max_retries=2, retry_policy="fixed")["task_id"]
    assert [t["task_id"] for t in api.claim(first_id, first)] == [task]
    second_id, second = api.register_agent(personas.fleet, name="second")
    failed = api.post(
        f"/ains/tasks/{task}/fail",
        first,
        json={"error_message": "disk <full>", "retryable": True, "retry_after_seconds": 30},
    )
    assert failed.get_json()["status"] == "PENDING"

    body = text(console.get(f"/tasks/{task}"))
    rows = attempts(body)
    assert list(rows) == [1]
    assert first_id[:13] in rows[1] and "badge-failed" in rows[1]
    assert "disk &lt;full&gt;" in rows[1]
    assert "by <span" not in rows[1]  # the agent ended its own attempt: nothing to add
    assert re.search(r'data-field="retries"><dt>Used</dt><dd><strong>1</strong> of 2', body)
    assert "Fixed · a timeout is not retried" in body
    next_retry = body[body.index('data-field="next-retry"') :]
    assert ">in 30 s<" in next_retry[:300] or ">in 29 s<" in next_retry[:300]
    assert 'data-field="last-error"' in body and "disk &lt;full&gt;" in body

    # The retry is due: it is routed to the other agent (the first failed it), which
    # claims it; the page shows the running attempt.
    with time_machine.travel(utcnow() + timedelta(seconds=31)):
        beat = api.post(f"/ains/agents/{second_id}/heartbeat", second, json={"status": "ACTIVE"})
        assert beat.status_code == 200
        assert [t["task_id"] for t in api.claim(second_id, second)] == [task]
        body = text(console.get(f"/tasks/{task}"))
    rows = attempts(body)
    assert list(rows) == [1, 2]
    assert second_id[:13] in rows[2] and "badge-running" in rows[2] and "running" in rows[2]
    assert "so far" in rows[2]


def test_it_shows_the_deadline_and_lease_of_a_running_task(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    task = api.submit(personas.client, timeout_seconds=600)["task_id"]
    api.claim(agent_id, agent)
    body = text(console.get(f"/tasks/{task}"))
    deadline = body[body.index('data-field="deadline"') :][:400]
    assert ">in 10 min<" in deadline or ">in 9 min<" in deadline
    assert "10 min after the claim" in deadline
    lease = body[body.index('data-field="lease"') :][:300]
    seconds = settings.lease_seconds
    assert f">in {seconds} s<" in lease or f">in {seconds - 1} s<" in lease
    # A running task's page refreshes itself, but not while the operator types a reason.
    assert f'hx-get="/tasks/{task}" hx-trigger="every 5s"' in body
    assert "data-pause-while-editing" in body
    assert "Ask agent to stop" in body


def test_it_shows_when_a_waiting_task_expires_and_that_it_expired(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    task = api.submit(personas.client, expires_in_seconds=120)["task_id"]
    body = text(console.get(f"/tasks/{task}"))
    expires = body[body.index('data-field="expires"') :][:400]
    assert "<dt>Expires</dt>" in expires and (">in 2 min<" in expires or ">in 1 min<" in expires)
    assert 'id="cancel-form"' in body

    sweep(app, 180)
    assert task_json(api, personas, task)["status"] == "EXPIRED"
    body = text(console.get(f"/tasks/{task}"))
    assert '<span class="badge badge-expired">Expired</span>' in body
    assert 'id="expiry-state"' in body and "no agent claimed it before" in body
    assert 'id="cancel-form"' not in body and 'id="requeue-form"' not in body
    assert 'hx-trigger="every' not in body


def test_it_cancels_a_waiting_task_at_once(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    task = api.submit(personas.client)["task_id"]
    response = console.post(
        f"/tasks/{task}/cancel",
        data={"csrf_token": form_token(console, f"/tasks/{task}"), "reason": "wrong <input>"},
    )
    assert response.status_code == 302 and response.headers["Location"] == f"/tasks/{task}"

    stored = task_json(api, personas, task)
    assert stored["status"] == "CANCELLED"
    assert stored["cancelled_by"] == "admin:operator@example.com"
    assert stored["cancellation_reason"] == "wrong <input>"
    body = text(console.get(f"/tasks/{task}"))
    assert "Task cancelled." in body
    state = body[body.index('id="cancel-state"') :][:600]
    assert "Cancelled" in state and "admin:operator@example.com" in state
    assert "wrong &lt;input&gt;" in state
    assert 'id="cancel-form"' not in body


def test_it_asks_the_agent_to_stop_a_running_task_and_shows_the_wait(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    task = api.submit(personas.client)["task_id"]
    api.claim(agent_id, agent)
    response = console.post(
        f"/tasks/{task}/cancel",
        data={"csrf_token": form_token(console, f"/tasks/{task}"), "reason": "client withdrew"},
    )
    assert response.status_code == 302

    stored = task_json(api, personas, task)
    assert stored["status"] == "ACTIVE" and stored["cancel_requested_at"] is not None
    body = text(console.get(f"/tasks/{task}"))
    assert f"Asked agent {agent_id} to stop" in body
    state = body[body.index('id="cancel-state"') :][:800]
    assert "Cancel requested" in state and "admin:operator@example.com" in state
    assert "client withdrew" in state and "Waiting for the agent" in state
    assert 'id="cancel-form"' not in body  # asking twice changes nothing
    assert "cancel requested</span>" in body  # the marker by the status
    tasks_page = text(console.get("/tasks"))
    row = tasks_page[tasks_page.index(f'<tr data-task-id="{task}"') :][:1200]
    assert "cancel requested" in row

    # The agent stays alive but never confirms: the sweep ends it after the grace period.
    with time_machine.travel(utcnow() + timedelta(seconds=settings.cancel_grace_seconds + 1)):
        beat = api.post(f"/ains/agents/{agent_id}/heartbeat", agent, json={"status": "ACTIVE"})
        assert beat.status_code == 200 and beat.get_json()["cancelled_task_ids"] == [task]
        sweep(app, 0)
        body = text(console.get(f"/tasks/{task}"))
    assert '<span class="badge badge-cancelled">Cancelled</span>' in body
    assert "badge-cancelled" in attempts(body)[1]
    assert 'by <span class="mono">system:cancel</span>' in attempts(body)[1]
    assert "Waiting for the agent" not in body


def test_it_says_a_finished_task_cannot_be_cancelled(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    task = api.submit(personas.client)["task_id"]
    api.claim(agent_id, agent)
    api.post(f"/ains/tasks/{task}/complete", agent, json={"result_data": {}})
    response = console.post(
        f"/tasks/{task}/cancel", data={"csrf_token": form_token(console)}, follow_redirects=True
    )
    assert response.status_code == 200
    assert "Not cancelled: task" in text(response) and "is already COMPLETED" in text(response)
    assert task_json(api, personas, task)["status"] == "COMPLETED"


def test_it_refuses_a_reason_that_is_too_long(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    task = api.submit(personas.client)["task_id"]
    response = console.post(
        f"/tasks/{task}/cancel",
        data={"csrf_token": form_token(console), "reason": "x" * 2001},
        follow_redirects=True,
    )
    assert "Not cancelled: Reason (optional): Field cannot be longer than 2000" in text(response)
    assert task_json(api, personas, task)["status"] == "PENDING"


def test_it_refuses_a_cancel_or_requeue_without_the_csrf_token(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent = api.register_agent(personas.fleet)
    (failed,) = fail_tasks(api, personas.client, agent, 1)
    waiting = api.submit(personas.client)["task_id"]
    events_before = len(task_json(api, personas, failed)["events"])

    response = console.post(f"/tasks/{waiting}/cancel", data={"reason": "no token"})
    assert response.status_code == 400
    assert "The form was stale" in text(response)
    response = console.post(f"/tasks/{failed}/requeue", data={"csrf_token": "forged"})
    assert response.status_code == 400

    assert task_json(api, personas, waiting)["status"] == "ASSIGNED"  # routed, still waiting
    after = task_json(api, personas, failed)
    assert after["status"] == "FAILED" and len(after["events"]) == events_before


def test_it_requeues_a_failed_task_from_its_page(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent = api.register_agent(personas.fleet)
    (task,) = fail_tasks(api, personas.client, agent, 1, error="model overloaded")
    body = text(console.get(f"/tasks/{task}"))
    assert 'id="requeue-form"' in body and 'id="cancel-form"' not in body

    response = console.post(
        f"/tasks/{task}/requeue", data={"csrf_token": form_token(console, f"/tasks/{task}")}
    )
    assert response.status_code == 302 and response.headers["Location"] == f"/tasks/{task}"
    stored = task_json(api, personas, task)
    # Pending again, and at once routed to the agent (its only one, free again).
    assert stored["status"] == "ASSIGNED" and stored["retry_count"] == 0
    requeued = stored["events"][-2]
    assert requeued["to_status"] == "PENDING"
    assert requeued["actor"] == "admin:operator@example.com"
    body = text(console.get(f"/tasks/{task}"))
    assert "Requeued: the task is pending again" in body
    assert "model overloaded" in body  # the last error stays readable
    assert 'id="cancel-form"' in body


def test_it_says_why_a_task_was_not_requeued(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    task = api.submit(personas.client)["task_id"]
    response = console.post(
        f"/tasks/{task}/requeue", data={"csrf_token": form_token(console)}, follow_redirects=True
    )
    assert "Not requeued: the task is PENDING, not FAILED." in text(response)
    assert len(task_json(api, personas, task)["events"]) == 1


def test_it_sends_a_signed_out_operator_to_the_login_page(
    client: FlaskClient, operator: dict[str, str], api: Api, personas: Personas
) -> None:
    task = api.submit(personas.client)["task_id"]
    response = client.get(f"/tasks/{task}")
    assert response.status_code == 302 and "/login?next=" in response.headers["Location"]

    # Signed in once (the session holds a CSRF token), then signed out: a replayed form
    # goes to the login page and changes nothing.
    sign_in(client, operator["email"], operator["password"])
    token = form_token(client, f"/tasks/{task}")
    client.post("/logout", data={"csrf_token": token})
    response = client.post(f"/tasks/{task}/cancel", data={"csrf_token": token})
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert task_json(api, personas, task)["status"] == "PENDING"
