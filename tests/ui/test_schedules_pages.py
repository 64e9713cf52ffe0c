"""Schedules pages: the list, the form with its live preview, one schedule, its buttons."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import Schedule, ScheduleExecution, ScheduleStatus, Task
from app.services import scheduling
from app.services.principal import operator as operator_principal
from app.ui.schedules import HISTORY_SIZE, PREVIEW_COUNT
from tests.ui.conftest import HTMX, form_token, text

# Monday 2 March 2026, 08:00 UTC: London is on GMT, New York on EST.
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ROW = re.compile(r'<tr data-schedule-id="([^"]+)"')
RUN = re.compile(
    r'<li class="run">\s*<span class="run-when"><time datetime="[^"]+" title="[^"]+">([^<]+)</time>'
)
EXECUTION = re.compile(r'<tr data-execution-id="([^"]+)"')


@pytest.fixture(autouse=True)
def clock() -> Iterator[None]:
    """Pinned before signing in: a session signed in the future would not be valid yet."""
    with time_machine.travel(NOW, tick=False):
        yield


def make_schedule(app: Flask, now: datetime = NOW, **fields: Any) -> str:
    """A schedule created through the service (as a seeding operator); its id."""
    body = {
        "client_id": "client-1",
        "description": "Weekday sales report",
        "task_type": "sales-report",
        "capability_required": "report-v1",
        "cron_expression": "0 9 * * 1-5",
        "timezone": "Europe/London",
        **fields,
    }
    with app.app_context():
        schedule = scheduling.create_schedule(operator_principal("seed@example.com"), body, now=now)
        schedule_id = schedule.id
        db.session.remove()
        return schedule_id


def stored(app: Flask, schedule_id: str) -> Schedule:
    with app.app_context():
        schedule = db.session.get(Schedule, schedule_id)
        assert schedule is not None
        db.session.expunge(schedule)
        return schedule


def only_schedule(app: Flask) -> Schedule:
    with app.app_context():
        (schedule,) = db.session.scalars(db.select(Schedule)).all()
        db.session.expunge(schedule)
        return schedule


def schedule_count(app: Flask) -> int:
    with app.app_context():
        return len(db.session.scalars(db.select(Schedule.id)).all())


def executions(app: Flask, schedule_id: str) -> list[ScheduleExecution]:
    with app.app_context():
        rows = db.session.scalars(
            db.select(ScheduleExecution).where(ScheduleExecution.schedule_id == schedule_id)
        ).all()
        for row in rows:
            db.session.expunge(row)
        return list(rows)


def field_error(body: str, name: str) -> str:
    """The error shown under one field."""
    match = re.search(rf'<p class="field-error" id="{name}-error">([^<]*)</p>', body)
    assert match, f"no error under {name}"
    return match.group(1)


def input_tag(body: str, name: str) -> str:
    match = re.search(rf'<input [^>]*name="{name}"[^>]*>', body)
    assert match, f"no input {name}"
    return match.group(0)


def flashes(body: str) -> str:
    start = body.index('<div class="flashes">')
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body[start : body.index("</main>")]))


def form_data(console: FlaskClient, path: str = "/schedules/new", **fields: Any) -> dict[str, Any]:
    return {
        "csrf_token": form_token(console, path),
        "client_id": "client-1",
        "description": "Weekday sales report",
        "kind": "cron",
        "cron_expression": "0 9 * * 1-5",
        "interval_seconds": "",
        "run_at": "",
        "timezone": "Europe/London",
        "task_type": "sales-report",
        "capability_required": "report-v1",
        "input_data": '{"region": "EMEA", "format": "pdf"}',
        "priority": "7",
        "max_retries": "2",
        "retry_policy": "linear",
        "timeout_seconds": "600",
        "expires_in_seconds": "",
        "misfire_policy": "skip",
        "overlap_policy": "skip",
        **fields,
    }


# ---------------------------------------------------------------------------------------
# Access
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/schedules",
        "/schedules/new",
        "/schedules/sched_x",
        "/schedules/sched_x/edit",
        "/schedules/preview?cron_expression=*+*+*+*+*",
    ],
)
def test_it_sends_anonymous_visitors_to_the_login_page(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response.location.startswith("/login?next=")


def test_it_makes_htmx_sign_in_before_a_preview(client: FlaskClient) -> None:
    response = client.get("/schedules/preview?cron_expression=*+*+*+*+*", headers=HTMX)
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login?next=/schedules/preview")


def test_it_links_the_schedules_page_from_the_nav(console: FlaskClient) -> None:
    body = text(console.get("/schedules"))
    assert re.search(r'<a href="/schedules" aria-current="page">Schedules', body)
    assert re.search(r'<a href="/schedules"[^>]*>Schedules', text(console.get("/tasks")))


# ---------------------------------------------------------------------------------------
# The list
# ---------------------------------------------------------------------------------------


def test_it_lists_schedules_with_their_timing_next_and_last_runs(
    console: FlaskClient, app: Flask
) -> None:
    weekday = make_schedule(app, now=NOW - timedelta(minutes=2))
    hourly = make_schedule(
        app,
        now=NOW - timedelta(minutes=1),
        client_id="client-2",
        description=None,
        task_type="inbox-sweep",
        cron_expression=None,
        interval_seconds=3600,
        timezone="UTC",
    )
    paused = make_schedule(app, description="Quarterly <b>close</b>", cron_expression="0 6 1 */3 *")
    with app.app_context():
        principal = operator_principal("seed@example.com")
        scheduling.pause_schedule(principal, paused, True, now=NOW)
        scheduling.run_now(principal, weekday, now=NOW - timedelta(seconds=30))
        db.session.remove()

    response = console.get("/schedules")
    assert response.status_code == 200
    body = text(response)
    assert ROW.findall(body) == [paused, hourly, weekday]  # newest first
    assert '<span data-stat="schedules">3</span> schedules' in body

    row = body[body.index(f'data-schedule-id="{weekday}"') :].split("</tr>")[0]
    assert "Weekday sales report" in row
    assert '<span data-field="client">client-1</span>' in row and ">sales-report<" in row
    assert "at 09:00 on Mon-Fri" in row and "0 9 * * 1-5" in row
    assert '<span data-field="zone">Europe/London</span>' in row
    assert 'class="badge badge-active">Active' in row
    assert "Mon 2026-03-02 09:00 GMT" in row and "in 1 h" in row
    assert "30 s ago" in row  # last run: the run-now
    assert '<td data-label="Runs" class="num">1</td>' in row
    assert "Pause" in row and "Run now" in row and "Resume" not in row

    row = body[body.index(f'data-schedule-id="{hourly}"') :].split("</tr>")[0]
    assert "inbox-sweep" in row and "client-2" in row and "every 3600 s" in row
    assert "Mon 2026-03-02 08:59 UTC" in row  # an hour after it was created

    row = body[body.index(f'data-schedule-id="{paused}"') :].split("</tr>")[0]
    assert "Quarterly &lt;b&gt;close&lt;/b&gt;" in row  # escaped
    assert 'class="badge badge-paused">Paused' in row and ">paused<" in row
    assert "Resume" in row and ">Pause<" not in row
    # Each button posts with the token and comes back to the list.
    assert row.count('name="csrf_token"') == 2 and row.count('name="next" value="/schedules"') == 2


def test_it_shows_an_empty_state_and_a_new_schedule_button(console: FlaskClient) -> None:
    body = text(console.get("/schedules"))
    assert "No schedules yet." in body
    assert 'href="/schedules/new"' in body


def test_it_filters_schedules_by_status_and_client(console: FlaskClient, app: Flask) -> None:
    first = make_schedule(app)
    other = make_schedule(app, client_id="client-2")
    with app.app_context():
        scheduling.pause_schedule(operator_principal("seed@example.com"), first, True)
        db.session.remove()
    assert ROW.findall(text(console.get("/schedules?status=PAUSED"))) == [first]
    assert ROW.findall(text(console.get("/schedules?status=active"))) == [other]
    assert ROW.findall(text(console.get("/schedules?client=client-2"))) == [other]
    empty = text(console.get("/schedules?client=nobody"))
    assert "No schedules match these filters." in empty

    response = console.get("/schedules?status=SLEEPING")
    assert response.status_code == 422
    assert "Status: &#39;SLEEPING&#39; is not one of" in text(response)


def test_it_serves_the_list_fragment_to_htmx(console: FlaskClient, app: Flask) -> None:
    schedule_id = make_schedule(app)
    fragment = console.get("/schedules?client=client-1", headers=HTMX)
    assert "HX-Request" in fragment.headers["Vary"]
    body = text(fragment)
    assert body.lstrip().startswith('<section id="schedule-results"') and "<html" not in body
    assert ROW.findall(body) == [schedule_id]
    assert 'hx-trigger="every 10s"' in body  # the first page keeps next runs current
    assert 'name="next" value="/schedules?client=client-1"' in body

    page = text(console.get("/schedules?client=client-1"))
    assert page.startswith("<!doctype html>") and 'id="schedule-filters"' in page


def test_it_pages_through_many_schedules(console: FlaskClient, app: Flask) -> None:
    from app.ui.schedules import PAGE_SIZE

    ids = [make_schedule(app, now=NOW - timedelta(seconds=i)) for i in range(PAGE_SIZE + 1)]
    first = text(console.get("/schedules"))
    assert ROW.findall(first) == ids[:PAGE_SIZE] and "page 1 of 2" in first
    second = console.get("/schedules?page=2", headers=HTMX)
    assert ROW.findall(text(second)) == ids[PAGE_SIZE:]
    assert 'hx-trigger="every' not in text(second)


# ---------------------------------------------------------------------------------------
# Creating
# ---------------------------------------------------------------------------------------


def test_it_shows_an_empty_form_with_a_preview_prompt(console: FlaskClient) -> None:
    response = console.get("/schedules/new")
    assert response.status_code == 200
    body = text(response)
    for name in ("client_id", "cron_expression", "interval_seconds", "run_at", "timezone"):
        assert f'name="{name}"' in body, name
    assert '<input checked id="kind-0" name="kind" type="radio" value="cron">' in body
    assert '<datalist id="common-zones">' in body and '<option value="Europe/London">' in body
    assert 'value="UTC"' in input_tag(body, "timezone")
    assert 'list="common-zones"' in input_tag(body, "timezone")
    assert 'type="number" value="5"' in input_tag(body, "priority")
    assert "Type a cron expression to see its next runs." in body
    # The preview asks again as the timing changes.
    assert 'hx-get="/schedules/preview"' in body
    assert 'hx-trigger="input changed delay:300ms from:#timing-fields' in body
    assert 'hx-include="#timing-fields"' in body


def test_it_creates_a_cron_schedule(console: FlaskClient, app: Flask) -> None:
    response = console.post("/schedules/new", data=form_data(console))
    assert response.status_code == 302, text(response)
    schedule = only_schedule(app)
    assert response.location == f"/schedules/{schedule.id}"
    assert schedule.client_id == "client-1"
    assert schedule.description == "Weekday sales report"
    assert schedule.cron_expression == "0 9 * * 1-5"
    assert schedule.interval_seconds is None and schedule.run_at is None
    assert schedule.timezone == "Europe/London"
    assert schedule.input_data == {"region": "EMEA", "format": "pdf"}
    assert (schedule.priority, schedule.max_retries, schedule.retry_policy) == (7, 2, "linear")
    assert schedule.timeout_seconds == 600 and schedule.expires_in_seconds is None
    assert (schedule.misfire_policy, schedule.overlap_policy) == ("skip", "skip")
    assert schedule.status == ScheduleStatus.ACTIVE
    assert schedule.created_by == "admin:operator@example.com"
    assert schedule.next_run_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    page = text(console.get(response.location))
    assert "Schedule created." in flashes(page)


def test_it_creates_a_one_time_schedule_at_a_wall_time_in_its_zone(
    console: FlaskClient, app: Flask
) -> None:
    data = form_data(
        console,
        kind="once",
        cron_expression="this is ignored",
        run_at="2026-07-01T09:30",
        timezone="America/New_York",
    )
    response = console.post("/schedules/new", data=data)
    assert response.status_code == 302, text(response)
    schedule = only_schedule(app)
    assert schedule.kind == "once" and schedule.cron_expression is None
    assert schedule.run_at == datetime(2026, 7, 1, 13, 30, tzinfo=UTC)  # EDT is UTC-4
    assert schedule.next_run_at == schedule.run_at


def test_it_creates_an_interval_schedule(console: FlaskClient, app: Flask) -> None:
    data = form_data(console, kind="interval", interval_seconds="900", timezone="UTC")
    assert console.post("/schedules/new", data=data).status_code == 302
    schedule = only_schedule(app)
    assert schedule.interval_seconds == 900 and schedule.cron_expression is None
    assert schedule.next_run_at == NOW + timedelta(seconds=900)


@pytest.mark.parametrize(
    ("fields", "name", "message"),
    [
        ({"cron_expression": "61 9 * * *"}, "cron_expression", "minute field &#39;61&#39;"),
        ({"cron_expression": "0 9 * *"}, "cron_expression", "expected 5 fields"),
        ({"cron_expression": ""}, "cron_expression", "type a cron expression"),
        ({"kind": "interval"}, "interval_seconds", "type a number of seconds"),
        ({"kind": "interval", "interval_seconds": "0"}, "interval_seconds", "between 1 and"),
        ({"kind": "once"}, "run_at", "pick a date and time"),
        ({"kind": "once", "run_at": "2026-03-01T09:00"}, "run_at", "is in the past"),
        ({"timezone": "europe/london"}, "timezone", "did you mean &#39;Europe/London&#39;?"),
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        (
            {"kind": "once", "run_at": "2026-07-01T09:30", "timezone": "Nowhere"},
            "timezone",
            "unknown time zone",
        ),
        ({"client_id": ""}, "client_id", "This field is required."),
        ({"task_type": " "}, "task_type", "This field is required."),
        ({"capability_required": "report v1"}, "capability_required", "use letters, digits"),
        ({"input_data": "{region: EMEA}"}, "input_data", "not valid JSON"),
        ({"input_data": "[1, 2]"}, "input_data", "must be a JSON object"),
        ({"priority": "11"}, "priority", "between 1 and 10"),
        ({"max_retries": ""}, "max_retries", "This field is required."),
        ({"timeout_seconds": "abc"}, "timeout_seconds", "Not a valid integer value."),
        ({"misfire_policy": "later"}, "misfire_policy", "&#39;later&#39; is not one of"),
    ],
)
def test_it_shows_what_is_wrong_next_to_the_field(
    console: FlaskClient,
    app: Flask,
    fields: dict[str, str],
    name: str,
    message: str,
) -> None:
    response = console.post("/schedules/new", data=form_data(console, **fields))
    assert response.status_code == 422
    body = text(response)
    assert message in field_error(body, name)
    assert "The schedule was not created." in body
    assert 'aria-invalid="true"' in body
    assert schedule_count(app) == 0


def test_it_keeps_what_was_typed_and_previews_the_error(console: FlaskClient) -> None:
    data = form_data(console, cron_expression="0 25 * * *", input_data='{"a": 1}')
    body = text(console.post("/schedules/new", data=data))
    assert 'value="0 25 * * *"' in body
    assert "{&#34;a&#34;: 1}" in body or '{"a": 1}' in body or "{&quot;a&quot;: 1}" in body
    assert 'data-preview="error"' in body and "hour field &#39;25&#39;" in body


def test_it_needs_a_csrf_token_to_create(console: FlaskClient, app: Flask) -> None:
    data = form_data(console)
    del data["csrf_token"]
    assert console.post("/schedules/new", data=data).status_code == 400
    assert schedule_count(app) == 0


# ---------------------------------------------------------------------------------------
# Editing
# ---------------------------------------------------------------------------------------


def test_it_fills_the_edit_form_from_the_schedule(console: FlaskClient, app: Flask) -> None:
    schedule_id = make_schedule(
        app,
        cron_expression=None,
        run_at=datetime(2026, 7, 1, 13, 30, tzinfo=UTC),
        timezone="America/New_York",
        input_data={"region": "EMEA"},
        priority=8,
    )
    body = text(console.get(f"/schedules/{schedule_id}/edit"))
    assert '<input checked id="kind-2" name="kind" type="radio" value="once">' in body
    assert 'value="2026-07-01T09:30:00"' in input_tag(body, "run_at")
    assert 'value="America/New_York"' in body
    assert "&#34;region&#34;: &#34;EMEA&#34;" in body
    assert 'value="8"' in input_tag(body, "priority")
    assert 'value="client-1" readonly' in body and 'name="client_id"' not in body
    assert "Wed 2026-07-01 09:30 EDT" in body  # the preview of the one run


def test_it_saves_task_fields_without_moving_an_interval(console: FlaskClient, app: Flask) -> None:
    schedule_id = make_schedule(
        app, now=NOW - timedelta(minutes=20), cron_expression=None, interval_seconds=3600
    )
    before = stored(app, schedule_id)
    path = f"/schedules/{schedule_id}/edit"
    data = form_data(
        console,
        path,
        kind="interval",
        interval_seconds="3600",
        timezone="Europe/London",
        description="Hourly sweep",
        priority="9",
        input_data='{"inbox": "sales"}',
        expires_in_seconds="120",
    )
    response = console.post(path, data=data)
    assert response.status_code == 302 and response.location == f"/schedules/{schedule_id}"
    after = stored(app, schedule_id)
    assert (after.description, after.priority) == ("Hourly sweep", 9)
    assert after.input_data == {"inbox": "sales"} and after.expires_in_seconds == 120
    # The same timing is not resent: the interval keeps its anchor and its next run.
    assert after.anchor_at == before.anchor_at and after.next_run_at == before.next_run_at
    assert "Schedule saved." in flashes(text(console.get(response.location)))


def test_it_edits_a_finished_one_time_schedule_without_touching_its_time(
    console: FlaskClient, app: Flask
) -> None:
    run_at = datetime(2026, 3, 2, 9, 30, 15, tzinfo=UTC)
    schedule_id = make_schedule(app, cron_expression=None, run_at=run_at, timezone="Asia/Tokyo")
    with app.app_context():
        assert scheduling.fire_due(run_at + timedelta(seconds=1)).fired == 1
        db.session.remove()
    assert stored(app, schedule_id).status == ScheduleStatus.COMPLETED
    path = f"/schedules/{schedule_id}/edit"
    with time_machine.travel(run_at + timedelta(hours=1), tick=False):
        body = text(console.get(path))
        assert 'value="2026-03-02T18:30:15"' in input_tag(body, "run_at")  # JST
        data = form_data(
            console,
            path,
            kind="once",
            run_at="2026-03-02T18:30:15",
            timezone="Asia/Tokyo",
            description="Sent the quarter-close reminder",
        )
        response = console.post(path, data=data)
    assert response.status_code == 302, text(response)
    after = stored(app, schedule_id)
    assert after.description == "Sent the quarter-close reminder"
    assert after.run_at == run_at and after.status == ScheduleStatus.COMPLETED


def test_it_changes_the_kind_of_a_schedule(console: FlaskClient, app: Flask) -> None:
    schedule_id = make_schedule(app, cron_expression=None, interval_seconds=3600)
    path = f"/schedules/{schedule_id}/edit"
    data = form_data(
        console, path, kind="cron", cron_expression="30 7 * * *", timezone="America/New_York"
    )
    assert console.post(path, data=data).status_code == 302
    after = stored(app, schedule_id)
    assert after.cron_expression == "30 7 * * *" and after.interval_seconds is None
    assert after.timezone == "America/New_York"
    assert after.next_run_at == datetime(2026, 3, 2, 12, 30, tzinfo=UTC)  # 07:30 EST


def test_it_shows_edit_errors_and_changes_nothing(console: FlaskClient, app: Flask) -> None:
    schedule_id = make_schedule(app)
    path = f"/schedules/{schedule_id}/edit"
    response = console.post(path, data=form_data(console, path, cron_expression="0 9 31 2 *"))
    assert response.status_code == 422
    body = text(response)
    assert "never occurs" in field_error(body, "cron_expression")
    assert "The schedule was not saved." in body
    assert stored(app, schedule_id).cron_expression == "0 9 * * 1-5"


def test_it_answers_404_for_an_unknown_or_deleted_schedule(
    console: FlaskClient, app: Flask
) -> None:
    assert console.get("/schedules/sched_nope").status_code == 404
    assert console.get("/schedules/sched_nope/edit").status_code == 404
    schedule_id = make_schedule(app)
    with app.app_context():
        scheduling.delete_schedule(operator_principal("seed@example.com"), schedule_id)
        db.session.remove()
    response = console.get(f"/schedules/{schedule_id}")
    assert response.status_code == 404 and "not found" in text(response)


# ---------------------------------------------------------------------------------------
# Buttons
# ---------------------------------------------------------------------------------------


def post_button(console: FlaskClient, path: str, **data: str) -> Any:
    return console.post(path, data={"csrf_token": form_token(console, "/schedules"), **data})


def test_it_pauses_and_resumes_a_schedule(console: FlaskClient, app: Flask) -> None:
    schedule_id = make_schedule(app)
    response = post_button(console, f"/schedules/{schedule_id}/pause")
    assert response.status_code == 302 and response.location == f"/schedules/{schedule_id}"
    assert stored(app, schedule_id).status == ScheduleStatus.PAUSED
    page = text(console.get(response.location))
    assert "Paused: it will not run until you resume it." in flashes(page)
    assert 'class="badge badge-paused">Paused' in page
    assert ">Resume</button>" in page and ">Pause</button>" not in page

    response = post_button(console, f"/schedules/{schedule_id}/resume")
    assert stored(app, schedule_id).status == ScheduleStatus.ACTIVE
    notice = flashes(text(console.get(response.location)))
    assert "Resumed: next run Mon 2026-03-02 09:00 GMT." in notice


def test_it_explains_why_a_finished_schedule_cannot_be_paused(
    console: FlaskClient, app: Flask
) -> None:
    schedule_id = make_schedule(app)
    with app.app_context():
        db.session.get(Schedule, schedule_id).status = ScheduleStatus.COMPLETED  # type: ignore[union-attr]
        db.session.commit()
    response = post_button(console, f"/schedules/{schedule_id}/pause")
    notice = flashes(text(console.get(response.location)))
    assert "Not paused:" in notice and "is COMPLETED" in notice


def test_it_runs_a_schedule_now_and_links_the_run_to_its_task(
    console: FlaskClient, app: Flask
) -> None:
    schedule_id = make_schedule(app)
    response = post_button(console, f"/schedules/{schedule_id}/run-now")
    assert response.status_code == 302 and response.location == f"/schedules/{schedule_id}"
    (execution,) = executions(app, schedule_id)
    assert execution.trigger == "run_now" and execution.task_id is not None
    with app.app_context():
        task = db.session.get(Task, execution.task_id)
        assert task is not None and task.status == "PENDING"
        assert (task.client_id, task.task_type) == ("client-1", "sales-report")

    page = text(console.get(response.location))
    assert f"Run started: task {execution.task_id} is waiting for an agent." in flashes(page)
    assert EXECUTION.findall(page) == [execution.id]
    row = page[page.index(f'data-execution-id="{execution.id}"') :].split("</tr>")[0]
    assert f'href="/tasks/{execution.task_id}"' in row
    assert "Run now" in row and "on time" in row and 'class="badge badge-pending">Pending' in row
    assert "Mon 2026-03-02 08:00 GMT" in row
    assert stored(app, schedule_id).next_run_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_it_comes_back_to_the_list_after_a_button_there(console: FlaskClient, app: Flask) -> None:
    schedule_id = make_schedule(app)
    response = post_button(
        console, f"/schedules/{schedule_id}/run-now", next="/schedules?client=client-1"
    )
    assert response.location == "/schedules?client=client-1"
    # Only paths on this site.
    response = post_button(console, f"/schedules/{schedule_id}/pause", next="//evil.example/")
    assert response.location == f"/schedules/{schedule_id}"


def test_it_deletes_a_schedule_and_keeps_its_tasks(console: FlaskClient, app: Flask) -> None:
    schedule_id = make_schedule(app)
    post_button(console, f"/schedules/{schedule_id}/run-now")
    response = post_button(console, f"/schedules/{schedule_id}/delete")
    assert response.status_code == 302 and response.location == "/schedules"
    assert stored(app, schedule_id).status == ScheduleStatus.DELETED
    page = text(console.get("/schedules"))
    assert "Schedule deleted" in flashes(page) and ROW.findall(page) == []
    (execution,) = executions(app, schedule_id)
    with app.app_context():
        assert db.session.get(Task, execution.task_id) is not None


@pytest.mark.parametrize("action", ["pause", "run-now", "delete"])
def test_it_refuses_a_button_without_the_csrf_token(
    console: FlaskClient, app: Flask, action: str
) -> None:
    schedule_id = make_schedule(app)
    response = console.post(f"/schedules/{schedule_id}/{action}")
    assert response.status_code == 400
    assert stored(app, schedule_id).status == ScheduleStatus.ACTIVE
    assert executions(app, schedule_id) == []


# ---------------------------------------------------------------------------------------
# The live preview
# ---------------------------------------------------------------------------------------


def preview(console: FlaskClient, **query: str) -> Any:
    return console.get("/schedules/preview", query_string=query, headers=HTMX)


def runs(response: Any) -> list[str]:
    return [run.strip() for run in RUN.findall(text(response))]


def test_it_previews_the_next_ten_runs_of_a_cron_expression(console: FlaskClient) -> None:
    response = preview(console, cron_expression="0 9 * * 1-5", timezone="Europe/London")
    assert response.status_code == 200
    assert "HX-Request" in response.headers["Vary"]
    body = text(response)
    assert "<html" not in body and "At 09:00 on Mon-Fri" in body
    assert runs(response)[:3] == [
        "Mon 2026-03-02 09:00 GMT",
        "Tue 2026-03-03 09:00 GMT",
        "Wed 2026-03-04 09:00 GMT",
    ]
    assert len(runs(response)) == PREVIEW_COUNT
    assert "in 1 h" in body


def test_it_previews_across_a_spring_forward(console: FlaskClient) -> None:
    # London skips 01:00-02:00 on Sunday 29 March 2026: the 01:30 run happens at 02:00 BST.
    with time_machine.travel(datetime(2026, 3, 27, 12, 0, tzinfo=UTC), tick=False):
        response = preview(console, cron_expression="30 1 * * *", timezone="Europe/London")
    assert runs(response)[:3] == [
        "Sat 2026-03-28 01:30 GMT",
        "Sun 2026-03-29 02:00 BST",
        "Mon 2026-03-30 01:30 BST",
    ]
    body = text(response)
    assert body.count("clocks change") == 1 and "clocks change · UTC+01:00" in body
    assert "2026-03-29 01:00:00 UTC" in body  # each run also in UTC


def test_it_previews_new_york_keeping_its_wall_clock(console: FlaskClient) -> None:
    with time_machine.travel(datetime(2026, 3, 6, 12, 0, tzinfo=UTC), tick=False):
        response = preview(console, cron_expression="0 9 * * *", timezone="America/New_York")
    assert runs(response)[:4] == [
        "Fri 2026-03-06 09:00 EST",
        "Sat 2026-03-07 09:00 EST",
        "Sun 2026-03-08 09:00 EDT",
        "Mon 2026-03-09 09:00 EDT",
    ]
    body = text(response)
    assert "2026-03-07 14:00:00 UTC" in body and "2026-03-08 13:00:00 UTC" in body


def test_it_previews_intervals_and_one_time_runs(console: FlaskClient) -> None:
    response = preview(console, kind="interval", interval_seconds="90", timezone="UTC")
    assert "Every 90 s" in text(response)
    assert runs(response)[:2] == ["Mon 2026-03-02 08:01:30 UTC", "Mon 2026-03-02 08:03 UTC"]
    assert len(runs(response)) == PREVIEW_COUNT

    response = preview(console, kind="once", run_at="2026-07-01T09:30", timezone="Asia/Tokyo")
    assert runs(response) == ["Wed 2026-07-01 09:30 JST"]
    response = preview(console, kind="once", run_at="2026-03-01T09:30", timezone="UTC")
    assert "Once, but that time has passed" in text(response)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"cron_expression": "*/0 * * * *"}, "Cron expression:</strong> minute field"),
        ({"cron_expression": "0 9 * * *", "timezone": "Europe/Londn"}, "Time zone:</strong>"),
        ({"cron_expression": "@reboot"}, "@reboot is not supported"),
        ({"kind": "interval", "interval_seconds": "soon"}, "Not a valid integer value."),
        ({"kind": "once", "run_at": "tomorrow"}, "Run at (in the time zone):</strong>"),
        ({"cron_expression": "* * * * *", "timezone": ""}, "This field is required."),
    ],
)
def test_it_previews_what_is_wrong(
    console: FlaskClient, query: dict[str, str], message: str
) -> None:
    response = preview(console, **query)
    assert response.status_code == 200  # an answer, not a failed request
    body = text(response)
    assert 'role="alert"' in body and message in body
    assert runs(response) == []


def test_it_asks_for_a_timing_before_previewing(console: FlaskClient) -> None:
    response = preview(console, timezone="UTC")
    assert response.status_code == 200
    assert "Type a cron expression to see its next runs." in text(response)
    response = preview(console, kind="interval")
    assert "Type a number of seconds" in text(response)


def test_it_serves_the_preview_as_a_full_page_too(console: FlaskClient) -> None:
    response = console.get("/schedules/preview?cron_expression=0+9+*+*+*&timezone=UTC")
    assert response.status_code == 200 and "HX-Request" in response.headers["Vary"]
    body = text(response)
    assert body.startswith("<!doctype html>") and "At 09:00 every day" in body


# ---------------------------------------------------------------------------------------
# One schedule and its history
# ---------------------------------------------------------------------------------------


def test_it_shows_a_schedule_with_its_next_runs_and_history(
    console: FlaskClient, app: Flask
) -> None:
    schedule_id = make_schedule(app, overlap_policy="skip", input_data={"region": "EMEA"})
    # The clock fires the 09:00 run two seconds late; Tuesday's is skipped, as Monday's
    # task is still pending and overlap_policy is skip.
    monday, tuesday = datetime(2026, 3, 2, 9, 0, tzinfo=UTC), datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    with app.app_context():
        assert scheduling.fire_due(monday + timedelta(seconds=2)).fired == 1
        assert scheduling.fire_due(tuesday + timedelta(seconds=1)).skipped == 1
        db.session.remove()
    done = {e.scheduled_for: e for e in executions(app, schedule_id)}
    fired, skipped = done[monday], done[tuesday]

    response = console.get(f"/schedules/{schedule_id}")
    assert response.status_code == 200
    body = text(response)
    assert "<h1>Weekday sales report" in body and 'badge-active">Active' in body
    assert "At 09:00 on Mon-Fri" in body and "Europe/London" in body
    assert "Wed 2026-03-04 09:00 GMT" in body  # next run and first of the next runs
    assert "Skip while the last run is unfinished" in body
    assert "&#34;region&#34;: &#34;EMEA&#34;" in body
    assert 'action="/schedules/' + schedule_id + '/delete"' in body
    assert 'href="/schedules/' + schedule_id + '/edit"' in body

    assert EXECUTION.findall(body) == [skipped.id, fired.id]  # newest first
    row = body[body.index(f'data-execution-id="{fired.id}"') :].split("</tr>")[0]
    assert "Mon 2026-03-02 09:00 GMT" in row and "+2.0 s" in row and "Scheduled" in row
    assert f'href="/tasks/{fired.task_id}"' in row and "badge-pending" in row
    row = body[body.index(f'data-execution-id="{skipped.id}"') :].split("</tr>")[0]
    assert 'class="badge badge-skipped">Skipped' in row
    assert f"the previous run&#39;s task {fired.task_id} is still PENDING" in row


def test_it_shows_failed_runs_and_counts_them(
    console: FlaskClient, app: Flask, api: Any, personas: Any
) -> None:
    schedule_id = make_schedule(app)
    post_button(console, f"/schedules/{schedule_id}/run-now")
    (execution,) = executions(app, schedule_id)
    agent_id, key = api.register_agent(personas.fleet)
    assert [t["task_id"] for t in api.claim(agent_id, key)] == [execution.task_id]
    api.post(
        f"/ains/tasks/{execution.task_id}/fail",
        key,
        json={"error_message": "warehouse offline", "retryable": False},
    )
    body = text(console.get(f"/schedules/{schedule_id}"))
    row = body[body.index(f'data-execution-id="{execution.id}"') :].split("</tr>")[0]
    assert 'class="badge badge-failed">Failed' in row and "warehouse offline" in row
    assert '<span class="failed-count">1 failed</span>' in body
    listing = text(console.get("/schedules"))
    assert "· 1 failed" in listing


def test_it_pages_the_history_and_serves_it_to_htmx(console: FlaskClient, app: Flask) -> None:
    schedule_id = make_schedule(app)
    with app.app_context():
        principal = operator_principal("seed@example.com")
        for second in range(HISTORY_SIZE + 1):
            scheduling.run_now(principal, schedule_id, now=NOW + timedelta(seconds=second))
        db.session.remove()
    first = console.get(f"/schedules/{schedule_id}", headers=HTMX)
    body = text(first)
    assert body.lstrip().startswith('<section id="schedule-history"') and "<html" not in body
    assert "HX-Request" in first.headers["Vary"]
    assert len(EXECUTION.findall(body)) == HISTORY_SIZE and "page 1 of 2" in body
    assert 'hx-trigger="every 10s"' in body
    assert f'href="/schedules/{schedule_id}?page=2"' in body
    second = console.get(f"/schedules/{schedule_id}?page=2", headers=HTMX)
    assert len(EXECUTION.findall(text(second))) == 1
    page = text(console.get(f"/schedules/{schedule_id}?page=2"))
    assert page.startswith("<!doctype html>") and len(EXECUTION.findall(page)) == 1


def test_it_shows_a_paused_interval_from_its_anchor(console: FlaskClient, app: Flask) -> None:
    schedule_id = make_schedule(
        app,
        now=NOW - timedelta(minutes=50),
        cron_expression=None,
        interval_seconds=3600,
        timezone="UTC",
    )
    with app.app_context():
        scheduling.pause_schedule(operator_principal("seed@example.com"), schedule_id, True)
        db.session.remove()
    body = text(console.get(f"/schedules/{schedule_id}"))
    assert "if resumed now" in body and "Paused." in body
    # Anchored 07:10: the next runs are at ten past each hour.
    assert "Mon 2026-03-02 08:10 UTC" in body and "Mon 2026-03-02 09:10 UTC" in body
