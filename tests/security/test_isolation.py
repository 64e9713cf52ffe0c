"""Cross-client and cross-agent access on every route: 404 for others' ids, 403 for roles.

Another client's task, chain, template, schedule, webhook or delivery id answers exactly
as an id that does not exist (so ids do not leak), another fleet's agent and its tasks
likewise, and a route whose role the key lacks is a 403 before anything is looked up.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.api.endpoint import OPERATIONS, Operation
from tests.conftest import Persona
from tests.security.conftest import Http, World
from tests.security.operations import (
    PARAM,
    assert_spec_error,
    authenticated,
    has_params,
    op_id,
    path_of,
)

# Reviewed: every role may read any agent's profile and trust (clients choose and route to
# the shared pool; SPEC lists GET /ains/agents/{id} without an owner). Agent keys see only
# the agents they act for.
SHARED_READS = {
    ("get", "/ains/agents/<agent_id>", "client"),
    ("get", "/ains/agents/<agent_id>/trust", "client"),
}

# A body each route accepts, so the refusal comes from the id check, not from validation.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "CapabilityIn": {"name": "stolen-v1"},
    "Heartbeat": {"status": "ACTIVE"},
    "ClaimRequest": {"max_tasks": 1},
    "TrustAdjust": {"delta": 0.5, "reason": "bribe"},
    "ProgressReport": {"progress": 50},
    "FailReport": {"error_message": "sabotage", "retryable": False},
    "PriorityUpdate": {"priority": 10},
    "ScheduleUpdate": {"description": "hijacked"},
    "TemplateUpdate": {"description": "hijacked"},
    "AgentWebhookCreate": {"url": "http://127.0.0.1:9/evil"},
    "WebhookUpdate": {"description": "hijacked"},
    "CapabilityRoutingUpdate": {"default_strategy": "least_loaded"},
    "CancelRequest": {"reason": "sabotage"},
    "CompleteBatch": {"results": [{"task_id": "t_stolen", "result": {"stolen": True}}]},
}

ATTACKERS = ("other_client", "other_fleet", "other_agent")


def attacker(world: World, name: str) -> Persona:
    return getattr(world.keys, name)


def body_for(op: Operation) -> dict[str, Any] | None:
    if op.body is None:
        return None
    return VALID_BODIES.get(op.body.__name__, {})


def expected_status(op: Operation, persona: Persona) -> int:
    if op.roles and persona.role not in op.roles:
        return 403
    if (op.method, op.rule, persona.role) in SHARED_READS:
        return 200
    return 404


def unknown_path(op: Operation) -> str:
    return PARAM.sub("does-not-exist", op.rule)


def snapshot(http: Http, world: World) -> dict[str, Any]:
    """What the owners read of their resources, to prove no attack changed any."""
    keys = world.keys
    owner_reads = {
        "task": (f"/ains/tasks/{world.task_id}", keys.client),
        "pending": (f"/ains/tasks/{world.pending_task_id}", keys.client),
        "chain": (f"/ains/task-chains/{world.chain_id}", keys.client),
        "template": (f"/ains/task-templates/{world.template_id}", keys.client),
        "schedule": (f"/aitp/tasks/schedule/{world.schedule_id}", keys.client),
        "webhook": (f"/ains/webhooks/{world.webhook_id}", keys.client),
        "agent_webhook": (f"/ains/webhooks/{world.agent_webhook_id}", keys.agent),
        "agent": (f"/ains/agents/{world.agent_id}", keys.agent),
        "trust": (f"/ains/agents/{world.agent_id}/trust", keys.agent),
        "routing": ("/ains/routing/capabilities", keys.admin),
    }
    return {name: http.ok("GET", path, persona) for name, (path, persona) in owner_reads.items()}


@pytest.fixture(scope="module")
def before(http: Http, world: World) -> dict[str, Any]:
    return snapshot(http, world)


ID_ROUTES = [op for op in authenticated() if has_params(op)]


@pytest.mark.parametrize("op", ID_ROUTES, ids=op_id)
def test_it_hides_others_resources_on_every_route_with_an_id(
    http: Http, world: World, before: dict[str, Any], op: Operation
) -> None:
    for name in ATTACKERS:
        persona = attacker(world, name)
        expected = expected_status(op, persona)
        for agent_side in (False, True):
            path = path_of(op, world, agent_side=agent_side)
            response = http.call(op.method, path, persona, json=body_for(op))
            where = f"{name} {op.method.upper()} {path}"
            if expected == 200:
                assert response.status_code == 200, (where, response.text[:300])
                continue
            error = assert_spec_error(response, expected)
            if expected == 404:
                # Exactly what an id that does not exist gets: nothing tells them apart.
                unknown = http.call(op.method, unknown_path(op), persona, json=body_for(op))
                assert (unknown.status_code, unknown.json()["error"]["code"]) == (
                    404,
                    error["code"],
                ), where
    if op.method != "get":
        assert snapshot(http, world) == before, f"{op_id(op)} changed another's resource"


LIST_ROUTES = [
    op
    for op in authenticated()
    if op.method == "get" and not has_params(op) and op.roles != ("admin",)
]


@pytest.mark.parametrize("op", LIST_ROUTES, ids=op_id)
def test_it_lists_nothing_of_others(http: Http, world: World, op: Operation) -> None:
    """No list shows another client's ids, even when asked by the owner's client_id."""
    for name in ATTACKERS:
        persona = attacker(world, name)
        private = set(world.client_owned)
        if persona.role == "agent":
            private |= {world.agent_id, world.agent_webhook_id, world.agent_delivery_id}
        for params in ({}, {"client_id": "client-1"}, {"agent_id": world.agent_id}):
            response = http.call("GET", op.rule, persona, params=params)
            assert response.status_code in (200, 403, 422), (name, op.rule, response.text[:300])
            leaked = {i for i in private if i in response.text}
            assert not leaked, f"{name} GET {op.rule}?{params} shows {leaked}"


def test_it_refuses_every_admin_route_to_clients_and_agents(http: Http, world: World) -> None:
    admin_only = [op for op in OPERATIONS if op.roles == ("admin",)]
    assert admin_only, "no admin-only route found: the registry changed?"
    for op in admin_only:
        for name in ("client", "other_client", "fleet", "agent"):
            persona = getattr(world.keys, name)
            response = http.call(op.method, path_of(op, world), persona, json=body_for(op))
            assert_spec_error(response, 403, "forbidden")


REFERENCES = [
    ("depends-on", "POST", "/ains/tasks", {"task_type": "r", "capability_required": "x-v1"}),
    ("from-template", "POST", "/ains/tasks/from-template", {}),
    ("chain-template-step", "POST", "/ains/task-chains", {"name": "c"}),
    ("schedule-template", "POST", "/aitp/tasks/schedule", {"cron_expression": "0 3 * * *"}),
    ("submit-for-them", "POST", "/ains/tasks", {"task_type": "r", "capability_required": "x-v1"}),
    ("webhook-for-them", "POST", "/ains/webhooks", {"url": "http://127.0.0.1:9/x"}),
    ("template-for-them", "POST", "/ains/task-templates", {"name": "t", "task_type": "r"}),
]


def reference_body(case: str, world: World, base: dict[str, Any]) -> dict[str, Any]:
    theirs = {
        "depends-on": {"depends_on": [world.pending_task_id]},
        "from-template": {"template_id": world.template_id},
        "chain-template-step": {"steps": [{"template_id": world.template_id}]},
        "schedule-template": {"template_id": world.template_id},
        "submit-for-them": {"client_id": "client-1"},
        "webhook-for-them": {"client_id": "client-1"},
        "template-for-them": {"client_id": "client-1", "capability_required": "x-v1"},
    }
    return {**base, **theirs[case]}


@pytest.mark.parametrize(
    ("case", "method", "path", "base"), REFERENCES, ids=[r[0] for r in REFERENCES]
)
def test_it_refuses_others_ids_inside_bodies(
    http: Http, world: World, case: str, method: str, path: str, base: dict[str, Any]
) -> None:
    response = http.call(
        method, path, world.keys.other_client, json=reference_body(case, world, base)
    )
    assert response.status_code in (403, 404, 422), (case, response.status_code, response.text)
    assert_spec_error(response, response.status_code)


def test_it_requeues_and_discards_only_ones_own_dead_letters(http: Http, world: World) -> None:
    for action in ("requeue", "cancel"):
        response = http.call(
            "POST",
            f"/ains/dead-letter/{action}",
            world.keys.other_client,
            json={"task_ids": [world.task_id, world.pending_task_id]},
        )
        assert response.status_code == 200, response.text
        outcome = response.json()
        assert (outcome["count"], outcome["task_ids"]) == (0, []), outcome
        # Skipped as unknown ids, in the same words as ids that never existed.
        assert {s["reason"] for s in outcome["skipped"]} == {"not found"}, outcome
    task = http.ok("GET", f"/ains/tasks/{world.task_id}", world.keys.client)
    assert task["status"] == "ACTIVE"
