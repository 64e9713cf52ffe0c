"""/ains/task-chains: create, list, get, cancel, and a chain run through the API."""

from __future__ import annotations

from typing import Any

from flask import Flask

from app.api.schemas import ChainOut, ChainPageOut
from app.extensions import db
from app.models import TaskChain
from tests.api.lifecycle_support import detail, report
from tests.api.support import assert_error, unchanged
from tests.conftest import Api, Persona, Personas

CHAINS = "/ains/task-chains"


def steps(*capabilities: str) -> list[dict[str, Any]]:
    return [{"task_type": c.split("-")[0], "capability_required": c} for c in capabilities]


def create(api: Api, persona: Persona, **body: Any) -> dict[str, Any]:
    body = {"name": "etl", "steps": steps("extract-v1", "load-v1"), **body}
    response = api.post(CHAINS, persona, json=body)
    assert response.status_code == 201, response.get_json()
    ChainOut.model_validate_json(response.get_data())
    return response.get_json()


def get(api: Api, persona: Persona, chain_id: str) -> dict[str, Any]:
    response = api.get(f"{CHAINS}/{chain_id}", persona)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def chain_count(app: Flask) -> int:
    with app.app_context():
        count = db.session.scalar(db.select(db.func.count()).select_from(TaskChain)) or 0
        db.session.remove()
    return count


def test_it_creates_a_running_chain_and_submits_its_first_step(
    api: Api, personas: Personas
) -> None:
    body = create(
        api,
        personas.client,
        steps=[
            {"task_type": "extract", "capability_required": "extract-v1", "input_data": {"a": 1}},
            {"task_type": "load", "capability_required": "load-v1", "priority": 9},
        ],
    )
    assert body["status"] == "RUNNING" and body["client_id"] == "client-1"
    assert (body["current_step"], body["total_steps"], body["step_results"]) == (0, 2, [])
    assert body["started_at"] == body["created_at"]
    assert body["completed_at"] is None and body["cancelled_at"] is None
    # Each step as it will run, the defaults filled in.
    assert body["steps"][1] == {
        "task_type": "load",
        "capability_required": "load-v1",
        "input_data": {},
        "priority": 9,
        "max_retries": 3,
        "retry_policy": "exponential",
        "timeout_seconds": 300,
        "retry_on_timeout": False,
        "expires_in_seconds": None,
        "routing_strategy": None,
        "template_id": None,
        "template_version": None,
    }
    task = detail(api, personas.client, body["current_task_id"])
    assert (task["chain_id"], task["chain_step"]) == (body["chain_id"], 0)
    assert task["status"] == "PENDING" and task["input_data"] == {"a": 1}
    assert task["events"][0]["actor"] == f"chain:{body['chain_id']}"


def test_it_runs_the_steps_in_order_passing_each_result_on(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet, ("extract-v1", "load-v1"), slots=2)
    chain = create(
        api,
        personas.client,
        steps=[
            {"task_type": "extract", "capability_required": "extract-v1"},
            {"task_type": "load", "capability_required": "load-v1", "input_data": {"to": "db"}},
        ],
    )
    [first] = api.claim(agent_id, agent)
    assert first["task_id"] == chain["current_task_id"]
    assert (
        report(api, agent, first["task_id"], "complete", result_data={"rows": 3}).status_code == 200
    )

    running = get(api, personas.client, chain["chain_id"])
    assert running["status"] == "RUNNING" and running["current_step"] == 1
    [second] = api.claim(agent_id, agent)
    assert second["task_id"] == running["current_task_id"]
    assert second["input_data"] == {"to": "db", "previous_output": {"rows": 3}}
    assert (
        report(api, agent, second["task_id"], "complete", result_data={"ok": True}).status_code
        == 200
    )

    done = get(api, personas.client, chain["chain_id"])
    assert done["status"] == "COMPLETED" and done["current_step"] == 2
    assert done["current_task_id"] is None and done["completed_at"] is not None
    assert done["step_results"] == [
        {
            "step": 0,
            "task_id": first["task_id"],
            "status": "COMPLETED",
            "result_data": {"rows": 3},
            "error_message": None,
        },
        {
            "step": 1,
            "task_id": second["task_id"],
            "status": "COMPLETED",
            "result_data": {"ok": True},
            "error_message": None,
        },
    ]


def test_it_fails_the_chain_with_its_step(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet, ("extract-v1",))
    chain = create(api, personas.client)
    [task] = api.claim(agent_id, agent)
    report(api, agent, task["task_id"], "fail", error_message="no data", retryable=False)
    failed = get(api, personas.client, chain["chain_id"])
    assert failed["status"] == "FAILED" and "no data" in failed["error_message"]
    assert failed["current_task_id"] == task["task_id"]
    assert [r["status"] for r in failed["step_results"]] == ["FAILED"]


def test_it_refuses_invalid_steps_and_writes_nothing(
    app: Flask, api: Api, personas: Personas
) -> None:
    cases: list[tuple[list[Any], str]] = [
        ([], "steps"),
        (steps("load-v1") * 51, "steps"),
        ([{"capability_required": "load-v1"}], "steps.0.task_type"),
        ([{"task_type": "load"}], "steps.0.capability_required"),
        ([*steps("load-v1"), {**steps("load-v1")[0], "priority": 11}], "steps.1.priority"),
        ([{**steps("load-v1")[0], "depends_on": ["x"]}], "steps.0.depends_on"),
        ([{**steps("load-v1")[0], "input_data": [1]}], "steps.0.input_data"),
        (["load-v1"], "steps.0"),
    ]
    with unchanged(app):
        for bad_steps, field in cases:
            response = api.post(CHAINS, personas.client, json={"name": "x", "steps": bad_steps})
            assert_error(response, 422, "validation_error", field)
        assert_error(api.post(CHAINS, personas.client, json={"steps": steps("a-v1")}), 422)
        assert_error(
            api.post(CHAINS, personas.client, data=b"[", content_type="application/json"), 400
        )
    assert chain_count(app) == 0


def test_it_checks_who_creates_a_chain_for_whom(app: Flask, api: Api, personas: Personas) -> None:
    body = {"name": "etl", "steps": steps("load-v1")}
    assert_error(api.post(CHAINS, json=body), 401)
    assert_error(api.post(CHAINS, personas.fleet, json=body), 403)
    assert_error(api.post(CHAINS, personas.client, json={**body, "client_id": "client-2"}), 403)
    assert_error(api.post(CHAINS, personas.admin, json=body), 422, field="client_id")
    assert chain_count(app) == 0
    made = create(api, personas.admin, client_id="client-2")
    assert made["client_id"] == "client-2"
    assert made["created_by"] == "admin:admin"


def test_it_shows_a_chain_to_its_client_and_admins(api: Api, personas: Personas) -> None:
    chain_id = create(api, personas.client)["chain_id"]
    assert get(api, personas.admin, chain_id)["chain_id"] == chain_id
    assert_error(api.get(f"{CHAINS}/{chain_id}", personas.other_client), 404, "not_found")
    assert_error(api.get(f"{CHAINS}/{chain_id}", personas.fleet), 403)
    assert_error(api.get(f"{CHAINS}/chain_nope", personas.client), 404)


def test_it_lists_chains_newest_first_with_filters(api: Api, personas: Personas) -> None:
    ids = [create(api, personas.client, name=f"c{i}")["chain_id"] for i in range(3)]
    other = create(api, personas.other_client)["chain_id"]
    api.post(f"{CHAINS}/{ids[0]}/cancel", personas.client, json={})

    response = api.get(CHAINS, personas.client, query_string={"limit": 2})
    assert response.status_code == 200
    ChainPageOut.model_validate_json(response.get_data())
    page = response.get_json()
    assert page["total"] == 3 and (page["limit"], page["offset"]) == (2, 0)
    assert [c["chain_id"] for c in page["chains"]] == [ids[2], ids[1]]
    assert all(c["current_task_id"] for c in page["chains"])
    rest = api.get(CHAINS, personas.client, query_string={"offset": 2}).get_json()
    assert [c["chain_id"] for c in rest["chains"]] == [ids[0]]

    cancelled = api.get(CHAINS, personas.client, query_string={"status": "CANCELLED"})
    assert [c["chain_id"] for c in cancelled.get_json()["chains"]] == [ids[0]]
    everyone = api.get(CHAINS, personas.admin).get_json()
    assert everyone["total"] == 4
    theirs = api.get(CHAINS, personas.admin, query_string={"client_id": "client-2"}).get_json()
    assert [c["chain_id"] for c in theirs["chains"]] == [other]
    # A client naming another client sees nothing of theirs.
    mine = api.get(CHAINS, personas.client, query_string={"client_id": "client-2"}).get_json()
    assert mine["total"] == 0

    assert_error(api.get(CHAINS, personas.client, query_string={"status": "DONE"}), 422)
    assert_error(api.get(CHAINS, personas.client, query_string={"limit": 0}), 422)
    assert_error(api.get(CHAINS, personas.fleet), 403)


def test_it_cancels_a_chain_once(api: Api, personas: Personas) -> None:
    chain = create(api, personas.client)
    url = f"{CHAINS}/{chain['chain_id']}/cancel"
    assert_error(api.post(url, personas.other_client, json={"reason": "mine"}), 404)
    assert_error(api.post(url, personas.client, json={"reason": 5}), 422, field="reason")

    response = api.post(url, personas.client, json={"reason": "changed my mind"})
    assert response.status_code == 200, response.get_json()
    ChainOut.model_validate_json(response.get_data())
    body = response.get_json()
    assert body["status"] == "CANCELLED" and body["cancellation_reason"] == "changed my mind"
    assert body["cancelled_at"] is not None
    assert [r["status"] for r in body["step_results"]] == ["CANCELLED"]
    task = detail(api, personas.client, chain["current_task_id"])
    assert task["status"] == "CANCELLED" and task["cancelled_by"] == "client:client-1"

    assert_error(api.post(url, personas.client, json={}), 409, "conflict")
    assert get(api, personas.client, chain["chain_id"])["cancellation_reason"] == (
        "changed my mind"
    )


def test_it_lets_a_running_step_finish_stopping_before_the_chain_shows_its_result(
    api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, ("extract-v1", "load-v1"))
    chain = create(api, personas.client)
    [task] = api.claim(agent_id, agent)
    cancelled = api.post(f"{CHAINS}/{chain['chain_id']}/cancel", personas.client, json={})
    assert cancelled.get_json()["status"] == "CANCELLED"
    assert cancelled.get_json()["step_results"] == []
    assert detail(api, personas.client, task["task_id"])["cancel_requested_at"] is not None

    refused = report(api, agent, task["task_id"], "complete", result_data={"late": 1})
    assert_error(refused, 409, "cancel_requested")
    after = get(api, personas.client, chain["chain_id"])
    assert after["status"] == "CANCELLED"
    assert [r["status"] for r in after["step_results"]] == ["CANCELLED"]
    assert api.claim(agent_id, agent) == []  # no next step


def test_it_takes_a_template_steps_defaults_and_only_the_fields_given(
    api: Api, personas: Personas
) -> None:
    made = api.post(
        "/ains/task-templates",
        personas.client,
        json={
            "name": "load",
            "task_type": "load",
            "capability_required": "load-v1",
            "default_input_data": {"to": "db"},
            "default_priority": 8,
            "default_max_retries": 1,
        },
    )
    assert made.status_code == 201, made.get_json()
    template_id = made.get_json()["template_id"]
    body = create(
        api,
        personas.client,
        steps=[
            {"task_type": "extract", "capability_required": "extract-v1"},
            {"template_id": template_id, "input_data": {"table": "t"}, "max_retries": 0},
        ],
    )
    step = body["steps"][1]
    assert (step["task_type"], step["capability_required"]) == ("load", "load-v1")
    assert (step["priority"], step["max_retries"]) == (8, 0)  # the template's, the step's
    assert step["input_data"] == {"to": "db", "table": "t"}
    assert (step["template_id"], step["template_version"]) == (template_id, 1)

    unknown = api.post(
        CHAINS, personas.client, json={"name": "x", "steps": [{"template_id": "tmpl_nope"}]}
    )
    assert_error(unknown, 422, "validation_error", "steps.0.template_id")
