"""Routing: strategies, candidates, recorded decisions, reassignment, trust rules."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update

from app.extensions import db
from app.lib.clock import utcnow
from app.models import Agent, Task, TaskStatus
from app.services import lifecycle, routing
from app.services.settings import settings
from tests.api.support import assert_error
from tests.conftest import Api, Persona, Personas

# Chi-square critical value for 3 degrees of freedom at p = 0.01.
CHI2_3DF_P01 = 11.345


@pytest.fixture
def seeded() -> Iterator[None]:
    """Reproducible draws (ROUTING_RANDOM_SEED), restored to random afterwards."""
    routing.configure_rng(20261129)
    yield
    routing.configure_rng(None)


def agents(api: Api, fleet: Persona, n: int, *, slots: int = 1, cap: str = "report-v1") -> list:
    return [
        api.register_agent(fleet, capabilities=(cap,), slots=slots, name=f"agent-{i}")
        for i in range(n)
    ]


def submit_batch(api: Api, client: Persona, n: int, **fields: Any) -> list[dict[str, Any]]:
    body = {
        "tasks": [{"task_type": "report", "capability_required": "report-v1", **fields}] * n,
    }
    response = api.post("/ains/tasks/batch", client, json=body)
    assert response.status_code in (200, 201), response.get_json()
    return response.get_json()["submitted"]


def assigned_counts(app: Flask) -> Counter[str]:
    with app.app_context():
        rows = db.session.scalars(
            db.select(Task.assigned_agent_id).where(Task.status == TaskStatus.ASSIGNED)
        )
        return Counter(rows)


def release_reservations(app: Flask) -> None:
    """Cleanup between rounds: drop every reservation so all slots are free again."""
    with app.app_context():
        db.session.execute(
            update(Task)
            .where(Task.status == TaskStatus.ASSIGNED)
            .values(status=TaskStatus.CANCELLED, completed_at=utcnow())
        )
        db.session.commit()


def set_trust(api: Api, admin: Persona, agent_id: str, score: float) -> None:
    if score == 0.5:  # where every agent starts
        return
    response = api.post(
        f"/ains/agents/{agent_id}/trust/adjust",
        admin,
        json={"delta": round(score - 0.5, 4), "reason": "test setup"},
    )
    assert response.status_code == 201, response.get_json()


def routing_events(api: Api, client: Persona, task_id: str) -> list[dict[str, Any]]:
    events = api.get(f"/ains/tasks/{task_id}", client).get_json()["events"]
    return [e for e in events if e["to_status"] == "ASSIGNED"]


def test_round_robin_gives_four_equal_idle_agents_a_hundred_tasks_each(
    api: Api, personas: Personas, app: Flask
) -> None:
    fleet = agents(api, personas.fleet, 4, slots=100)
    for _ in range(4):
        tasks = submit_batch(api, personas.client, 100)
        assert all(t["status"] == "ASSIGNED" for t in tasks)
    counts = assigned_counts(app)
    assert set(counts) == {agent_id for agent_id, _ in fleet}
    assert all(98 <= n <= 102 for n in counts.values()), counts
    # Each agent claims exactly its own share, nothing of the others'.
    agent_id, key = fleet[0]
    claimed = api.claim(agent_id, key, max_tasks=100)
    assert len(claimed) == counts[agent_id]
    assert {t["assigned_agent_id"] for t in claimed} == {agent_id}


def test_least_loaded_never_picks_a_busier_agent_when_a_less_busy_one_has_a_slot(
    api: Api, personas: Personas, app: Flask
) -> None:
    fleet = dict(agents(api, personas.fleet, 3, slots=4))
    ids = sorted(fleet)
    # Uneven loads: the first agent runs 3 tasks, the second 1, the third none.
    with app.app_context():
        db.session.execute(update(Agent).where(Agent.id == ids[0]).values(active_tasks=3))
        db.session.execute(update(Agent).where(Agent.id == ids[1]).values(active_tasks=1))
        db.session.commit()

    def loads() -> dict[str, int]:
        with app.app_context():
            held = Counter(
                db.session.scalars(
                    db.select(Task.assigned_agent_id).where(Task.status == TaskStatus.ASSIGNED)
                )
            )
            return {
                a.id: a.active_tasks + held[a.id]
                for a in db.session.scalars(db.select(Agent).where(Agent.id.in_(ids)))
            }

    for _ in range(8):
        before = loads()
        task = api.submit(personas.client, routing_strategy="least_loaded")
        free = {a: n for a, n in before.items() if n < 4}
        if not free:
            assert task["status"] == "PENDING"
            continue
        assert task["status"] == "ASSIGNED"
        assert before[task["assigned_agent_id"]] == min(free.values()), (before, task)
    # 12 slots, 4 held from the start: 8 submits fill every agent to the brim.
    assert loads() == dict.fromkeys(ids, 4)


def test_trust_weighted_shares_follow_trust(
    api: Api, personas: Personas, app: Flask, seeded: None
) -> None:
    fleet = agents(api, personas.fleet, 4, slots=100)
    trust = dict(zip((a for a, _ in fleet), (0.95, 0.8, 0.65, 0.5), strict=True))
    for agent_id, score in trust.items():
        set_trust(api, personas.admin, agent_id, score)
    totals: Counter[str] = Counter()
    for _ in range(20):  # 2,000 assignments, 100 at a time (no agent ever runs out of slots)
        submit_batch(api, personas.client, 100, routing_strategy="trust_weighted")
        totals += assigned_counts(app)
        release_reservations(app)
    assert sum(totals.values()) == 2000
    weight = sum(trust.values())
    chi2 = sum((totals[a] - 2000 * t / weight) ** 2 / (2000 * t / weight) for a, t in trust.items())
    assert chi2 < CHI2_3DF_P01, (chi2, totals)
    # And the order follows trust.
    ranked = [a for a, _ in totals.most_common()]
    assert ranked == sorted(trust, key=trust.get, reverse=True)


def test_fastest_response_prefers_the_fastest_and_still_probes_new_agents(
    api: Api, personas: Personas, app: Flask, seeded: None
) -> None:
    fleet = dict(agents(api, personas.fleet, 3, slots=100))
    fast, slow, new = sorted(fleet)
    with app.app_context():  # measured history (completion times need real waiting otherwise)
        db.session.execute(
            update(Agent)
            .where(Agent.id == fast)
            .values(avg_completion_time_seconds=1.5, total_tasks_completed=20)
        )
        db.session.execute(
            update(Agent)
            .where(Agent.id == slow)
            .values(avg_completion_time_seconds=9.0, total_tasks_completed=20)
        )
        db.session.commit()
    totals: Counter[str] = Counter()
    for _ in range(4):
        submit_batch(api, personas.client, 50, routing_strategy="fastest_response")
        totals += assigned_counts(app)
        release_reservations(app)
    assert totals[slow] == 0
    # ROUTING_PROBE_PERCENT (10 %) of 200: the new agent is tried, the fast one gets the rest.
    assert 5 <= totals[new] <= 40, totals
    assert totals[fast] == 200 - totals[new]
    probe = next(
        e
        for t in api.get("/ains/tasks?limit=200", personas.client).get_json()["tasks"]
        for e in routing_events(api, personas.client, t["task_id"])
        if e["data"]["routing"]["winner"] == new
    )
    assert probe["data"]["routing"]["probe"] is True


def test_every_assignment_records_the_decision_in_the_task_events(
    api: Api, personas: Personas
) -> None:
    fleet = dict(agents(api, personas.fleet, 3, slots=2))
    task = api.submit(personas.client, routing_strategy="least_loaded")
    [event] = routing_events(api, personas.client, task["task_id"])
    decision = event["data"]["routing"]
    assert event["actor"] == "system:router" and event["from_status"] == "PENDING"
    assert decision["strategy"] == "least_loaded"
    assert decision["winner"] == task["assigned_agent_id"]
    assert decision["candidate_count"] == 3
    assert {c["agent_id"] for c in decision["candidates"]} == set(fleet)
    assert decision["candidates"][0]["agent_id"] == decision["winner"]
    assert all({"score", "detail", "load", "trust_score"} <= set(c) for c in decision["candidates"])
    # The decision as it was made: the winner held nothing and was not excluded.
    assert decision["candidates"][0]["load"] == 0
    assert decision["excluded"] == [] and decision["excluded_count"] == 0


def test_only_available_agents_with_a_fresh_heartbeat_and_a_free_slot_are_candidates(
    api: Api, personas: Personas, app: Flask
) -> None:
    (busy, busy_key), (stale, _), (full, full_key), (ok, _) = agents(api, personas.fleet, 4)
    beat = api.post(
        f"/ains/agents/{busy}/heartbeat", busy_key, json={"status": "DEGRADED", "uptime_ms": 1}
    )
    assert beat.status_code == 200 and beat.get_json()["agent_status"] == "BUSY"
    with app.app_context():
        db.session.execute(
            update(Agent)
            .where(Agent.id == stale)
            .values(last_heartbeat=utcnow() - timedelta(seconds=settings.lease_seconds + 5))
        )
        db.session.execute(update(Agent).where(Agent.id == full).values(active_tasks=1))
        db.session.commit()
    preview = api.post(
        "/ains/routing/test", personas.client, json={"capability_required": "report-v1"}
    ).get_json()
    assert preview["winner"]["agent_id"] == ok
    reasons = {e["agent_id"]: e["reason"] for e in preview["excluded"]}
    assert reasons == {
        busy: "status BUSY",
        stale: "no recent heartbeat",
        full: "no free slot (1 of 1 held)",
    }
    first = api.submit(personas.client)
    assert first["assigned_agent_id"] == ok
    # Nobody else can take the next one: it waits unassigned...
    second = api.submit(personas.client)
    assert second["status"] == "PENDING" and second["assigned_agent_id"] is None
    # ...until a slot frees: the full agent's claim routes the waiting work to it.
    with app.app_context():
        db.session.execute(update(Agent).where(Agent.id == full).values(active_tasks=0))
        db.session.commit()
    claimed = api.claim(full, full_key)
    assert [t["task_id"] for t in claimed] == [second["task_id"]]


def test_a_task_its_agent_does_not_claim_in_time_is_routed_to_another(
    api: Api, personas: Personas, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "routing_claim_timeout_seconds", 5)
    (a, _), (b, b_key) = agents(api, personas.fleet, 2)
    task = api.submit(personas.client)
    first = task["assigned_agent_id"]
    other, other_key = (b, b_key) if first == a else (a, None)
    with app.app_context():
        assert lifecycle.sweep(utcnow() + timedelta(seconds=2))["reassigned"] == 0
        assert lifecycle.sweep(utcnow() + timedelta(seconds=6))["reassigned"] == 1
    detail = api.get(f"/ains/tasks/{task['task_id']}", personas.client).get_json()
    assert detail["status"] == "ASSIGNED" and detail["assigned_agent_id"] == other
    back = [e for e in detail["events"] if e["from_status"] == "ASSIGNED"]
    assert back[0]["to_status"] == "PENDING"
    assert back[0]["reason"] == "not claimed within 5s: routed again"
    assert back[0]["data"]["agent_id"] == first
    if other_key is not None:
        assert [t["task_id"] for t in api.claim(other, other_key)] == [task["task_id"]]


def test_a_retry_goes_to_an_agent_that_has_not_failed_the_task(
    api: Api, personas: Personas
) -> None:
    fleet = dict(agents(api, personas.fleet, 2))
    task = api.submit(personas.client, retry_policy="fixed")
    first = task["assigned_agent_id"]
    assert [t["task_id"] for t in api.claim(first, fleet[first])] == [task["task_id"]]
    failed = api.post(
        f"/ains/tasks/{task['task_id']}/fail",
        fleet[first],
        json={"error_message": "boom", "retryable": True, "retry_after_seconds": 0},
    )
    assert failed.status_code == 200, failed.get_json()
    detail = api.get(f"/ains/tasks/{task['task_id']}", personas.client).get_json()
    [other] = set(fleet) - {first}
    assert detail["status"] == "ASSIGNED" and detail["assigned_agent_id"] == other


def test_very_low_trust_is_a_last_resort_and_low_trust_takes_one_task_at_a_time(
    api: Api, personas: Personas
) -> None:
    (shady, _), (probation, _) = agents(api, personas.fleet, 2, slots=3)
    set_trust(api, personas.admin, shady, 0.1)
    set_trust(api, personas.admin, probation, 0.4)
    first = api.submit(personas.client)
    assert first["assigned_agent_id"] == probation
    # The low-trust agent holds one task: the very-low one is now the only candidate.
    second = api.submit(personas.client)
    assert second["assigned_agent_id"] == shady
    preview = api.post(
        "/ains/routing/test", personas.client, json={"capability_required": "report-v1"}
    ).get_json()
    reasons = {e["agent_id"]: e["reason"] for e in preview["excluded"]}
    assert reasons[probation] == "probation (low trust): one task at a time"


def test_the_routing_test_scores_candidates_without_assigning_anything(
    api: Api, personas: Personas, app: Flask
) -> None:
    fleet = dict(agents(api, personas.fleet, 3, slots=2))
    body = {"capability_required": "report-v1", "strategy": "round_robin"}
    first = api.post("/ains/routing/test", personas.client, json=body).get_json()
    again = api.post("/ains/routing/test", personas.admin, json=body).get_json()
    assert first["winner"] == again["winner"]  # nothing moved the turn on
    assert first["strategy"] == "round_robin"
    assert {c["agent_id"] for c in first["candidates"]} == set(fleet)
    assert first["candidates"][0] == first["winner"]
    assert assigned_counts(app) == Counter()
    task = api.submit(personas.client)
    assert task["assigned_agent_id"] == first["winner"]["agent_id"]
    nobody = api.post(
        "/ains/routing/test", personas.client, json={"capability_required": "nobody-v1"}
    ).get_json()
    assert nobody["winner"] is None and nobody["candidates"] == []


@pytest.mark.parametrize(
    ("persona", "body", "status", "field"),
    [
        ("client", {"capability_required": "report-v1", "strategy": "fastest"}, 422, "strategy"),
        ("client", {"capability_required": ""}, 422, "capability_required"),
        ("client", {"strategy": "round_robin"}, 422, "capability_required"),
        ("fleet", {"capability_required": "report-v1"}, 403, None),
    ],
)
def test_the_routing_test_refuses_bad_input(
    api: Api, personas: Personas, persona: str, body: dict[str, Any], status: int, field: str
) -> None:
    response = api.post("/ains/routing/test", getattr(personas, persona), json=body)
    assert_error(response, status, field=field)


def test_it_lists_the_strategies_with_the_default(api: Api, personas: Personas) -> None:
    body = api.get("/ains/routing/strategies", personas.client).get_json()
    names = [s["name"] for s in body["strategies"]]
    assert names == ["round_robin", "least_loaded", "trust_weighted", "fastest_response"]
    assert body["default_strategy"] == "round_robin"
    assert [s["name"] for s in body["strategies"] if s["default"]] == ["round_robin"]
    assert all(len(s["description"]) > 20 for s in body["strategies"])
    assert api.get("/ains/routing/strategies").status_code == 401


def test_a_capability_default_strategy_applies_to_tasks_that_name_none(
    api: Api, personas: Personas
) -> None:
    agents(api, personas.fleet, 2, slots=5)
    path = "/ains/routing/capabilities/report-v1"
    refused = api.call("PUT", path, personas.client, json={"default_strategy": "least_loaded"})
    assert_error(refused, 403)
    bad = api.call("PUT", path, personas.admin, json={"default_strategy": "cheapest"})
    assert_error(bad, 422, field="default_strategy")
    done = api.call("PUT", path, personas.admin, json={"default_strategy": "least_loaded"})
    assert done.status_code == 200, done.get_json()
    assert done.get_json() == {
        "capability": "report-v1",
        "default_strategy": "least_loaded",
        "configured": True,
        "agents": 2,
    }
    plain = api.submit(personas.client)
    own = api.submit(personas.client, routing_strategy="round_robin")
    assert routing_events(api, personas.client, plain["task_id"])[0]["data"]["routing"][
        "strategy"
    ] == ("least_loaded")
    assert routing_events(api, personas.client, own["task_id"])[0]["data"]["routing"][
        "strategy"
    ] == ("round_robin")
    listed = api.get("/ains/routing/capabilities", personas.client).get_json()["capabilities"]
    assert listed == [done.get_json()]
    cleared = api.call("PUT", path, personas.admin, json={"default_strategy": None})
    assert cleared.get_json()["default_strategy"] == "round_robin"
    assert cleared.get_json()["configured"] is False
    # A capability no agent offers yet can be configured and cleared too.
    other = "/ains/routing/capabilities/nobody-v1"
    assert (
        api.call(
            "PUT", other, personas.admin, json={"default_strategy": "least_loaded"}
        ).status_code
        == 200
    )
    gone = api.call("PUT", other, personas.admin, json={"default_strategy": None})
    assert gone.status_code == 200 and gone.get_json() == {
        "capability": "nobody-v1",
        "default_strategy": "round_robin",
        "configured": False,
        "agents": 0,
    }


def test_the_sweep_routes_the_backlog_of_every_capability_an_agent_has(
    api: Api, personas: Personas, app: Flask
) -> None:
    agent_id, _ = api.register_agent(
        personas.fleet, capabilities=("report-v1", "summarize-v1"), slots=2
    )
    with app.app_context():  # the agent is full: what comes now waits unassigned
        db.session.execute(update(Agent).where(Agent.id == agent_id).values(active_tasks=2))
        db.session.commit()
    report = api.submit(personas.client)
    summary = api.submit(personas.client, capability_required="summarize-v1")
    orphan = api.submit(personas.client, capability_required="translate-v1")  # no agent has it
    assert {t["status"] for t in (report, summary, orphan)} == {"PENDING"}
    with app.app_context():
        db.session.execute(update(Agent).where(Agent.id == agent_id).values(active_tasks=0))
        db.session.commit()
        assert sorted(routing.backlog_capabilities(utcnow())) == ["report-v1", "summarize-v1"]
        assert lifecycle.sweep()["routed"] == 2
        assert routing.backlog_capabilities(utcnow()) == []
    assert assigned_counts(app) == Counter({agent_id: 2})
    left = api.get(f"/ains/tasks/{orphan['task_id']}", personas.client).get_json()
    assert left["status"] == "PENDING" and left["assigned_agent_id"] is None


def test_an_agent_registered_while_work_waits_gets_it_from_any_of_its_capabilities(
    api: Api, personas: Personas, app: Flask
) -> None:
    # Only the second of its capabilities (in name order) has work waiting: the look for
    # a backlog takes the least queue key over both, not the first capability's alone.
    waiting = api.submit(personas.client, capability_required="summarize-v1", priority=9)
    assert waiting["status"] == "PENDING"
    with app.app_context():
        now = utcnow()
        assert routing.best_waiting(["report-v1"], now) is None
        assert routing.best_waiting(["report-v1", "summarize-v1"], now) is not None
    agent_id, key = api.register_agent(
        personas.fleet, capabilities=("report-v1", "summarize-v1"), slots=1
    )
    assert [t["task_id"] for t in api.claim(agent_id, key)] == [waiting["task_id"]]
