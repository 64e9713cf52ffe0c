"""depends_on through the API: BLOCKED submits, @index batches, $from outputs, the graph
reads (GET .../dependencies and .../dependents), cascades, and who may see what."""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Flask

from app.api.schemas import BatchOut, DependenciesOut, DependentsOut, TaskDetail, TaskOut
from app.extensions import db
from app.models import TaskDependency
from tests.api.support import assert_error, row_counts, unchanged
from tests.api.test_claim import long_poll
from tests.conftest import Api, Persona, Personas

VALID: dict[str, Any] = {"task_type": "report", "capability_required": "report-v1"}


def complete(api: Api, agent_id: str, agent: Persona, task_id: str, **result: Any) -> None:
    claimed = api.claim(agent_id, agent)
    assert [t["task_id"] for t in claimed] == [task_id]
    response = api.post(f"/ains/tasks/{task_id}/complete", agent, json={"result_data": result})
    assert response.status_code == 200, response.get_json()


def get(api: Api, persona: Persona, path: str, **query: Any) -> dict[str, Any]:
    response = api.get(path, persona, query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_it_holds_a_dependent_back_until_its_dependency_completes(
    api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    first = api.submit(personas.client)
    assert (first["status"], first["assigned_agent_id"]) == ("ASSIGNED", agent_id)
    second = api.submit(
        personas.client,
        depends_on=[first["task_id"]],
        input_data={"summary": {"$from": first["task_id"], "path": "report.lines.0"}},
    )
    TaskOut.model_validate(second)
    assert second["status"] == "BLOCKED" and second["pending_dependencies"] == 1
    assert second["on_dependency_failure"] == "cancel"

    detail = get(api, personas.client, f"/ains/tasks/{second['task_id']}")
    TaskDetail.model_validate(detail)
    assert detail["depends_on"] == [first["task_id"]]
    assert detail["events"][0]["to_status"] == "BLOCKED"
    assert get(api, personas.client, f"/ains/tasks/{first['task_id']}")["depends_on"] == []

    deps = get(api, personas.client, f"/ains/tasks/{second['task_id']}/dependencies")
    DependenciesOut.model_validate(deps)
    assert deps == {
        "task_id": second["task_id"],
        "pending_dependencies": 1,
        "dependencies": [{"task_id": first["task_id"], "status": "ASSIGNED", "blocking": True}],
    }
    dependents = get(api, personas.client, f"/ains/tasks/{first['task_id']}/dependents")
    DependentsOut.model_validate(dependents)
    assert dependents["dependents"] == [
        {"task_id": second["task_id"], "status": "BLOCKED", "blocking": True}
    ]
    assert dependents["total"] == 1

    complete(api, agent_id, agent, first["task_id"], report={"lines": ["all good", "x"]})
    released = get(api, personas.client, f"/ains/tasks/{second['task_id']}")
    # Released, then routed at once to the agent (its slot is free again).
    assert released["status"] == "ASSIGNED" and released["pending_dependencies"] == 0
    assert released["assigned_agent_id"] == agent_id
    assert released["input_data"] == {"summary": "all good"}
    unblocked, routed = released["events"][-2:]
    assert (unblocked["from_status"], unblocked["to_status"]) == ("BLOCKED", "PENDING")
    assert unblocked["reason"] == "dependencies completed"
    assert (routed["from_status"], routed["to_status"]) == ("PENDING", "ASSIGNED")
    assert routed["actor"] == "system:router"
    deps = get(api, personas.client, f"/ains/tasks/{second['task_id']}/dependencies")
    assert deps["dependencies"][0] == {
        "task_id": first["task_id"],
        "status": "COMPLETED",
        "blocking": False,
    }
    assert [t["task_id"] for t in api.claim(agent_id, agent)] == [second["task_id"]]


def test_it_never_hands_out_a_blocked_task(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=5)
    first = api.submit(personas.client, capability_required="other-v1")
    api.submit(personas.client, depends_on=[first["task_id"]], priority=10)
    assert api.claim(agent_id, agent, max_tasks=5) == []


def test_it_refuses_unknown_and_foreign_dependencies_naming_them(
    app: Flask, api: Api, personas: Personas
) -> None:
    mine = api.submit(personas.client)["task_id"]
    theirs = api.submit(personas.other_client)["task_id"]
    with unchanged(app):
        response = api.post(
            "/ains/tasks",
            personas.client,
            json={**VALID, "depends_on": [mine, theirs, "task_nope"]},
        )
        error = assert_error(response, 422, "validation_error", field="depends_on")
    assert theirs in error["message"] and "task_nope" in error["message"]
    assert mine not in error["message"]
    assert [d["field"] for d in error["details"]] == ["depends_on", "depends_on"]

    # An admin submitting for client-1 cannot borrow client-2's task either.
    response = api.post(
        "/ains/tasks",
        personas.admin,
        json={**VALID, "client_id": "client-1", "depends_on": [theirs]},
    )
    assert_error(response, 422, "validation_error", field="depends_on")


def test_it_refuses_malformed_dependency_lists(app: Flask, api: Api, personas: Personas) -> None:
    first = api.submit(personas.client)["task_id"]
    bodies = [
        ({**VALID, "depends_on": ["@0"]}, "depends_on"),
        ({**VALID, "depends_on": [f"task_{i}" for i in range(101)]}, "depends_on"),
        ({**VALID, "depends_on": [""]}, "depends_on.0"),
        ({**VALID, "depends_on": first}, "depends_on"),
        ({**VALID, "on_dependency_failure": "ignore"}, "on_dependency_failure"),
        ({**VALID, "input_data": {"x": {"$from": first}}}, "input_data.x"),
        ({**VALID, "depends_on": [first], "input_data": {"x": {"$from": first, "p": 1}}}, None),
    ]
    with unchanged(app):
        for body, field in bodies:
            error = assert_error(api.post("/ains/tasks", personas.client, json=body), 422)
            if field is not None:
                assert field in [d["field"] for d in error["details"]], (body, error)


def test_a_batch_passes_outputs_between_its_items_by_index(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    items = [
        {**VALID, "input_data": {"n": 1}},
        {**VALID, "depends_on": ["@0"], "input_data": {"prev": {"$from": "@0", "path": "n"}}},
        {**VALID, "depends_on": ["@0", "@1"], "on_dependency_failure": "run"},
    ]
    response = api.post("/ains/tasks/batch", personas.client, json={"tasks": items})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    BatchOut.model_validate(body)
    ids = [s["task_id"] for s in body["submitted"]]
    assert [s["status"] for s in body["submitted"]] == ["ASSIGNED", "BLOCKED", "BLOCKED"]
    stored = get(api, personas.client, f"/ains/tasks/{ids[1]}")
    assert stored["input_data"] == {"prev": {"$from": ids[0], "path": "n"}}  # @0 → its id
    assert stored["depends_on"] == [ids[0]]
    assert get(api, personas.client, f"/ains/tasks/{ids[2]}")["pending_dependencies"] == 2

    complete(api, agent_id, agent, ids[0], n=41)
    assert get(api, personas.client, f"/ains/tasks/{ids[1]}")["input_data"] == {"prev": 41}
    deps = get(api, personas.client, f"/ains/tasks/{ids[2]}/dependencies")
    assert {d["task_id"]: d["blocking"] for d in deps["dependencies"]} == {
        ids[0]: False,
        ids[1]: True,
    }


def test_a_batch_with_a_cycle_is_refused_naming_the_items(
    app: Flask, api: Api, personas: Personas
) -> None:
    items = [
        {**VALID, "depends_on": ["@2"]},
        {**VALID},
        {**VALID, "depends_on": ["@0"]},
        {**VALID, "depends_on": ["@1", "@2"]},
    ]
    with unchanged(app):
        response = api.post(
            "/ains/tasks/batch", personas.client, json={"tasks": items, "atomic": True}
        )
        error = assert_error(response, 422, "validation_error")
    assert "nothing was created" in error["message"]
    messages = {d["field"]: d["message"] for d in error["details"]}
    assert set(messages) == {"tasks[0]", "tasks[2]", "tasks[3]"}
    assert "cycle through items @0, @2" in messages["tasks[0]"]
    assert messages["tasks[3]"] == "depends on failed item @2"

    response = api.post("/ains/tasks/batch", personas.client, json={"tasks": items})
    assert response.status_code == 201
    body = response.get_json()
    assert [s["index"] for s in body["submitted"]] == [1]
    assert [f["index"] for f in body["failed"]] == [0, 2, 3]
    assert body["failed"][0]["details"][0]["field"] == "tasks[0].depends_on"
    assert row_counts(app)["tasks"] == 1


def test_a_batch_replay_returns_the_same_tasks_and_failures(api: Api, personas: Personas) -> None:
    items = [{**VALID}, {**VALID, "depends_on": ["@0"]}, {**VALID, "depends_on": ["task_x"]}]
    headers = {"Idempotency-Key": "dag-1"}
    bodies = [
        api.post("/ains/tasks/batch", personas.client, headers=headers, json={"tasks": items})
        for _ in range(2)
    ]
    assert [b.status_code for b in bodies] == [201, 200]
    first, again = (b.get_json() for b in bodies)
    assert [s["task_id"] for s in again["submitted"]] == [s["task_id"] for s in first["submitted"]]
    assert again["failed"] == first["failed"] and [f["index"] for f in first["failed"]] == [2]


def test_a_failure_cancels_everything_downstream(app: Flask, api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    root = api.submit(personas.client)["task_id"]
    items = [
        {**VALID, "depends_on": [root]},
        {**VALID, "depends_on": ["@0"]},
        {**VALID, "depends_on": ["@0"], "on_dependency_failure": "run"},
    ]
    body = api.post("/ains/tasks/batch", personas.client, json={"tasks": items}).get_json()
    child, grandchild, stubborn = (s["task_id"] for s in body["submitted"])
    [claimed] = api.claim(agent_id, agent)
    response = api.post(
        f"/ains/tasks/{claimed['task_id']}/fail",
        agent,
        json={"error_message": "bad input", "retryable": False},
    )
    assert response.status_code == 200 and response.get_json()["status"] == "FAILED"

    for task_id, cause in ((child, root), (grandchild, child)):
        task = get(api, personas.client, f"/ains/tasks/{task_id}")
        assert task["status"] == "CANCELLED"
        assert task["cancellation_reason"] == f"dependency {cause} failed"
        assert task["cancelled_by"] == "system"
    # Released to run anyway, and routed at once to the agent (the failure freed its slot).
    released = get(api, personas.client, f"/ains/tasks/{stubborn}")
    assert (released["status"], released["assigned_agent_id"]) == ("ASSIGNED", agent_id)
    dependents = get(api, personas.client, f"/ains/tasks/{child}/dependents")
    assert {(d["status"], d["blocking"]) for d in dependents["dependents"]} == {
        ("CANCELLED", False),
        ("ASSIGNED", False),
    }


def test_it_pages_through_the_dependents(api: Api, personas: Personas) -> None:
    root = api.submit(personas.client)["task_id"]
    items = [{**VALID, "depends_on": [root]} for _ in range(5)]
    body = api.post("/ains/tasks/batch", personas.client, json={"tasks": items}).get_json()
    ids = [s["task_id"] for s in body["submitted"]]
    seen = []
    for offset in (0, 2, 4):
        page = get(api, personas.client, f"/ains/tasks/{root}/dependents", limit=2, offset=offset)
        assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == offset
        seen += [d["task_id"] for d in page["dependents"]]
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    assert_error(
        api.get(f"/ains/tasks/{root}/dependents", personas.client, query_string={"limit": 1001}),
        422,
    )


def test_only_those_who_may_see_the_task_see_its_graph(api: Api, personas: Personas) -> None:
    root = api.submit(personas.client)["task_id"]
    child = api.submit(personas.client, depends_on=[root])["task_id"]
    for path in (f"/ains/tasks/{child}/dependencies", f"/ains/tasks/{root}/dependents"):
        assert_error(api.get(path, personas.other_client), 404, "not_found")
        # Agents never see the graph, not even around a task they run.
        assert_error(api.get(path, personas.fleet), 403, "forbidden")
        assert_error(api.get(path), 401)
        assert get(api, personas.admin, path)["task_id"] in (root, child)
    assert_error(api.get("/ains/tasks/task_nope/dependencies", personas.client), 404)


def test_it_stores_one_edge_per_dependency(app: Flask, api: Api, personas: Personas) -> None:
    a = api.submit(personas.client)["task_id"]
    b = api.submit(personas.client)["task_id"]
    c = api.submit(personas.client, depends_on=[a, b, a])["task_id"]
    with app.app_context():
        edges = db.session.execute(
            db.select(TaskDependency.task_id, TaskDependency.depends_on_id)
        ).all()
        assert sorted(edges) == sorted([(c, a), (c, b)])
        db.session.remove()


def test_it_wakes_a_long_poll_for_each_task_a_completion_releases(
    app: Flask, api: Api, personas: Personas
) -> None:
    worker_id, worker = api.register_agent(personas.fleet, capabilities=("fetch-v1",))
    root = api.submit(personas.client, capability_required="fetch-v1")["task_id"]
    items = [{**VALID, "depends_on": [root]} for _ in range(2)]
    body = api.post("/ains/tasks/batch", personas.client, json={"tasks": items}).get_json()
    released = {s["task_id"] for s in body["submitted"]}
    pollers, outs = [], []
    for i in range(2):
        agent_id, agent = api.register_agent(personas.fleet, name=f"waiter {i}")
        out: dict[str, Any] = {}
        poller = threading.Thread(target=long_poll, args=(app, agent_id, agent, 5.0, out))
        poller.start()
        pollers.append(poller)
        outs.append(out)
    time.sleep(0.3)
    complete(api, worker_id, worker, root)
    completed_at = time.monotonic()
    for poller in pollers:
        poller.join(timeout=10)
    # Both woken by the completion's commit (one token per released task), not by the end
    # of their wait.
    claimed = {t["task_id"] for out in outs for t in out["body"]["tasks"]}
    assert claimed == released
    assert time.monotonic() - completed_at < 1.5
