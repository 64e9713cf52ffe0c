"""Trust over the API: GET /ains/agents/{id}/trust, GET /ains/agents/leaderboard,
POST /ains/agents/{id}/trust/adjust, and trust following task outcomes and poison tasks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask

from app.api.schemas import AgentTrustOut, LeaderboardOut, TrustAdjustedOut
from app.extensions import db
from app.models import Agent, TrustRecord
from app.services.settings import settings
from tests.api.lifecycle_support import fail, report, running, sweep_at
from tests.api.support import assert_error, load, unchanged
from tests.conftest import Api, Persona, Personas


@pytest.fixture(autouse=True)
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "retry_jitter", "none")


def trust_of(api: Api, persona: Persona, agent_id: str, **query: Any) -> dict[str, Any]:
    response = api.get(f"/ains/agents/{agent_id}/trust", persona, query_string=query)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    AgentTrustOut.model_validate(body)
    return body


def adjust(api: Api, persona: Persona, agent_id: str, **body: Any) -> Any:
    return api.post(f"/ains/agents/{agent_id}/trust/adjust", persona, json=body)


def board(api: Api, persona: Persona, **query: Any) -> list[dict[str, Any]]:
    response = api.get("/ains/agents/leaderboard", persona, query_string=query)
    assert response.status_code == 200, response.get_json()
    LeaderboardOut.model_validate(response.get_json())
    return response.get_json()["leaderboard"]


def test_it_shows_an_agents_trust_in_the_seed_shape(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet, name="Premium Agent")
    body = trust_of(api, personas.client, agent_id)
    assert body == {
        "agent_id": agent_id,
        "display_name": "Premium Agent",
        "trust_score": 0.5,
        "trust_level": "medium",
        "metrics": {
            "total_tasks_completed": 0,
            "total_tasks_failed": 0,
            "success_rate": None,
            "avg_completion_time_seconds": None,
            "last_task_completed_at": None,
        },
        "records": [],
    }
    assert trust_of(api, agent, agent_id)["agent_id"] == agent_id
    assert trust_of(api, personas.admin, agent_id)["agent_id"] == agent_id


def test_the_trust_endpoint_refuses_bad_limits_unknown_and_foreign_agents(
    api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet)
    for limit in (0, 501, "x"):
        assert_error(
            api.get(
                f"/ains/agents/{agent_id}/trust", personas.admin, query_string={"limit": limit}
            ),
            422,
            field="limit",
        )
    assert_error(api.get("/ains/agents/agent_nope/trust", personas.admin), 404)
    assert_error(api.get(f"/ains/agents/{agent_id}/trust", personas.other_fleet), 404)
    assert_error(api.get(f"/ains/agents/{agent_id}/trust"), 401)


def test_a_completed_task_adds_002_and_a_failed_one_takes_005(api: Api, personas: Personas) -> None:
    done_id, good_id, good = running(api, personas, name="good")
    response = report(api, good, done_id, "complete", result_data={"ok": True})
    assert response.status_code == 200, response.get_json()
    shown = trust_of(api, personas.client, good_id)
    assert shown["trust_score"] == 0.52
    [record] = shown["records"]
    assert record["event_type"] == "task_completed" and record["task_id"] == done_id
    assert (record["trust_score_before"], record["trust_score_after"]) == (0.5, 0.52)
    assert record["trust_delta"] == 0.02 and record["actor"] == f"agent:{good_id}"
    assert shown["metrics"]["total_tasks_completed"] == 1
    assert shown["metrics"]["success_rate"] == 1.0
    assert shown["metrics"]["last_task_completed_at"] is not None

    failed_id, bad_id, bad = running(api, personas, name="bad", max_retries=0)
    assert fail(api, bad, failed_id, error_message="out of memory")["status"] == "FAILED"
    shown = trust_of(api, personas.client, bad_id)
    assert shown["trust_score"] == 0.45 and shown["trust_level"] == "low"
    [record] = shown["records"]
    assert record["event_type"] == "task_failed" and record["trust_delta"] == -0.05
    assert "out of memory" in record["reason"]
    assert shown["metrics"]["success_rate"] == 0.0


def test_a_timeout_takes_005_and_a_cancellation_nothing(
    app: Flask, api: Api, personas: Personas
) -> None:
    slow_task, slow_id, _ = running(api, personas, name="slow", timeout_seconds=1, max_retries=0)
    registered = load(app, Agent, slow_id).last_heartbeat
    sweep_at(app, registered + timedelta(seconds=5))
    [record] = trust_of(api, personas.client, slow_id)["records"]
    assert (record["event_type"], record["trust_delta"], record["task_id"]) == (
        "task_timed_out",
        -0.05,
        slow_task,
    )

    cancelled, calm_id, calm = running(api, personas, name="calm")
    api.post(f"/ains/tasks/{cancelled}/cancel", personas.client, json={"reason": "enough"})
    assert fail(api, calm, cancelled, error_message="stopped")["status"] == "CANCELLED"
    shown = trust_of(api, personas.client, calm_id)
    assert shown["trust_score"] == 0.5 and shown["records"] == []


def test_the_leaderboard_ranks_by_trust_then_completed_tasks(api: Api, personas: Personas) -> None:
    low_id, _ = api.register_agent(personas.fleet, name="low")
    top_id, _ = api.register_agent(personas.fleet, name="top")
    tie_id, tie = api.register_agent(personas.fleet, capabilities=("tie-v1",), name="tie")
    assert adjust(api, personas.admin, low_id, delta=-0.35, reason="bad").status_code == 201
    assert adjust(api, personas.admin, top_id, delta=0.45, reason="great").status_code == 201
    # A completed task puts "tie" at 0.52; "busy" gets there by hand with no completed task.
    busy_id, _ = api.register_agent(personas.fleet, name="busy")
    assert adjust(api, personas.admin, busy_id, delta=0.02, reason="same").status_code == 201
    task_id = api.submit(personas.client, capability_required="tie-v1")["task_id"]
    assert [t["task_id"] for t in api.claim(tie_id, tie)] == [task_id]
    assert report(api, tie, task_id, "complete", result_data={}).status_code == 200

    entries = board(api, personas.client)
    assert [e["agent_id"] for e in entries] == [top_id, tie_id, busy_id, low_id]
    assert [e["rank"] for e in entries] == [1, 2, 3, 4]
    first = entries[0]
    assert first["display_name"] == "top" and first["trust_score"] == 0.95
    assert first["trust_level"] == "excellent" and first["status"] == "AVAILABLE"
    assert entries[1]["total_tasks_completed"] == 1 and entries[1]["success_rate"] == 1.0
    assert entries[3]["trust_level"] == "very_low"
    assert len(board(api, personas.admin, limit=2)) == 2
    # An agent key sees its own agents only.
    assert [e["agent_id"] for e in board(api, tie)] == [tie_id]
    assert board(api, personas.other_fleet) == []
    assert_error(
        api.get("/ains/agents/leaderboard", personas.admin, query_string={"limit": 0}), 422
    )


def test_the_leaderboard_route_is_not_taken_for_an_agent_id(api: Api, personas: Personas) -> None:
    api.register_agent(personas.fleet)
    response = api.get("/ains/agents/leaderboard", personas.admin)
    assert response.status_code == 200 and "leaderboard" in response.get_json()


def test_an_admin_adjusts_trust_and_the_record_says_who(api: Api, personas: Personas) -> None:
    agent_id, _ = api.register_agent(personas.fleet)
    response = adjust(api, personas.admin, agent_id, delta=0.3, reason="  vetted by ops  ")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    TrustAdjustedOut.model_validate(body)
    record = body["record"]
    assert record["event_type"] == "manual_adjustment"
    assert record["actor"] == "admin:admin"
    assert record["reason"] == "vetted by ops"
    assert (record["trust_score_before"], record["trust_score_after"]) == (0.5, 0.8)
    assert record["trust_delta"] == 0.3 and record["task_id"] is None
    assert body["trust"]["trust_score"] == 0.8 and body["trust"]["trust_level"] == "high"

    clamped = adjust(api, personas.admin, agent_id, delta=1, reason="max").get_json()["record"]
    assert (clamped["trust_score_after"], clamped["trust_delta"]) == (1.0, 0.2)
    shown = trust_of(api, personas.client, agent_id, limit=1)
    assert shown["trust_score"] == 1.0 and shown["trust_level"] == "excellent"
    assert [r["reason"] for r in shown["records"]] == ["max"]
    assert len(trust_of(api, personas.client, agent_id)["records"]) == 2


def test_only_admins_adjust_trust_and_bad_input_changes_nothing(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    with unchanged(app):
        for persona in (personas.client, personas.fleet, agent):
            assert_error(adjust(api, persona, agent_id, delta=0.1, reason="me"), 403)
        assert_error(adjust(api, None, agent_id, delta=0.1, reason="x"), 401)
        for delta in (0, 1.5, -2, "0.1", True, None):
            assert_error(
                adjust(api, personas.admin, agent_id, delta=delta, reason="x"), 422, field="delta"
            )
        for reason in ("", "   ", "x" * 501, None):
            assert_error(
                adjust(api, personas.admin, agent_id, delta=0.1, reason=reason),
                422,
                field="reason",
            )
        assert_error(adjust(api, personas.admin, agent_id, delta=0.1), 422, field="reason")
        assert_error(
            adjust(api, personas.admin, agent_id, delta=0.1, reason="x", extra=1),
            422,
            field="extra",
        )
        assert_error(adjust(api, personas.admin, "agent_nope", delta=0.1, reason="x"), 404)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(TrustRecord)) == 0
        db.session.remove()


def fail_everywhere(
    api: Api, agents: list[tuple[str, Persona]], task_id: str, rounds: int = 10
) -> list[str]:
    """Claim the task with whichever agent it is routed to and fail it, until it ends."""
    failed_on: list[str] = []
    for n in range(rounds):
        for agent_id, agent in agents:
            claimed = api.claim(agent_id, agent)
            if claimed:
                assert [t["task_id"] for t in claimed] == [task_id]
                break
        else:
            raise AssertionError(f"round {n}: no agent could claim {task_id}")
        failed_on.append(agent_id)
        shown = fail(api, agent, task_id, error_message=f"boom {n}", retry_after_seconds=0)
        if shown["status"] not in ("PENDING", "ASSIGNED"):
            return failed_on
    raise AssertionError(f"{task_id} did not end after {rounds} failures")


def test_a_task_failing_on_three_agents_is_poison_and_their_trust_is_refunded(
    app: Flask, api: Api, personas: Personas
) -> None:
    agents = [api.register_agent(personas.fleet, name=f"a{i}") for i in range(3)]
    task_id = api.submit(personas.client, max_retries=10)["task_id"]
    failed_on = fail_everywhere(api, agents, task_id)
    assert len(set(failed_on)) == 3

    shown = api.get(f"/ains/tasks/{task_id}", personas.client).get_json()
    assert shown["status"] == "FAILED" and shown["poison"] is True
    assert "failed on 3 different agents" in shown["error_message"]
    assert shown["retry_count"] < shown["max_retries"]
    for agent_id, _ in agents:
        body = trust_of(api, personas.client, agent_id)
        assert body["trust_score"] == 0.5  # back where it was
        events = [r["event_type"] for r in reversed(body["records"])]
        assert events[-1] == "poison_refund"
        assert set(events[:-1]) == {"task_failed"}
        refund = body["records"][0]
        assert refund["task_id"] == task_id and "poison" in refund["reason"]
        # The metrics still count what happened.
        assert body["metrics"]["total_tasks_failed"] == failed_on.count(agent_id)


def test_a_task_failing_three_times_on_one_agent_is_not_poison(
    api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    task_id = api.submit(personas.client, max_retries=3)["task_id"]
    failed_on = fail_everywhere(api, [(agent_id, agent)], task_id)
    assert failed_on == [agent_id] * 4
    shown = api.get(f"/ains/tasks/{task_id}", personas.client).get_json()
    assert shown["status"] == "FAILED" and shown["poison"] is False
    body = trust_of(api, personas.client, agent_id)
    assert body["trust_score"] == 0.3 and body["trust_level"] == "low"
    assert [r["event_type"] for r in body["records"]] == ["task_failed"] * 4
