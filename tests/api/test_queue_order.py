"""Claim order: priority first, FIFO within a priority, aging so no task starves."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine

from app.services.settings import settings
from tests.api.support import T0
from tests.conftest import Api, Persona, Personas


def drain(api: Api, agent_id: str, agent: Persona) -> list[str]:
    """Claim one task at a time (one slot), completing each, until the queue is empty."""
    order: list[str] = []
    while claimed := api.claim(agent_id, agent, max_tasks=1):
        assert len(claimed) == 1
        task_id = claimed[0]["task_id"]
        order.append(task_id)
        done = api.post(f"/ains/tasks/{task_id}/complete", agent, json={"result_data": {}})
        assert done.status_code == 200, done.get_json()
    return order


def submit_at(api: Api, persona: Persona, offsets: list[tuple[str, float, int]]) -> dict[str, str]:
    """Submit (name, seconds after T0, priority) with the clock pinned; return name → id."""
    ids: dict[str, str] = {}
    with time_machine.travel(T0, tick=False) as traveller:
        for name, offset, priority in offsets:
            traveller.move_to(T0 + timedelta(seconds=offset))
            ids[name] = api.submit(persona, priority=priority)["task_id"]
    return ids


@pytest.fixture
def aging_60(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "aging_seconds_per_level", 60)


def test_it_claims_priority_10_before_5_before_1_and_fifo_within_a_priority(
    api: Api, personas: Personas, aging_60: None
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=1)
    ids = submit_at(
        api,
        personas.client,
        [
            ("low", 0, 1),
            ("mid-a", 1, 5),
            ("high-a", 2, 10),
            ("mid-b", 3, 5),
            ("high-b", 4, 10),
            ("mid-c", 5, 5),
            ("low-b", 6, 1),
        ],
    )
    expected = ["high-a", "high-b", "mid-a", "mid-b", "mid-c", "low", "low-b"]
    assert drain(api, agent_id, agent) == [ids[name] for name in expected]


def test_it_returns_a_multi_claim_in_queue_order(
    api: Api, personas: Personas, aging_60: None
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=10)
    ids = submit_at(api, personas.client, [("one", 0, 1), ("five", 1, 5), ("ten", 2, 10)])
    claimed = api.claim(agent_id, agent, max_tasks=10)
    assert [t["task_id"] for t in claimed] == [ids["ten"], ids["five"], ids["one"]]


def test_it_lets_an_old_low_priority_task_pass_newer_higher_ones_after_the_aging_period(
    api: Api, personas: Personas, aging_60: None
) -> None:
    # Priority 1 at T0 against priority 5 later: 4 levels at 60 s each, so a priority-5 task
    # submitted less than 240 s after it still goes first, one submitted later does not.
    agent_id, agent = api.register_agent(personas.fleet, slots=1)
    ids = submit_at(
        api,
        personas.client,
        [("old-1", 0, 1), ("p5-at-239s", 239, 5), ("p5-at-241s", 241, 5), ("p10-at-600s", 600, 10)],
    )
    expected = ["p5-at-239s", "old-1", "p5-at-241s", "p10-at-600s"]
    assert drain(api, agent_id, agent) == [ids[name] for name in expected]


def test_it_keeps_strict_priority_when_aging_is_switched_off(
    api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "aging_seconds_per_level", 0)
    agent_id, agent = api.register_agent(personas.fleet, slots=1)
    ids = submit_at(api, personas.client, [("old-1", 0, 1), ("new-2", 7 * 86400, 2)])
    assert drain(api, agent_id, agent) == [ids["new-2"], ids["old-1"]]


def test_it_reorders_the_queue_when_a_priority_is_patched(
    api: Api, personas: Personas, aging_60: None
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=1)
    ids = submit_at(api, personas.client, [("a", 0, 5), ("b", 1, 5), ("c", 2, 5)])
    response = api.patch(f"/ains/tasks/{ids['c']}/priority", personas.client, json={"priority": 9})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["priority"] == 9
    response = api.patch(f"/ains/tasks/{ids['a']}/priority", personas.client, json={"priority": 1})
    assert response.status_code == 200, response.get_json()
    assert drain(api, agent_id, agent) == [ids["c"], ids["b"], ids["a"]]
    detail = api.get(f"/ains/tasks/{ids['c']}", personas.client).get_json()
    change = [e for e in detail["events"] if e["data"] and "priority_to" in e["data"]]
    assert change and change[0]["data"] == {"priority_from": 5, "priority_to": 9}
    assert change[0]["actor"] == "client:client-1"


def test_it_claims_a_batch_in_item_order(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=10)
    items = [{"task_type": "report", "capability_required": "report-v1"} for _ in range(5)]
    with time_machine.travel(T0, tick=False):
        response = api.post("/ains/tasks/batch", personas.client, json={"tasks": items})
    assert response.status_code == 201, response.get_json()
    submitted = [
        s["task_id"] for s in sorted(response.get_json()["submitted"], key=lambda s: s["index"])
    ]
    assert [t["task_id"] for t in api.claim(agent_id, agent, max_tasks=10)] == submitted


# An agent with two capabilities and one slot: the better task goes first whichever of its
# capabilities it needs (capabilities are locked in name order, but assigned in queue order).
TWO_CAPABILITIES = ("report-v1", "summarize-v1")


def test_it_claims_across_capabilities_in_queue_order(
    api: Api, personas: Personas, aging_60: None
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, capabilities=TWO_CAPABILITIES, slots=1)
    ids = submit_at(api, personas.client, [("report-1", 0, 1), ("report-5", 1, 5)])
    with time_machine.travel(T0 + timedelta(seconds=2), tick=False):
        for name, priority in (("summary-9", 9), ("summary-3", 3)):
            fields = {"capability_required": "summarize-v1", "priority": priority}
            ids[name] = api.submit(personas.client, **fields)["task_id"]
    expected = ["summary-9", "report-5", "summary-3", "report-1"]
    assert drain(api, agent_id, agent) == [ids[name] for name in expected]


def test_an_agent_registered_while_work_of_two_capabilities_waits_gets_the_better_first(
    api: Api, personas: Personas, aging_60: None
) -> None:
    ids = submit_at(api, personas.client, [("report-2", 0, 2)])
    with time_machine.travel(T0 + timedelta(seconds=1), tick=False):
        ids["summary-8"] = api.submit(
            personas.client, capability_required="summarize-v1", priority=8
        )["task_id"]
    agent_id, agent = api.register_agent(personas.fleet, capabilities=TWO_CAPABILITIES, slots=1)
    detail = api.get(f"/ains/tasks/{ids['summary-8']}", personas.client).get_json()
    assert detail["status"] == "ASSIGNED" and detail["assigned_agent_id"] == agent_id
    # One slot: the other capability's task waits (one agent, counted once across both).
    detail = api.get(f"/ains/tasks/{ids['report-2']}", personas.client).get_json()
    assert detail["status"] == "PENDING" and detail["assigned_agent_id"] is None
    assert drain(api, agent_id, agent) == [ids["summary-8"], ids["report-2"]]
