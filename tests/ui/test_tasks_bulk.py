"""Bulk actions on the tasks list: cancel, requeue and priority on a selection or on the
whole filter result, after a confirmation that counts what will change and be skipped."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import AuditEvent, OperatorRole, Task, TaskEvent
from app.services import bulk, task_actions
from tests.conftest import Api, Personas
from tests.ui.conftest import console_as, fail_tasks, form_token, text


def notice(response: Any) -> str:
    """The flash messages of a page, tags stripped."""
    body = text(response)
    start = body.index('<div class="flashes">')
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body[start : body.index("</main>")]))


def confirm_panel(response: Any) -> str:
    body = text(response)
    start = body.index('<div id="bulk-confirm"')
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body[start:]))


def task(app: Flask, task_id: str) -> Task:
    with app.app_context():
        found = db.session.get(Task, task_id)
        assert found is not None
        db.session.expunge(found)
        db.session.remove()
        return found


def events(app: Flask, task_id: str) -> list[TaskEvent]:
    with app.app_context():
        rows = list(
            db.session.scalars(
                db.select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)
            )
        )
        db.session.expunge_all()
        db.session.remove()
        return rows


def act(console: FlaskClient, action: str, **data: Any) -> Any:
    data.setdefault("csrf_token", form_token(console, "/tasks"))
    return console.post(f"/tasks/bulk/{action}", data=data, follow_redirects=True)


def running_task(api: Api, personas: Personas) -> tuple[str, tuple[str, Any]]:
    agent = api.register_agent(personas.fleet, capabilities=("run-v1",))
    task_id = api.submit(personas.client, capability_required="run-v1")["task_id"]
    assert [t["task_id"] for t in api.claim(*agent)] == [task_id]
    return task_id, agent


def completed_task(api: Api, personas: Personas) -> str:
    agent_id, key = api.register_agent(personas.fleet, capabilities=("done-v1",))
    task_id = api.submit(personas.client, capability_required="done-v1")["task_id"]
    assert [t["task_id"] for t in api.claim(agent_id, key)] == [task_id]
    response = api.post(f"/ains/tasks/{task_id}/complete", key, json={"result_data": {}})
    assert response.status_code == 200
    return task_id


def test_the_list_offers_selection_and_bulk_actions_to_operators(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    task_id = api.submit(personas.client)["task_id"]
    body = text(console.get("/tasks?client=client-1"))
    assert f'<input type="checkbox" name="task_ids" value="{task_id}"' in body
    assert 'data-select-all="task_ids"' in body
    assert "Cancel selected…" in body and "Requeue selected…" in body
    assert 'href="/tasks/bulk/cancel?scope=filter&amp;client=client-1"' in body
    assert "Set priority of all matching…" in body


def test_it_confirms_then_cancels_a_selection_and_skips_finished_tasks(
    console: FlaskClient, app: Flask, api: Api, personas: Personas
) -> None:
    waiting = api.submit(personas.client)["task_id"]
    running, _ = running_task(api, personas)
    done = completed_task(api, personas)
    ids = [waiting, running, done]

    confirm = console.get(
        "/tasks/bulk/cancel", query_string={"scope": "selection", "task_ids": ids}
    )
    assert confirm.status_code == 200
    panel = confirm_panel(confirm)
    assert "Cancel 2 tasks?" in panel
    assert "3 tasks selected." in panel
    assert "1 will be skipped: 1 is already COMPLETED" in panel
    # Confirming changes nothing yet.
    assert task(app, waiting).status == "PENDING"

    response = act(console, "cancel", scope="selection", task_ids=ids, reason="wrong input")
    assert response.status_code == 200
    message = notice(response)
    assert "Cancelled 1 task." in message
    assert "Asked 1 running task to stop" in message
    assert f"Skipped 1: {done} is already COMPLETED" in message
    assert task(app, waiting).status == "CANCELLED"
    assert task(app, waiting).cancellation_reason == "wrong input"
    stopping = task(app, running)
    assert stopping.status == "ACTIVE" and stopping.cancel_requested_at is not None
    assert task(app, done).status == "COMPLETED"
    last = events(app, waiting)[-1]
    assert (last.from_status, last.to_status) == ("PENDING", "CANCELLED")
    assert last.actor == "admin:operator@example.com"
    assert events(app, running)[-1].reason == "cancel requested: wrong input"

    # Asked again, the running task is skipped: it was already asked to stop.
    again = console.get("/tasks/bulk/cancel", query_string={"scope": "selection", "task_ids": ids})
    assert "Nothing to cancel" in confirm_panel(again)
    assert "1 was already asked to stop" in confirm_panel(again)


def test_it_requeues_only_failed_tasks_of_a_selection(
    console: FlaskClient, app: Flask, api: Api, personas: Personas
) -> None:
    [failed] = fail_tasks(api, personas.client, api.register_agent(personas.fleet), 1)
    waiting = api.submit(personas.client, capability_required="other-v1")["task_id"]

    confirm = console.get(
        "/tasks/bulk/requeue", query_string={"scope": "selection", "task_ids": [failed, waiting]}
    )
    panel = confirm_panel(confirm)
    assert "Requeue 1 task?" in panel and "1 is PENDING, not FAILED" in panel

    response = act(console, "requeue", scope="selection", task_ids=[failed, waiting])
    message = notice(response)
    assert "Requeued 1 task." in message and f"{waiting} is PENDING, not FAILED" in message
    requeued = task(app, failed)
    assert requeued.status in ("PENDING", "ASSIGNED") and requeued.retry_count == 0
    assert any(e.reason == "requeued from the tasks list" for e in events(app, failed))


def test_it_changes_the_priority_of_a_selection(
    console: FlaskClient, app: Flask, api: Api, personas: Personas
) -> None:
    low = api.submit(personas.client, priority=2)["task_id"]
    same = api.submit(personas.client, priority=8)["task_id"]
    done = completed_task(api, personas)
    key_before = task(app, low).queue_key
    ids = [low, same, done]

    confirm = console.get(
        "/tasks/bulk/priority",
        query_string={"scope": "selection", "task_ids": ids, "new_priority": "8"},
    )
    panel = confirm_panel(confirm)
    assert "Set priority 8 on 1 task?" in panel
    assert "1 is already at priority 8" in panel and "1 is already COMPLETED" in panel

    response = act(console, "priority", scope="selection", task_ids=ids, new_priority="8")
    assert "Set priority 8 on 1 task." in notice(response)
    changed = task(app, low)
    assert changed.priority == 8 and changed.queue_key < key_before
    last = events(app, low)[-1]
    assert last.data == {"priority_from": 2, "priority_to": 8}
    assert len(events(app, same)) == 1  # untouched: only its submission


def test_it_acts_on_the_whole_filter_in_chunks(
    console: FlaskClient, app: Flask, api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "CHUNK", 3)
    mine = [api.submit(personas.client, task_type="nightly")["task_id"] for _ in range(7)]
    others = [api.submit(personas.other_client, task_type="nightly")["task_id"] for _ in range(2)]
    done = completed_task(api, personas)

    confirm = console.get("/tasks/bulk/cancel?scope=filter&client=client-1")
    panel = confirm_panel(confirm)
    assert "Cancel 7 tasks?" in panel
    assert "8 tasks match client: client-1" in panel
    assert "1 will be skipped: 1 is already COMPLETED" in panel
    assert re.search(r'name="confirmed" value="7"', text(confirm))

    response = act(console, "cancel", scope="filter", confirmed="7", client="client-1")
    assert "Cancelled 7 tasks." in notice(response)
    assert {task(app, i).status for i in mine} == {"CANCELLED"}
    assert {task(app, i).status for i in others} == {"PENDING"}
    assert task(app, done).status == "COMPLETED"
    assert all(events(app, i)[-1].to_status == "CANCELLED" for i in mine)
    # Back on the list with the filter kept.
    assert response.request.path == "/tasks" and response.request.args["client"] == "client-1"


def test_a_filter_run_stops_at_the_confirmed_count_and_the_cap(
    console: FlaskClient, app: Flask, api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [api.submit(personas.client, priority=5)["task_id"] for _ in range(6)]
    response = act(
        console, "priority", scope="filter", confirmed="4", new_priority="9", client="client-1"
    )
    message = notice(response)
    assert "Set priority 9 on 4 tasks." in message
    assert "2 more tasks match the filter; run the action again to continue." in message
    # Oldest first.
    assert [task(app, i).priority for i in ids] == [9, 9, 9, 9, 5, 5]

    monkeypatch.setattr(task_actions, "MAX_PER_RUN", 1)
    response = act(
        console, "priority", scope="filter", confirmed="2", new_priority="9", client="client-1"
    )
    assert "Set priority 9 on 1 task." in notice(response)
    assert "1 more task matches the filter" in notice(response)


def test_a_filter_action_follows_the_text_search(
    console: FlaskClient, app: Flask, api: Api, personas: Personas
) -> None:
    hit = api.submit(personas.client, input_data={"region": "north-east"})["task_id"]
    miss = api.submit(personas.client, input_data={"region": "south"})["task_id"]
    confirm = console.get("/tasks/bulk/cancel?scope=filter&q=north")
    assert "Cancel 1 task?" in confirm_panel(confirm)
    act(console, "cancel", scope="filter", confirmed="1", q="north")
    assert task(app, hit).status == "CANCELLED" and task(app, miss).status == "PENDING"


def test_it_refuses_bad_targets_without_changing_anything(
    console: FlaskClient, app: Flask, api: Api, personas: Personas
) -> None:
    task_id = api.submit(personas.client)["task_id"]
    no_selection = console.get("/tasks/bulk/cancel?scope=selection", follow_redirects=True)
    assert "Tick at least one task first." in notice(no_selection)
    for value in ("11", "0", "abc", ""):
        response = console.get(
            "/tasks/bulk/priority",
            query_string={"scope": "selection", "task_ids": task_id, "new_priority": value},
            follow_redirects=True,
        )
        assert "Choose a new priority from 1 to 10" in notice(response)
        posted = act(console, "priority", scope="selection", task_ids=task_id, new_priority=value)
        assert re.search(r"Choose a new priority from 1 to 10|New priority: ", notice(posted))
    too_many = [f"task_{i}" for i in range(bulk.MAX_SELECTION + 1)]
    assert "at most 500" in notice(act(console, "cancel", scope="selection", task_ids=too_many))
    unconfirmed = act(console, "cancel", scope="filter", client="client-1")
    assert "Confirm how many tasks the filter matches first." in notice(unconfirmed)
    bad_filter = act(console, "cancel", scope="filter", confirmed="5", priority="12")
    assert "Nothing done." in notice(bad_filter)
    assert task(app, task_id).status == "PENDING" and task(app, task_id).priority == 5


def test_hostile_ids_are_skipped_and_shown_escaped(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    other = api.submit(personas.other_client)["task_id"]
    hostile = "<script>alert(1)</script>"
    response = act(console, "cancel", scope="selection", task_ids=[hostile, "' OR 1=1 --"])
    body = text(response)
    assert hostile not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "Skipped 2:" in notice(response) and "was not found" in notice(response)
    assert api.get(f"/ains/tasks/{other}", personas.admin).get_json()["status"] == "PENDING"
    nul = console.get(
        "/tasks/bulk/cancel", query_string={"scope": "selection", "task_ids": "a\x00"}
    )
    assert nul.status_code == 400


def test_it_refuses_bulk_posts_without_the_csrf_token(
    console: FlaskClient, app: Flask, api: Api, personas: Personas
) -> None:
    task_id = api.submit(personas.client)["task_id"]
    for token in (None, "forged"):
        data: dict[str, Any] = {"scope": "selection", "task_ids": task_id}
        if token:
            data["csrf_token"] = token
        response = console.post("/tasks/bulk/cancel", data=data)
        assert response.status_code == 400
    assert task(app, task_id).status == "PENDING"


def test_viewers_see_no_bulk_controls_and_are_refused(
    app: Flask, api: Api, personas: Personas
) -> None:
    task_id = api.submit(personas.client)["task_id"]
    viewer = console_as(app, OperatorRole.VIEWER)
    body = text(viewer.get("/tasks"))
    assert task_id in body
    assert 'name="task_ids"' not in body and "Cancel all matching" not in body
    assert "Submit tasks" not in body
    confirm = viewer.get(
        "/tasks/bulk/cancel", query_string={"scope": "selection", "task_ids": task_id}
    )
    assert confirm.status_code == 403
    token = form_token(viewer, "/tasks")
    for action in ("cancel", "requeue", "priority"):
        response = viewer.post(
            f"/tasks/bulk/{action}",
            data={
                "csrf_token": token,
                "scope": "selection",
                "task_ids": task_id,
                "new_priority": "9",
            },
        )
        assert response.status_code == 403
    assert task(app, task_id).status == "PENDING" and task(app, task_id).priority == 5


def test_every_bulk_post_is_audited_with_its_action(
    console: FlaskClient, app: Flask, api: Api, personas: Personas
) -> None:
    task_id = api.submit(personas.client)["task_id"]
    act(console, "priority", scope="selection", task_ids=task_id, new_priority="7")
    act(console, "cancel", scope="selection", task_ids=task_id)
    with app.app_context():
        rows = list(
            db.session.scalars(
                db.select(AuditEvent)
                .where(AuditEvent.action.like("task.bulk_%"))
                .order_by(AuditEvent.id)
            )
        )
        assert [r.action for r in rows] == ["task.bulk_priority", "task.bulk_cancel"]
        assert all(r.actor == "operator:operator@example.com" for r in rows)
        assert rows[0].target_id == task_id
        db.session.remove()


def test_a_filter_run_leaves_tasks_created_after_the_confirmation_alone(
    console: FlaskClient, app: Flask, api: Api, personas: Personas
) -> None:
    first, second = (api.submit(personas.client, capability_required="cap-a") for _ in range(2))
    confirm = text(console.get("/tasks/bulk/cancel?scope=filter&capability=cap-a"))
    assert 'name="confirmed" value="2"' in confirm
    as_of = re.search(r'name="as_of" value="([^"]+)"', confirm)
    assert as_of is not None
    cancelled = api.post(f"/ains/tasks/{first['task_id']}/cancel", personas.client, json={})
    assert cancelled.status_code in (200, 202)
    third = api.submit(personas.client, capability_required="cap-a")["task_id"]

    response = act(
        console, "cancel", scope="filter", confirmed="2", as_of=as_of[1], capability="cap-a"
    )
    assert "Cancelled 1 task." in notice(response)
    assert "more task" not in notice(response)  # the newer task is not counted as left
    assert task(app, second["task_id"]).status == "CANCELLED"
    assert task(app, third).status == "PENDING"


def test_a_filter_run_refuses_a_forged_or_future_confirmation_time(
    console: FlaskClient, app: Flask, api: Api, personas: Personas
) -> None:
    task_id = api.submit(personas.client, capability_required="cap-a")["task_id"]
    for as_of in ("yesterday", "2999-01-01T00:00:00+00:00", "<script>", "2026-13-45T00:00"):
        response = act(
            console, "cancel", scope="filter", confirmed="1", as_of=as_of, capability="cap-a"
        )
        assert "This confirmation is not valid; open it again." in notice(response), as_of
    too_long = act(
        console, "cancel", scope="filter", confirmed="1", as_of="2" * 65, capability="cap-a"
    )
    assert "Nothing done." in notice(too_long)
    # Long ago: nothing was created by then, so nothing changes.
    old = act(
        console,
        "cancel",
        scope="filter",
        confirmed="1",
        as_of="2000-01-01T00:00:00",
        capability="cap-a",
    )
    assert "Cancelled 0 tasks." in notice(old)
    assert task(app, task_id).status == "PENDING"


def test_a_run_stopped_by_an_error_says_what_was_done(
    console: FlaskClient, app: Flask, api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [api.submit(personas.client, capability_required="cap-b")["task_id"] for _ in range(4)]
    monkeypatch.setattr(bulk, "CHUNK", 2)
    real, calls = task_actions.cancel_locked, []

    def fails_fourth(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("database went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(task_actions, "cancel_locked", fails_fourth)
    response = act(console, "cancel", scope="filter", confirmed="4", capability="cap-b")
    said = notice(response)
    assert "Cancelled 2 tasks." in said
    assert "Stopped by an error; the tasks not counted here were not changed." in said
    # The failed chunk was rolled back whole, including the task it had already changed.
    assert [task(app, i).status for i in ids] == ["CANCELLED", "CANCELLED", "PENDING", "PENDING"]
