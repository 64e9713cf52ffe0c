"""The tasks list: text search in input, result and error, the other filters, and every
sort order keyset-paged, all kept in the URL."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import Task
from app.services import task_search
from tests.conftest import Api, Personas
from tests.ui.conftest import HTMX, text

ROW = re.compile(r'<tr data-task-id="([^"]+)"')
OLDER = re.compile(r'<a class="button" rel="next" href="([^"]+)"')


def listed(response: Any) -> list[str]:
    return ROW.findall(text(response))


def finish(
    api: Api, agent: tuple[str, Any], task_id: str, *, result: Any = None, error: str = ""
) -> None:
    """Claim ``task_id`` (alone in the agent's queue) and complete it or fail it."""
    agent_id, key = agent
    claimed = api.claim(agent_id, key)
    assert [t["task_id"] for t in claimed] == [task_id]
    if error:
        body = {"error_message": error, "retryable": False}
        response = api.post(f"/ains/tasks/{task_id}/fail", key, json=body)
    else:
        response = api.post(f"/ains/tasks/{task_id}/complete", key, json={"result_data": result})
    assert response.status_code == 200, response.get_json()


def submit(api: Api, personas: Personas, **fields: Any) -> str:
    return api.submit(personas.client, capability_required="search-v1", **fields)["task_id"]


def test_it_finds_text_in_the_input_result_and_error_ignoring_case(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    by_input = submit(api, personas, input_data={"customer": "ACME Widgets"})
    agent = api.register_agent(personas.fleet, capabilities=("finish-v1",))
    by_result = api.submit(personas.client, capability_required="finish-v1")["task_id"]
    finish(api, agent, by_result, result={"summary": "acme renewal signed"})
    by_error = api.submit(personas.client, capability_required="finish-v1")["task_id"]
    finish(api, agent, by_error, error="Upstream ACME API answered 503")
    submit(api, personas, input_data={"customer": "Globex"})

    response = console.get("/tasks?q=acme")
    assert response.status_code == 200
    assert set(listed(response)) == {by_input, by_result, by_error}
    assert listed(console.get("/tasks?q=widgets")) == [by_input]
    assert listed(console.get("/tasks?q=503")) == [by_error]
    # Combined with the other filters.
    assert listed(console.get("/tasks?q=acme&status=FAILED")) == [by_error]
    assert "Searched every task matching the other filters." in text(response)


def test_it_matches_wildcards_quotes_and_accents_literally(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    percent = submit(api, personas, input_data={"discount": "100% off_season"})
    accented = submit(api, personas, input_data={"city": "Zürich café"})
    quoted = submit(api, personas, input_data={"note": 'say "hi"'})
    submit(api, personas, input_data={"discount": "1000 offXseason"})

    assert listed(console.get("/tasks", query_string={"q": "0% off_"})) == [percent]
    assert listed(console.get("/tasks", query_string={"q": "%"})) == [percent]
    assert listed(console.get("/tasks", query_string={"q": "_"})) == [percent]
    assert listed(console.get("/tasks", query_string={"q": "Zürich"})) == [accented]
    assert listed(console.get("/tasks", query_string={"q": 'say "hi"'})) == [quoted]


def test_it_searches_a_bounded_window_and_says_so(
    console: FlaskClient, api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task_search, "SEARCH_WINDOW", 3)
    old = submit(api, personas, input_data={"needle": True})
    for _ in range(3):
        api.submit(personas.other_client, capability_required="search-v1", input_data={})

    body = text(console.get("/tasks?q=needle"))
    assert ROW.findall(body) == []
    assert 'data-search-window="full"' in body
    assert "Searched the newest 3 tasks matching the other filters." in body
    # Narrowing the other filters moves the window back to it.
    narrowed = console.get("/tasks?q=needle&client=client-1")
    assert listed(narrowed) == [old]
    assert 'data-search-window="all"' in text(narrowed)


def test_it_filters_by_task_type_template_and_chain(
    console: FlaskClient, app: Flask, api: Api, personas: Personas
) -> None:
    report = submit(api, personas, task_type="report")
    digest = submit(api, personas, task_type="digest")
    chained = submit(api, personas, task_type="digest")
    with app.app_context():
        db.session.get(Task, digest).template_id = "tmpl_abc"
        db.session.get(Task, chained).chain_id = "chain_xyz"
        db.session.commit()
    assert listed(console.get("/tasks?task_type=report")) == [report]
    assert listed(console.get("/tasks?task_type=digest")) == [chained, digest]
    assert listed(console.get("/tasks?template=tmpl_abc")) == [digest]
    assert listed(console.get("/tasks?chain=chain_xyz")) == [chained]
    assert listed(console.get("/tasks?chain=nosuch")) == []


def walk(console: FlaskClient, url: str) -> list[str]:
    """Every task id the list shows, following the Older links from ``url``."""
    seen: list[str] = []
    for _ in range(50):
        response = console.get(url)
        assert response.status_code == 200, text(response)
        seen += listed(response)
        older = OLDER.search(text(response))
        if older is None:
            return seen
        url = older.group(1).replace("&amp;", "&")
    raise AssertionError("the pages never ended")


@pytest.mark.parametrize(
    ("sort", "key"),
    [
        ("newest", lambda t: (t.created_at, t.id)),
        ("oldest", lambda t: (t.created_at, t.id)),
        ("priority", lambda t: (t.priority, t.created_at, t.id)),
        ("queue", lambda t: (t.queue_key, t.id)),
    ],
)
def test_every_sort_pages_by_keyset_without_gaps_or_repeats(
    console: FlaskClient,
    app: Flask,
    api: Api,
    personas: Personas,
    monkeypatch: pytest.MonkeyPatch,
    sort: str,
    key: Any,
) -> None:
    monkeypatch.setattr("app.ui.tasks.PAGE_SIZE", 3)
    items = [
        {
            "task_type": "report",
            "capability_required": "report-v1",
            "priority": p,
            "input_data": {"tag": "needle" if i % 2 else "hay"},
        }
        for i, p in enumerate((5, 9, 1, 5, 9, 3, 5, 7, 2, 9, 5))
    ]
    response = api.post("/ains/tasks/batch", personas.client, json={"tasks": items})
    assert response.status_code == 201
    with app.app_context():
        tasks = list(db.session.scalars(db.select(Task)))
        ordered = sorted(tasks, key=key, reverse=task_search.SORTS[sort].descending)
        expected = [t.id for t in ordered]
        needles = [t.id for t in ordered if t.input_data["tag"] == "needle"]
        db.session.remove()
    url = "/tasks" if sort == "newest" else f"/tasks?sort={sort}"
    assert walk(console, url) == expected
    # A text search pages the same way, through its window.
    assert walk(console, f"/tasks?sort={sort}&q=NEEDLE") == needles
    # The filters and the order travel with the Older link.
    first = text(console.get(f"/tasks?sort={sort}&client=client-1"))
    older = OLDER.search(first)
    assert older is not None and "client=client-1" in older.group(1)
    assert (f"sort={sort}" in older.group(1)) == (sort != "newest")


def test_a_cursor_of_another_order_is_refused_inline(
    console: FlaskClient, api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.ui.tasks.PAGE_SIZE", 1)
    for _ in range(3):
        api.submit(personas.client)
    page = text(console.get("/tasks?sort=priority"))
    cursor = OLDER.search(page).group(1).split("cursor=")[1].split("&")[0]  # type: ignore[union-attr]
    assert console.get(f"/tasks?sort=priority&cursor={cursor}").status_code == 200
    for other in ("oldest", "queue", "newest"):
        response = console.get(f"/tasks?sort={other}&cursor={cursor}")
        assert response.status_code == 422
        assert "this paging link is not valid" in text(response)


@pytest.mark.parametrize(
    "key",
    [
        [2**70, "2026-01-01T00:00:00+00:00", "x"],
        ["high", "2026-01-01T00:00:00+00:00", "x"],
        [5, "9999-12-31T23:59:00-14:00", "x"],
        [5, "2026-01-01T00:00:00+00:00"],
    ],
)
def test_forged_cursors_are_422_not_500(console: FlaskClient, key: list[Any]) -> None:
    raw = json.dumps({"sort": "priority", "key": key}).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    response = console.get(f"/tasks?sort=priority&cursor={cursor}")
    assert response.status_code == 422


def test_bad_search_and_sort_values_are_shown_inline(console: FlaskClient) -> None:
    response = console.get("/tasks", query_string={"q": "x" * 201, "sort": "sideways"})
    assert response.status_code == 422
    body = text(response)
    assert "Search input, result, error: Field cannot be longer than 200 characters." in body
    assert "Sort: &#39;sideways&#39; is not one of" in body


def test_hostile_search_text_is_shown_escaped_and_harmless(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    task = submit(api, personas, input_data={"x": "' OR 1=1 --"})
    hostile = "<script>alert(1)</script>"
    body = text(console.get("/tasks", query_string={"q": hostile}))
    assert hostile not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    # Quotes and SQL are only text to look for.
    assert listed(console.get("/tasks", query_string={"q": "' OR 1=1 --"})) == [task]
    assert listed(console.get("/tasks", query_string={"q": "'; DROP TABLE tasks; --"})) == []
    assert console.get("/tasks", query_string={"q": "a\x00b"}).status_code == 400


def test_the_url_keeps_search_filters_and_sort_as_a_full_page(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    submit(api, personas, input_data={"word": "kept"})
    url = "/tasks?q=kept&task_type=report&sort=priority"
    page = text(console.get(url))
    assert page.startswith("<!doctype html>")
    assert re.search(r'<input[^>]*name="q"[^>]*value="kept"', page)
    assert re.search(r'<option selected value="priority">|<option value="priority" selected', page)
    fragment = text(console.get(url, headers=HTMX))
    assert fragment.lstrip().startswith('<section id="task-results"')
    # The live refresh asks for the same filters and order.
    assert 'hx-get="/tasks?q=kept&amp;task_type=report&amp;sort=priority"' in fragment
    # The filter form names every field.
    form = page[page.index('<form id="task-filters"') :]
    for name in ("q", "status", "task_type", "template", "chain", "sort"):
        assert f'name="{name}"' in form
