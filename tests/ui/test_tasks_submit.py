"""Submitting a task or a batch from the console: the API's fields and rules, errors shown
at their fields, hostile input refused or shown escaped."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import AuditEvent, OperatorRole, Task, TaskEvent
from tests.ui.conftest import console_as, form_token, text

FIELDS = {
    "client_id": "client-1",
    "task_type": "sales-report",
    "capability_required": "report-v1",
    "priority": "5",
    "input_data": "{}",
    "copies": "1",
    "max_retries": "3",
    "retry_policy": "exponential",
    "timeout_seconds": "300",
}


def post(console: FlaskClient, **changes: Any) -> Any:
    data = {**FIELDS, "csrf_token": form_token(console, "/tasks/new"), **changes}
    return console.post("/tasks/new", data=data)


def all_tasks(app: Flask) -> list[Task]:
    with app.app_context():
        rows = list(db.session.scalars(db.select(Task).order_by(Task.enqueued_at)))
        db.session.expunge_all()
        db.session.remove()
        return rows


def field_error(body: str, name: str) -> str:
    """The inline error under field ``name``."""
    match = re.search(rf'<p class="field-error" id="{name}-error">([^<]*)</p>', body)
    assert match, f"no error under {name}"
    return match.group(1)


def test_the_form_is_linked_from_the_list_and_names_the_api_fields(console: FlaskClient) -> None:
    assert 'href="/tasks/new"' in text(console.get("/tasks"))
    page = console.get("/tasks/new")
    assert page.status_code == 200
    body = text(page)
    for name in (*FIELDS, "expires_in_seconds", "retry_on_timeout", "csrf_token"):
        assert f'name="{name}"' in body, name


def test_it_submits_one_task_and_opens_it(console: FlaskClient, app: Flask) -> None:
    response = post(
        console,
        input_data='{"quarter": "Q3", "regions": ["north", "south"]}',
        priority="8",
        max_retries="1",
        retry_policy="linear",
        timeout_seconds="60",
        expires_in_seconds="3600",
        retry_on_timeout="y",
    )
    assert response.status_code == 302
    [task] = all_tasks(app)
    assert response.headers["Location"] == f"/tasks/{task.id}"
    assert task.client_id == "client-1" and task.task_type == "sales-report"
    assert task.input_data == {"quarter": "Q3", "regions": ["north", "south"]}
    assert (task.priority, task.max_retries, task.retry_policy) == (8, 1, "linear")
    assert task.timeout_seconds == 60 and task.retry_on_timeout is True
    assert task.expires_at is not None and task.status in ("PENDING", "ASSIGNED")
    page = text(console.get(response.headers["Location"]))
    assert f"Task {task.id} submitted" in page
    with app.app_context():
        event = db.session.scalars(db.select(TaskEvent).where(TaskEvent.task_id == task.id)).one()
        assert event.reason == "submitted" and event.actor == "admin:operator@example.com"
        audit = db.session.scalars(
            db.select(AuditEvent).where(AuditEvent.action == "task.submit")
        ).one()
        assert audit.actor == "operator:operator@example.com" and audit.outcome == "ok"
        db.session.remove()


def test_a_json_array_submits_a_batch_one_task_per_input(console: FlaskClient, app: Flask) -> None:
    inputs = [{"n": i} for i in range(7)]
    response = post(console, input_data=json.dumps(inputs))
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/tasks?client=client-1")
    tasks = all_tasks(app)
    assert [t.input_data for t in tasks] == inputs
    page = text(console.get(response.headers["Location"]))
    assert "Submitted 7 tasks." in page and "and 2 more" in page
    # The first ones are linked.
    for t in tasks[:5]:
        assert f'href="/tasks/{t.id}"' in page


def test_copies_submit_the_same_input_n_times(console: FlaskClient, app: Flask) -> None:
    response = post(console, input_data='{"same": true}', copies="4")
    assert response.status_code == 302
    tasks = all_tasks(app)
    assert len(tasks) == 4 and all(t.input_data == {"same": True} for t in tasks)


def test_bad_json_is_shown_at_the_input_and_the_form_keeps_what_was_typed(
    console: FlaskClient, app: Flask
) -> None:
    response = post(console, input_data='{"quarter": "Q3",}', task_type="weekly <b>")
    assert response.status_code == 422
    body = text(response)
    assert "Nothing was submitted." in body
    assert field_error(body, "input_data").startswith("not valid JSON: Expecting property name")
    assert "{&#34;quarter&#34;: &#34;Q3&#34;,}" in body or "{&quot;quarter&quot;" in body
    assert "weekly &lt;b&gt;" in body and "weekly <b>" not in body
    assert all_tasks(app) == []


def test_each_wrong_field_gets_its_own_message(console: FlaskClient, app: Flask) -> None:
    body = text(post(console, client_id="", task_type="", copies="0", timeout_seconds="9999"))
    assert field_error(body, "client_id") == "This field is required."
    assert field_error(body, "task_type") == "This field is required."
    assert "between 1 and 100" in field_error(body, "copies")
    assert "between 1 and 3600" in field_error(body, "timeout_seconds")
    # The API's own schema: a capability name has a pattern.
    body = text(post(console, capability_required="not a capability!"))
    assert "String should match pattern" in field_error(body, "capability_required")
    for value, message in [
        ("42", "a JSON object {...}, or an array of them"),
        ("[]", "1 to 100 inputs"),
        ("[1, {}]", "item 0: Input should be a valid dictionary"),
        (json.dumps([{}] * 101), "1 to 100 inputs"),
    ]:
        body = text(post(console, input_data=value))
        assert message in field_error(body, "input_data").replace("&#39;", "'"), value
    body = text(post(console, input_data="[{}, {}]", copies="3"))
    assert "leave at 1 with a JSON array" in field_error(body, "copies")
    assert all_tasks(app) == []


def test_hostile_input_is_refused_or_stored_as_text(console: FlaskClient, app: Flask) -> None:
    # A raw NUL never reaches a query; an escaped one cannot be stored.
    assert post(console, input_data='{"a": "\x00"}').status_code == 400
    body = text(post(console, input_data='{"a": "\\u0000"}'))
    assert "holds a NUL" in field_error(body, "input_data")
    body = text(post(console, input_data='{"a": "\\ud800"}'))
    assert "unpaired surrogate" in field_error(body, "input_data")
    # Nesting deep enough to break a recursive parser is an error, not a 500.
    deep = "[" * 20_000 + "]" * 20_000
    response = post(console, input_data=deep)
    assert response.status_code == 422
    assert "nested too deeply" in field_error(text(response), "input_data")
    # More than the body limit is a 413.
    assert post(console, input_data='{"x": "' + "a" * 600_000 + '"}').status_code == 413
    assert all_tasks(app) == []
    # Markup and SQL are just text: stored as typed, shown escaped.
    hostile = "<img src=x onerror=alert(1)>'; DROP TABLE tasks; --"
    response = post(console, task_type=hostile, input_data=json.dumps({"note": hostile}))
    assert response.status_code == 302
    [task] = all_tasks(app)
    assert task.task_type == hostile and task.input_data == {"note": hostile}
    listing = text(console.get("/tasks"))
    assert "<img src=x" not in listing and "&lt;img src=x onerror=alert(1)&gt;" in listing


def test_viewers_cannot_open_or_post_the_form(app: Flask) -> None:
    viewer = console_as(app, OperatorRole.VIEWER)
    assert viewer.get("/tasks/new").status_code == 403
    token = form_token(viewer, "/tasks")
    response = viewer.post("/tasks/new", data={**FIELDS, "csrf_token": token})
    assert response.status_code == 403
    assert all_tasks(app) == []


def test_it_refuses_a_post_without_the_csrf_token(console: FlaskClient, app: Flask) -> None:
    assert console.post("/tasks/new", data=FIELDS).status_code == 400
    assert all_tasks(app) == []


def submit_key(console: FlaskClient) -> str:
    """The hidden idempotency key of a freshly opened form."""
    page = text(console.get("/tasks/new"))
    match = re.search(r'id="submit_key" name="submit_key" type="hidden" value="([^"]+)"', page)
    assert match, "no submit key in the form"
    return match.group(1)


def test_json_the_api_refuses_is_refused_at_the_input(console: FlaskClient, app: Flask) -> None:
    deep = '{"a":' * 70 + "1" + "}" * 70
    for value, message in [
        ('{"x": NaN}', "NaN is not valid JSON"),
        ('{"x": Infinity}', "Infinity is not valid JSON"),
        ('{"x": -Infinity}', "-Infinity is not valid JSON"),
        ('{"x": 1e999}', "1e999 is out of range"),
        ('[{"x": [1, 2e400]}]', "2e400 is out of range"),
        (deep, "nested too deeply (at most 64 levels)"),
    ]:
        response = post(console, input_data=value)
        assert response.status_code == 422, value
        assert field_error(text(response), "input_data") == message, value
    assert all_tasks(app) == []
    # The limit itself is allowed, as in the API; a large finite float is fine.
    response = post(console, input_data='{"a":' * 63 + '{"big": 1e308}' + "}" * 63)
    assert response.status_code == 302
    [task] = all_tasks(app)
    assert task.input_data["a"]["a"] is not None


def test_a_replayed_post_creates_nothing_new(console: FlaskClient, app: Flask) -> None:
    key = submit_key(console)
    assert key != submit_key(console)  # each opened form has its own
    first = post(console, input_data='{"n": 1}', copies="3", submit_key=key)
    assert first.status_code == 302
    created = sorted(t.id for t in all_tasks(app))
    assert len(created) == 3
    again = post(console, input_data='{"n": 1}', copies="3", submit_key=key)
    assert again.status_code == 302 and again.location == first.location
    assert sorted(t.id for t in all_tasks(app)) == created
    page = text(console.get(again.location))
    assert "Already submitted 3 tasks." in page
    # One task: the replay opens the same task.
    one_key = submit_key(console)
    first = post(console, input_data='{"n": 2}', submit_key=one_key)
    again = post(console, input_data='{"n": 2}', submit_key=one_key)
    assert again.status_code == 302 and again.location == first.location
    assert "was already submitted" in text(console.get(again.location))
    assert len(all_tasks(app)) == 4
    # The same form edited (after going back) and sent again: refused, with a fresh key
    # that then submits the new values once.
    response = post(console, input_data='{"n": 3}', submit_key=one_key)
    assert response.status_code == 422
    body = text(response)
    assert "already submitted with other values" in body
    assert len(all_tasks(app)) == 4
    fresh = re.search(r'name="submit_key" type="hidden" value="([^"]+)"', body)
    assert fresh and fresh.group(1) != one_key
    assert post(console, input_data='{"n": 3}', submit_key=fresh.group(1)).status_code == 302
    assert post(console, input_data='{"n": 3}', submit_key=fresh.group(1)).status_code == 302
    assert len(all_tasks(app)) == 5
    # A tampered key is an error, not a query.
    response = post(console, submit_key="k" * 65)
    assert response.status_code == 422 and "This form is damaged" in text(response)
    assert len(all_tasks(app)) == 5


def test_copies_cannot_multiply_the_input_past_the_body_limit(
    console: FlaskClient, app: Flask
) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    value = json.dumps({"blob": "a" * (limit // 3)}, separators=(",", ":"))
    response = post(console, input_data=value, copies="4")
    assert response.status_code == 422
    message = field_error(text(response), "copies")
    assert f"at most {limit:,} per submit" in message
    assert all_tasks(app) == []
    # Under the limit it submits.
    assert post(console, input_data=value, copies="2").status_code == 302
    assert len(all_tasks(app)) == 2
