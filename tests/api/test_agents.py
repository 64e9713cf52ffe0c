"""Agents: register, bound keys, fleets, capabilities, heartbeats, visibility."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask import Flask

from app.models import Agent
from tests.api.support import assert_error, load, parse_time, row_counts, unchanged
from tests.conftest import Api, Persona, Personas

REGISTER = {
    "display_name": "Report bot",
    "public_key": "ssh-ed25519 AAAA-report-bot",
    "capabilities": [
        {
            "name": "report-v1",
            "version": "1.2",
            "pricing_model": "per_task",
            "price": 0.5,
            "input_schema": {"type": "object"},
        }
    ],
    "max_concurrent_tasks": 3,
}


def test_it_registers_an_agent_and_returns_a_bound_key_once(
    app: Flask, api: Api, personas: Personas
) -> None:
    response = api.post("/ains/agents", personas.fleet, json=REGISTER)
    assert response.status_code == 201
    body = response.get_json()
    agent_id = body["agent_id"]
    assert agent_id.startswith("agent_")
    assert body["api_key"].startswith("ains_")
    agent = body["agent"]
    assert agent["agent_id"] == agent_id
    assert agent["status"] == "AVAILABLE"
    assert agent["max_concurrent_tasks"] == 3
    assert agent["active_tasks"] == 0
    [cap] = agent["capabilities"]
    assert cap["name"] == "report-v1" and cap["version"] == "1.2" and cap["price"] == 0.5
    assert cap["capability_id"].startswith("cap_")

    bound = Persona(body["api_key"], "agent")
    fetched = api.get(f"/ains/agents/{agent_id}", bound)
    assert fetched.status_code == 200
    assert fetched.get_json()["public_key"] == REGISTER["public_key"]
    beat = api.post(f"/ains/agents/{agent_id}/heartbeat", bound, json={"status": "ACTIVE"})
    assert beat.status_code == 200
    # The key is shown once: nothing else returns it.
    assert body["api_key"] not in fetched.get_data(as_text=True)
    listed = api.get("/ains/agents", personas.fleet).get_data(as_text=True)
    assert body["api_key"] not in listed


def test_it_refuses_a_second_agent_with_the_same_public_key(
    app: Flask, api: Api, personas: Personas
) -> None:
    assert api.post("/ains/agents", personas.fleet, json=REGISTER).status_code == 201
    with unchanged(app):
        again = api.post("/ains/agents", personas.other_fleet, json=REGISTER)
        assert_error(again, 409, "conflict")
    assert row_counts(app)["agents"] == 1


def test_it_lets_an_admin_register_an_agent(api: Api, personas: Personas) -> None:
    response = api.post("/ains/agents", personas.admin, json=REGISTER)
    assert response.status_code == 201


def test_it_forbids_a_bound_key_to_register_other_agents(
    app: Flask, api: Api, personas: Personas
) -> None:
    _, bound = api.register_agent(personas.fleet)
    with unchanged(app):
        response = api.post("/ains/agents", bound, json=REGISTER)
        assert_error(response, 403, "forbidden")


def test_it_hides_one_fleets_agents_from_another_fleet(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet)
    with unchanged(app):
        assert_error(api.get(f"/ains/agents/{agent_id}", personas.other_fleet), 404)
        for path, body in (
            ("heartbeat", {"status": "ACTIVE"}),
            ("capabilities", {"name": "x-v1"}),
            ("tasks/claim", {}),
        ):
            response = api.post(f"/ains/agents/{agent_id}/{path}", personas.other_fleet, json=body)
            assert_error(response, 404, "not_found")
    assert api.get("/ains/agents", personas.other_fleet).get_json() == {"agents": [], "total": 0}


def test_it_lets_a_fleet_key_act_for_every_agent_it_registered(
    api: Api, personas: Personas
) -> None:
    first, _ = api.register_agent(personas.fleet, name="one")
    second, _ = api.register_agent(personas.fleet, name="two")
    for agent_id in (first, second):
        beat = api.post(
            f"/ains/agents/{agent_id}/heartbeat", personas.fleet, json={"status": "ACTIVE"}
        )
        assert beat.status_code == 200


def test_it_lists_agents_by_visibility(api: Api, personas: Personas) -> None:
    mine_a, key_a = api.register_agent(personas.fleet, name="a")
    mine_b, _ = api.register_agent(personas.fleet, name="b")
    theirs, _ = api.register_agent(personas.other_fleet, name="c")

    def ids(persona: Persona) -> set[str]:
        body = api.get("/ains/agents", persona).get_json()
        assert body["total"] == len(body["agents"])
        return {a["agent_id"] for a in body["agents"]}

    assert ids(personas.admin) == {mine_a, mine_b, theirs}
    assert ids(personas.client) == {mine_a, mine_b, theirs}
    assert ids(personas.fleet) == {mine_a, mine_b}
    assert ids(personas.other_fleet) == {theirs}
    assert ids(key_a) == {mine_a}
    assert api.get(f"/ains/agents/{mine_b}", key_a).status_code == 404
    assert api.get(f"/ains/agents/{theirs}", personas.client).status_code == 200


def test_it_lists_agents_newest_first_and_filters_by_status(api: Api, personas: Personas) -> None:
    old, _ = api.register_agent(personas.fleet, name="old")
    new, new_key = api.register_agent(personas.fleet, name="new")
    api.post(f"/ains/agents/{new}/heartbeat", new_key, json={"status": "OFFLINE"})
    listed = api.get("/ains/agents", personas.admin).get_json()["agents"]
    assert [a["agent_id"] for a in listed] == [new, old]
    inactive = api.get("/ains/agents", personas.admin, query_string={"status": "INACTIVE"})
    assert [a["agent_id"] for a in inactive.get_json()["agents"]] == [new]


def test_it_adds_and_replaces_capabilities_by_name(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, capabilities=("report-v1",))
    url = f"/ains/agents/{agent_id}/capabilities"
    added = api.post(url, agent, json={"name": "translate-v2", "version": "1", "price": 2})
    assert added.status_code == 201
    cap = added.get_json()
    assert cap["name"] == "translate-v2" and cap["version"] == "1" and cap["price"] == 2

    replaced = api.post(
        url,
        agent,
        json={"name": "translate-v2", "version": "2", "output_schema": {"type": "string"}},
    )
    assert replaced.status_code == 201
    assert replaced.get_json()["version"] == "2"
    assert replaced.get_json()["output_schema"] == {"type": "string"}
    caps = api.get(f"/ains/agents/{agent_id}", agent).get_json()["capabilities"]
    assert sorted(c["name"] for c in caps) == ["report-v1", "translate-v2"]
    [translate] = [c for c in caps if c["name"] == "translate-v2"]
    assert translate["version"] == "2"
    assert row_counts(app)["capabilities"] == 2


@pytest.mark.parametrize(
    ("health", "status"),
    [("ACTIVE", "AVAILABLE"), ("DEGRADED", "BUSY"), ("OFFLINE", "INACTIVE")],
)
def test_it_maps_heartbeat_health_to_agent_status(
    app: Flask, api: Api, personas: Personas, health: str, status: str
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    before = datetime.now(UTC)
    response = api.post(
        f"/ains/agents/{agent_id}/heartbeat",
        agent,
        json={
            "status": health,
            "uptime_ms": 1234,
            "metrics": {"cpu": 0.5},
            "timestamp": int(before.timestamp()),
        },
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["acknowledged"] is True
    assert body["agent_status"] == status
    assert body["agent_health_status"] == health
    assert body["next_heartbeat_in"] == app.config["HEARTBEAT_INTERVAL_SECONDS"]
    assert body["cancelled_task_ids"] == []
    assert parse_time(body["last_heartbeat"]) >= before.replace(microsecond=0)
    shown = api.get(f"/ains/agents/{agent_id}", agent).get_json()
    assert shown["status"] == status and shown["health_status"] == health
    assert shown["uptime_ms"] == 1234
    stored = load(app, Agent, agent_id)
    assert stored.status == status and stored.metrics == {"cpu": 0.5}


def test_it_accepts_an_iso_heartbeat_timestamp(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    response = api.post(
        f"/ains/agents/{agent_id}/heartbeat",
        agent,
        json={"status": "ACTIVE", "timestamp": "2026-11-22T04:00:00+00:00"},
    )
    assert response.status_code == 200


def test_it_brings_an_inactive_agent_back_with_an_active_heartbeat(
    api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    url = f"/ains/agents/{agent_id}/heartbeat"
    assert api.post(url, agent, json={"status": "OFFLINE"}).get_json()["agent_status"] == "INACTIVE"
    assert api.post(url, agent, json={"status": "ACTIVE"}).get_json()["agent_status"] == "AVAILABLE"
