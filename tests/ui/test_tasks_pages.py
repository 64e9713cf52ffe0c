"""The tasks list (filters, fragments, keyset pages) and the task detail page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import time_machine
from flask import Flask
from flask.testing import FlaskClient

from app.lib.clock import utcnow
from app.services import lifecycle
from app.ui.tasks import PAGE_SIZE
from tests.conftest import Api, Personas
from tests.ui.conftest import HTMX, text

ROW = re.compile(r'<tr data-task-id="([^"]+)"')
OLDER = re.compile(r'<a class="button" rel="next" href="([^"]+)"')


def listed(response: object) -> list[str]:
    """Task ids in the list, in page order."""
    return ROW.findall(text(response))


def submit_many(api: Api, personas: Personas, count: int) -> list[str]:
    """``count`` tasks through the batch endpoint; their ids in submission order."""
    items = [{"task_type": "report", "capability_required": "report-v1"} for _ in range(count)]
    response = api.post("/ains/tasks/batch", personas.client, json={"tasks": items})
    assert response.status_code == 201, response.get_json()
    return [s["task_id"] for s in response.get_json()["submitted"]]


def test_it_lists_tasks_created_through_the_api_newest_first(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    first = api.submit(personas.client)["task_id"]
    second = api.submit(personas.other_client, task_type="summary")["task_id"]
    response = console.get("/tasks")
    assert response.status_code == 200
    assert listed(response) == [second, first]
    body = text(response)
    assert f'href="/tasks/{first}"' in body and f'href="/tasks/{second}"' in body
    assert "client-2" in body and "summary" in body


def test_it_says_so_when_there_are_no_tasks(console: FlaskClient) -> None:
    body = text(console.get("/tasks"))
    assert "No tasks yet." in body


def test_it_filters_by_status_client_capability_agent_and_priority(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, capabilities=("report-v1", "ocr-v2"))
    urgent = api.submit(personas.client, priority=9)["task_id"]
    claimed = api.claim(agent_id, agent)
    assert [t["task_id"] for t in claimed] == [urgent]
    ocr = api.submit(personas.client, capability_required="ocr-v2")["task_id"]
    other = api.submit(personas.other_client)["task_id"]
    plain = api.submit(personas.client)["task_id"]

    assert listed(console.get("/tasks?status=ACTIVE")) == [urgent]
    assert listed(console.get("/tasks?status=pending")) == [plain, other, ocr]
    assert listed(console.get("/tasks?client=client-2")) == [other]
    assert listed(console.get("/tasks?capability=ocr-v2")) == [ocr]
    assert listed(console.get(f"/tasks?agent={agent_id}")) == [urgent]
    assert listed(console.get("/tasks?priority=9")) == [urgent]
    assert listed(console.get("/tasks?client=client-1&capability=report-v1&status=PENDING")) == [
        plain
    ]
    assert listed(console.get("/tasks?client=nobody")) == []
    assert "No tasks match these filters." in text(console.get("/tasks?client=nobody"))


def test_it_ignores_empty_filter_fields(console: FlaskClient, api: Api, personas: Personas) -> None:
    task = api.submit(personas.client)["task_id"]
    response = console.get("/tasks?status=&client=&capability=&agent=&priority=")
    assert response.status_code == 200 and listed(response) == [task]


def test_it_keeps_the_chosen_filters_in_the_form(console: FlaskClient) -> None:
    body = text(console.get("/tasks?status=FAILED&client=client-1&priority=3"))
    assert '<option selected value="FAILED">' in body
    assert 'value="client-1"' in body
    assert '<option selected value="3">' in body


def test_it_serves_the_results_fragment_to_htmx_and_the_page_otherwise(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    task = api.submit(personas.client)["task_id"]

    fragment = console.get("/tasks?client=client-1", headers=HTMX)
    assert fragment.status_code == 200
    assert "HX-Request" in fragment.headers["Vary"]
    body = text(fragment)
    # The fragment holds the results (and their selection form), not the filter form.
    assert "<html" not in body and 'id="task-filters"' not in body
    assert body.lstrip().startswith('<section id="task-results"')
    assert listed(fragment) == [task]

    page = console.get("/tasks?client=client-1")
    assert "HX-Request" in page.headers["Vary"]
    assert page.headers["Cache-Control"] == "private, no-cache"
    body = text(page)
    assert body.startswith("<!doctype html>") and 'id="task-filters"' in body
    assert listed(page) == [task]


def test_it_serves_the_full_page_to_an_htmx_history_restore(console: FlaskClient) -> None:
    response = console.get("/tasks", headers={**HTMX, "HX-History-Restore-Request": "true"})
    assert text(response).startswith("<!doctype html>")


def test_it_wires_the_filter_form_to_htmx(console: FlaskClient) -> None:
    body = text(console.get("/tasks"))
    start = body.index('<form id="task-filters"')
    form = body[start : body.index("</form>", start)]
    assert 'method="get"' in form and 'action="/tasks"' in form
    assert 'hx-get="/tasks"' in form and 'hx-target="#task-results"' in form
    assert 'hx-push-url="true"' in form
    for name in ("status", "client", "capability", "agent", "priority", "created_from"):
        assert f'<label for="{name}">' in form and f'name="{name}"' in form


def test_it_pages_through_the_list_with_a_keyset_cursor(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    ids = submit_many(api, personas, PAGE_SIZE + 5)

    first = console.get("/tasks")
    first_ids = listed(first)
    assert len(first_ids) == PAGE_SIZE
    assert 'hx-trigger="every 5s"' in text(first)  # the newest page stays live
    older = OLDER.search(text(first))
    assert older, "no Older link on a full first page"
    href = older.group(1).replace("&amp;", "&")
    assert "cursor=" in href

    second = console.get(href, headers=HTMX)
    second_ids = listed(second)
    assert len(second_ids) == 5
    assert set(first_ids).isdisjoint(second_ids)
    assert set(first_ids) | set(second_ids) == set(ids)
    body = text(second)
    assert not OLDER.search(body)
    assert "← Newest" in body
    assert 'hx-trigger="every' not in body  # an older page does not move under the reader


def test_it_keeps_the_filters_on_the_older_link(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    submit_many(api, personas, PAGE_SIZE + 1)
    api.submit(personas.other_client)
    first = console.get("/tasks?client=client-1")
    href = OLDER.search(text(first)).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    assert "client=client-1" in href
    second = console.get(href)
    assert len(listed(second)) == 1


def test_it_shows_bad_filters_inline_instead_of_failing(console: FlaskClient) -> None:
    cases = {
        "status=BOGUS": "Status: &#39;BOGUS&#39; is not one of PENDING",
        "priority=abc": "Priority: &#39;abc&#39; is not one of 10, 9",
        "priority=11": "Priority: &#39;11&#39; is not one of",
        "client=" + "x" * 201: "Client: Field cannot be longer than 200 characters.",
        "cursor=not-a-cursor": "Page: this paging link is not valid",
    }
    for query, message in cases.items():
        response = console.get(f"/tasks?{query}")
        assert response.status_code == 422, query
        assert message in text(response), query
        fragment = console.get(f"/tasks?{query}", headers=HTMX)
        assert fragment.status_code == 422
        assert message in text(fragment) and "<html" not in text(fragment)


def test_it_marks_the_bad_field_in_the_full_page(console: FlaskClient) -> None:
    body = text(console.get("/tasks?priority=abc"))
    assert 'aria-invalid="true"' in body
    assert 'id="priority-error"' in body


def test_it_escapes_markup_in_task_data(console: FlaskClient, api: Api, personas: Personas) -> None:
    evil = "<script>alert('x')</script>"
    task = api.submit(personas.client, task_type=evil, input_data={"note": evil})["task_id"]
    for path in ("/tasks", f"/tasks/{task}", "/"):
        body = text(console.get(path))
        assert "<script>alert" not in body, path
        assert "&lt;script&gt;alert(" in body, path


def test_it_shows_a_task_with_its_fields_json_and_timeline(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    task = api.submit(personas.client, input_data={"report_type": "sales", "year": 2026})
    api.claim(agent_id, agent)
    done = api.post(
        f"/ains/tasks/{task['task_id']}/complete", agent, json={"result_data": {"rows": 3}}
    )
    assert done.status_code == 200

    response = console.get(f"/tasks/{task['task_id']}")
    assert response.status_code == 200
    body = text(response)
    assert task["task_id"] in body and agent_id in body and "client-1" in body
    # Pretty-printed, one key a line (PostgreSQL's JSONB may reorder the keys).
    assert "\n  &#34;report_type&#34;: &#34;sales&#34;" in body
    assert "\n  &#34;year&#34;: 2026" in body
    assert "{\n  &#34;rows&#34;: 3\n}" in body
    timeline = body[body.index('<ol class="timeline">') : body.index("</ol>")]
    transitions = re.findall(r'<li class="timeline-item timeline-(\w+)">', timeline)
    assert transitions == ["pending", "assigned", "active", "completed"]
    assert "client:client-1" in timeline and f"agent:{agent_id}" in timeline
    assert "system:router" in timeline and 'class="routing-decision"' in timeline
    assert 'hx-trigger="every' not in body  # a finished task stops refreshing


def test_it_refreshes_a_running_task_with_a_fragment(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    task = api.submit(personas.client)["task_id"]
    page = text(console.get(f"/tasks/{task}"))
    assert f'hx-get="/tasks/{task}" hx-trigger="every 5s"' in page
    fragment = console.get(f"/tasks/{task}", headers=HTMX)
    assert "HX-Request" in fragment.headers["Vary"]
    assert text(fragment).lstrip().startswith('<div id="task-detail"')
    assert "<html" not in text(fragment)


def test_it_shows_the_failure_reason(console: FlaskClient, api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    task = api.submit(personas.client)["task_id"]
    api.claim(agent_id, agent)
    failed = api.post(
        f"/ains/tasks/{task}/fail",
        agent,
        json={"error_message": "upstream <b>down</b>", "retryable": False},
    )
    assert failed.status_code == 200 and failed.get_json()["status"] == "FAILED"
    body = text(console.get(f"/tasks/{task}"))
    assert "upstream &lt;b&gt;down&lt;/b&gt;" in body
    assert '<span class="badge badge-failed">Failed</span>' in body


def test_it_answers_404_for_an_unknown_task(console: FlaskClient) -> None:
    response = console.get("/tasks/task_does_not_exist")
    assert response.status_code == 404
    body = text(response)
    assert body.startswith("<!doctype html>")
    assert "Not found" in body and "task_does_not_exist" in body


def test_it_offers_expired_in_the_status_filter_and_badges_it(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    expiring = api.submit(personas.client, expires_in_seconds=60)["task_id"]
    waiting = api.submit(personas.client)["task_id"]
    with app.app_context():
        lifecycle.sweep(utcnow() + timedelta(seconds=120))
    body = text(console.get("/tasks"))
    assert '<option value="EXPIRED">Expired</option>' in body
    row = body[body.index(f'<tr data-task-id="{expiring}"') :][:1500]
    assert '<span class="badge badge-expired">Expired</span>' in row
    assert listed(console.get("/tasks?status=expired")) == [expiring]
    assert waiting not in listed(console.get("/tasks?status=EXPIRED"))


def test_it_marks_a_running_task_whose_cancel_is_pending(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=2)
    asked = api.submit(personas.client)["task_id"]
    running = api.submit(personas.client)["task_id"]
    api.claim(agent_id, agent, max_tasks=2)
    assert api.post(f"/ains/tasks/{asked}/cancel", personas.client, json={}).status_code == 202
    body = text(console.get("/tasks"))

    def row(task_id: str) -> str:
        start = body.index(f'<tr data-task-id="{task_id}"')
        return body[start : body.index("</tr>", start)]

    assert "cancel requested" in row(asked)
    assert "cancel requested" not in row(running)


def test_it_filters_by_created_range(console: FlaskClient, api: Api, personas: Personas) -> None:
    with time_machine.travel(datetime(2026, 3, 1, 9, 0, tzinfo=UTC), tick=False):
        morning = api.submit(personas.client)["task_id"]
    with time_machine.travel(datetime(2026, 3, 1, 15, 0, 30, tzinfo=UTC), tick=False):
        afternoon = api.submit(personas.client)["task_id"]
    assert listed(console.get("/tasks?created_from=2026-03-01T12:00")) == [afternoon]
    assert listed(console.get("/tasks?created_before=2026-03-01T12:00")) == [morning]
    # Seconds are kept, and the bounds are [from, before).
    assert listed(console.get("/tasks?created_from=2026-03-01T15:00:30")) == [afternoon]
    assert listed(console.get("/tasks?created_before=2026-03-01T15:00:30")) == [morning]
    page = text(console.get("/tasks?created_from=2026-03-01T08:00&status=PENDING"))
    assert 'type="datetime-local"' in page and 'value="2026-03-01T08:00"' in page
    # The live refresh keeps the range.
    fragment = text(console.get("/tasks?created_from=2026-03-01T08:00", headers=HTMX))
    assert 'hx-get="/tasks?created_from=2026-03-01T08:00"' in fragment
