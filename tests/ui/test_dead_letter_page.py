"""The dead-letter page: FAILED tasks, filtered and paged, requeued or cancelled in bulk."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import time_machine
from flask.testing import FlaskClient

from app.ui.dead_letter import PAGE_SIZE
from tests.conftest import Api, Personas
from tests.ui.conftest import HTMX, fail_tasks, form_token, sign_in, text

ROW = re.compile(r'<tr data-task-id="([^"]+)"')
OLDER = re.compile(r'<a class="button" rel="next" href="([^"]+)"')


def listed(response: Any) -> list[str]:
    return ROW.findall(text(response))


def status_of(api: Api, personas: Personas, task_id: str) -> str:
    return api.get(f"/ains/tasks/{task_id}", personas.admin).get_json()["status"]


def statuses(api: Api, personas: Personas, ids: list[str]) -> list[str]:
    return [status_of(api, personas, task_id) for task_id in ids]


def notice(response: Any) -> str:
    """The flash messages of a page, tags stripped."""
    body = text(response)
    start = body.index('<div class="flashes">')
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body[start : body.index("</main>")]))


def test_it_lists_only_failed_tasks_newest_first(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent = api.register_agent(personas.fleet, slots=3)
    older, newer = fail_tasks(api, personas.client, agent, 2, error="model <b>overloaded</b>")
    api.submit(personas.client)  # PENDING: not a dead letter
    response = console.get("/dead-letter")
    assert response.status_code == 200
    assert listed(response) == [newer, older]
    body = text(response)
    assert '<span data-stat="matching">2</span> failed tasks' in body
    assert "model &lt;b&gt;overloaded&lt;/b&gt;" in body and "<b>overloaded" not in body
    assert f'name="task_ids" value="{older}"' in body
    assert 'data-select-all="task_ids"' in body
    assert "Requeue selected" in body and "Cancel selected" in body
    # The nav counts the dead letters.
    assert re.search(r'Dead letter <span class="nav-count" title="2 failed tasks">', body)


def test_it_shows_no_badge_and_an_empty_state_without_failed_tasks(console: FlaskClient) -> None:
    body = text(console.get("/dead-letter"))
    assert "No failed tasks. Nothing is waiting for a decision." in body
    assert "nav-count" not in body
    assert "Requeue all matching" not in body and "Requeue selected" not in body


def test_it_filters_by_client_capability_agent_priority_and_created_range(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    report = api.register_agent(personas.fleet, slots=4)
    ocr = api.register_agent(personas.fleet, capabilities=("ocr-v2",), slots=2)
    with time_machine.travel(datetime(2026, 3, 1, 9, 0, tzinfo=UTC), tick=False):
        (early,) = fail_tasks(api, personas.client, report, 1, priority=9)
    with time_machine.travel(datetime(2026, 3, 1, 15, 0, tzinfo=UTC), tick=False):
        (other,) = fail_tasks(api, personas.other_client, report, 1)
        (scan,) = fail_tasks(api, personas.client, ocr, 1, capability_required="ocr-v2")

    assert listed(console.get("/dead-letter?client=client-2")) == [other]
    assert listed(console.get("/dead-letter?capability=ocr-v2")) == [scan]
    assert listed(console.get(f"/dead-letter?agent={ocr[0]}")) == [scan]
    assert listed(console.get("/dead-letter?priority=9")) == [early]
    assert set(listed(console.get("/dead-letter?created_from=2026-03-01T12:00"))) == {other, scan}
    assert listed(console.get("/dead-letter?created_before=2026-03-01T12:00")) == [early]
    window = "created_from=2026-03-01T08:00&created_before=2026-03-01T10:00&client=client-1"
    response = console.get(f"/dead-letter?{window}")
    assert listed(response) == [early]
    body = text(response)
    assert '<span data-stat="matching">1</span> failed task' in body
    assert 'value="2026-03-01T08:00"' in body  # the inputs keep what was chosen
    assert "No failed tasks match these filters." in text(console.get("/dead-letter?client=x"))


def test_it_shows_bad_filters_inline(console: FlaskClient) -> None:
    cases = {
        "priority=11": "Priority: &#39;11&#39; is not one of",
        "created_from=yesterday": "Created from (UTC): &#39;yesterday&#39; is not a date",
        "created_from=2026-03-02T00:00&created_before=2026-03-01T00:00": (
            "Created before (UTC): must be later than Created from"
        ),
        "cursor=nope": "Page: this paging link is not valid",
    }
    for query, message in cases.items():
        response = console.get(f"/dead-letter?{query}")
        assert response.status_code == 422, query
        assert message in text(response), query


def test_it_serves_the_results_fragment_to_htmx(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    (task,) = fail_tasks(api, personas.client, api.register_agent(personas.fleet), 1)
    fragment = console.get("/dead-letter?client=client-1", headers=HTMX)
    assert "HX-Request" in fragment.headers["Vary"]
    body = text(fragment)
    assert body.lstrip().startswith('<section id="dead-results"') and "<html" not in body
    assert listed(fragment) == [task]
    # The selection form inside the fragment carries the token and the current filters.
    assert 'name="csrf_token"' in body and 'name="client" value="client-1"' in body
    assert 'hx-trigger="every' not in body  # ticked rows must not be swapped away

    page = console.get("/dead-letter?client=client-1")
    assert text(page).startswith("<!doctype html>") and 'id="dead-filters"' in text(page)


def test_it_pages_through_failed_tasks_with_a_keyset_cursor(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    count = PAGE_SIZE + 2
    ids = fail_tasks(api, personas.client, api.register_agent(personas.fleet, slots=count), count)
    first = console.get("/dead-letter")
    assert len(listed(first)) == PAGE_SIZE
    assert f'<span data-stat="matching">{count}</span>' in text(first)
    href = OLDER.search(text(first)).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    second = console.get(href, headers=HTMX)
    assert len(listed(second)) == 2
    assert set(listed(first)) | set(listed(second)) == set(ids)


def test_it_requeues_the_selected_tasks(console: FlaskClient, api: Api, personas: Personas) -> None:
    first, second, third = fail_tasks(
        api, personas.client, api.register_agent(personas.fleet, slots=3), 3
    )
    response = console.post(
        "/dead-letter/requeue",
        data={
            "csrf_token": form_token(console),
            "scope": "selection",
            "task_ids": [first, third],
            "client": "client-1",
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/dead-letter?client=client-1"
    # Requeued, they are routed again at once; after three failures the agent is on
    # probation (low trust: one task at a time), so one of them waits, unassigned.
    assert sorted(statuses(api, personas, [first, third])) == ["ASSIGNED", "PENDING"]
    assert status_of(api, personas, second) == "FAILED"

    page = console.get(response.headers["Location"])
    assert "Requeued 2 tasks." in notice(page)
    assert listed(page) == [second]
    stored = api.get(f"/ains/tasks/{first}", personas.admin).get_json()
    assert stored["retry_count"] == 0
    # The requeue is the operator's event (routing, if it took the task, comes after it).
    requeued = [e for e in stored["events"] if e["to_status"] == "PENDING"][-1]
    assert requeued["actor"] == "admin:operator@example.com"


def test_it_cancels_the_selected_tasks_and_names_the_skipped_ones(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    (failed,) = fail_tasks(api, personas.client, api.register_agent(personas.fleet), 1)
    waiting = api.submit(personas.client)["task_id"]
    response = console.post(
        "/dead-letter/cancel",
        data={
            "csrf_token": form_token(console),
            "scope": "selection",
            "task_ids": [failed, waiting, "task_missing"],
        },
        follow_redirects=True,
    )
    said = notice(response)
    assert "Cancelled 1 task. Skipped 2:" in said
    assert f"{waiting} is ASSIGNED, not FAILED" in said
    assert "task_missing was not found" in said
    assert statuses(api, personas, [failed, waiting]) == ["CANCELLED", "ASSIGNED"]
    stored = api.get(f"/ains/tasks/{failed}", personas.admin).get_json()
    assert stored["cancelled_by"] == "admin:operator@example.com"
    assert listed(response) == []


def test_it_asks_for_a_selection_first(console: FlaskClient, api: Api, personas: Personas) -> None:
    (task,) = fail_tasks(api, personas.client, api.register_agent(personas.fleet), 1)
    response = console.post(
        "/dead-letter/requeue",
        data={"csrf_token": form_token(console), "scope": "selection"},
        follow_redirects=True,
    )
    assert "Tick at least one task first." in notice(response)
    assert status_of(api, personas, task) == "FAILED"


def test_it_shows_how_many_tasks_match_before_acting_on_the_filter(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent = api.register_agent(personas.fleet, slots=3)
    mine = fail_tasks(api, personas.client, agent, 2)
    fail_tasks(api, personas.other_client, agent, 1)

    page = text(console.get("/dead-letter?client=client-1"))
    assert 'href="/dead-letter/confirm/requeue?client=client-1"' in page
    assert 'hx-get="/dead-letter/confirm/cancel?client=client-1"' in page

    fragment = console.get("/dead-letter/confirm/cancel?client=client-1", headers=HTMX)
    assert fragment.status_code == 200 and "HX-Request" in fragment.headers["Vary"]
    body = text(fragment)
    assert body.lstrip().startswith('<div id="bulk-confirm"') and "<html" not in body
    assert 'Cancel <span data-stat="confirm-count">2</span> failed tasks?' in body
    assert 'action="/dead-letter/cancel"' in body
    assert 'name="scope" value="filter"' in body and 'name="confirmed" value="2"' in body
    assert 'name="client" value="client-1"' in body and 'name="csrf_token"' in body
    assert 'name="reason"' in body
    assert statuses(api, personas, mine) == ["FAILED", "FAILED"]  # looking changes nothing

    full = text(console.get("/dead-letter/confirm/requeue"))
    assert full.startswith("<!doctype html>")
    assert 'Requeue <span data-stat="confirm-count">3</span> failed tasks?' in full
    nothing = text(console.get("/dead-letter/confirm/requeue?client=nobody"))
    assert "Nothing to requeue" in nothing and 'name="confirmed"' not in nothing


def test_it_requeues_every_task_the_filter_matches(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent = api.register_agent(personas.fleet, slots=3)
    mine = fail_tasks(api, personas.client, agent, 2)
    (theirs,) = fail_tasks(api, personas.other_client, agent, 1)
    response = console.post(
        "/dead-letter/requeue",
        data={
            "csrf_token": form_token(console),
            "scope": "filter",
            "confirmed": "2",
            "client": "client-1",
        },
    )
    assert response.headers["Location"] == "/dead-letter?client=client-1"
    # Routed again; the agent, on probation after three failures, takes one at a time.
    assert sorted(statuses(api, personas, mine)) == ["ASSIGNED", "PENDING"]
    assert status_of(api, personas, theirs) == "FAILED"
    page = console.get(response.headers["Location"])
    assert "Requeued 2 tasks." in notice(page) and "more failed" not in notice(page)
    assert listed(page) == []


def test_it_cancels_no_more_than_the_confirmed_count_and_says_what_is_left(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    ids = fail_tasks(api, personas.client, api.register_agent(personas.fleet, slots=3), 3)
    response = console.post(
        "/dead-letter/cancel",
        data={
            "csrf_token": form_token(console),
            "scope": "filter",
            "confirmed": "2",
            "reason": "bad batch from the importer",
        },
        follow_redirects=True,
    )
    said = notice(response)
    assert "Cancelled 2 tasks." in said
    assert "1 more failed task matches the filter; run the action again to continue." in said
    # The oldest go first; the newest is left.
    assert statuses(api, personas, ids) == ["CANCELLED", "CANCELLED", "FAILED"]
    stored = api.get(f"/ains/tasks/{ids[0]}", personas.admin).get_json()
    assert stored["cancellation_reason"] == "bad batch from the importer"


def test_it_refuses_a_filter_action_that_was_not_confirmed(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    (task,) = fail_tasks(api, personas.client, api.register_agent(personas.fleet), 1)
    for confirmed in (None, "many", "-1"):
        data = {"csrf_token": form_token(console), "scope": "filter"}
        if confirmed is not None:
            data["confirmed"] = confirmed
        response = console.post("/dead-letter/requeue", data=data, follow_redirects=True)
        assert response.status_code == 200
        said = notice(response)
        assert "Confirm how many" in said or "Nothing done." in said, confirmed
        assert status_of(api, personas, task) == "FAILED"


def test_it_refuses_bad_filters_in_a_bulk_post(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    (task,) = fail_tasks(api, personas.client, api.register_agent(personas.fleet), 1)
    response = console.post(
        "/dead-letter/cancel",
        data={
            "csrf_token": form_token(console),
            "scope": "filter",
            "confirmed": "1",
            "priority": "99",
        },
    )
    assert response.headers["Location"] == "/dead-letter"
    assert "Nothing done. Priority:" in notice(console.get("/dead-letter"))
    assert status_of(api, personas, task) == "FAILED"


def test_it_refuses_bulk_actions_without_the_csrf_token(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    ids = fail_tasks(api, personas.client, api.register_agent(personas.fleet, slots=2), 2)
    for action, data in [
        ("requeue", {"scope": "selection", "task_ids": ids}),
        ("cancel", {"scope": "filter", "confirmed": "2"}),
        ("requeue", {"scope": "filter", "confirmed": "2", "csrf_token": "forged"}),
    ]:
        response = console.post(f"/dead-letter/{action}", data=data)
        assert response.status_code == 400, (action, data)
        assert "The form was stale" in text(response)
    assert statuses(api, personas, ids) == ["FAILED", "FAILED"]


def test_it_sends_a_signed_out_operator_to_the_login_page(
    client: FlaskClient, operator: dict[str, str], api: Api, personas: Personas
) -> None:
    (task,) = fail_tasks(api, personas.client, api.register_agent(personas.fleet), 1)
    for path in ("/dead-letter", "/dead-letter?client=client-1", "/dead-letter/confirm/cancel"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next=")
    fragment = client.get("/dead-letter", headers=HTMX)
    assert fragment.status_code == 401 and fragment.headers["HX-Redirect"].startswith("/login")

    sign_in(client, operator["email"], operator["password"])
    token = form_token(client)
    client.post("/logout", data={"csrf_token": token})
    response = client.post(
        "/dead-letter/requeue",
        data={"csrf_token": token, "scope": "selection", "task_ids": [task]},
    )
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert status_of(api, personas, task) == "FAILED"


def test_it_answers_404_for_an_unknown_bulk_action(console: FlaskClient) -> None:
    response = console.post("/dead-letter/delete", data={"csrf_token": form_token(console)})
    assert response.status_code == 404


def test_it_sends_a_confirm_request_with_bad_filters_back_to_the_list(
    console: FlaskClient,
) -> None:
    response = console.get("/dead-letter/confirm/cancel?priority=99")
    assert response.status_code == 302
    assert response.headers["Location"] == "/dead-letter?priority=99"
    assert console.get(response.headers["Location"]).status_code == 422


def test_a_filter_action_leaves_tasks_that_failed_after_the_confirmation_alone(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent = api.register_agent(personas.fleet, slots=3)
    first, second = fail_tasks(api, personas.client, agent, 2)
    confirm = text(console.get("/dead-letter/confirm/cancel?client=client-1"))
    assert 'name="confirmed" value="2"' in confirm
    as_of = re.search(r'name="as_of" value="([^"]+)"', confirm)
    assert as_of is not None
    # One of them leaves the list another way; a newer one fails.
    picked = {"csrf_token": form_token(console), "scope": "selection", "task_ids": [first]}
    console.post("/dead-letter/cancel", data=picked)
    assert status_of(api, personas, first) == "CANCELLED"
    (third,) = fail_tasks(api, personas.client, agent, 1)

    response = console.post(
        "/dead-letter/cancel",
        data={
            "csrf_token": form_token(console),
            "scope": "filter",
            "confirmed": "2",
            "as_of": as_of[1],
            "client": "client-1",
        },
        follow_redirects=True,
    )
    said = notice(response)
    assert "Cancelled 1 task." in said and "more failed" not in said
    assert status_of(api, personas, second) == "CANCELLED"
    assert status_of(api, personas, third) == "FAILED"
    bad = console.post(
        "/dead-letter/requeue",
        data={
            "csrf_token": form_token(console),
            "scope": "filter",
            "confirmed": "1",
            "as_of": "2999-01-01T00:00:00+00:00",
        },
        follow_redirects=True,
    )
    assert "This confirmation is not valid; open it again." in notice(bad)
    assert status_of(api, personas, third) == "FAILED"
