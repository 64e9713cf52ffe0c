"""The API's routes, from the endpoint registry, with real ids in their paths.

Every attack iterates ``OPERATIONS``, so a route added later is attacked too; a path
parameter this module cannot fill fails the suite with its name, rather than going
unattacked.
"""

from __future__ import annotations

import re
from typing import Any

from app.api.endpoint import OPERATIONS, Operation
from tests.security.conftest import World

PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")

# Routes anyone may call without a key (reviewed: /health says only ok/degraded;
# /health/ready also names its failing checks: revisions, queue names, never a secret).
PUBLIC = {("get", "/health"), ("get", "/health/ready")}


def authenticated() -> list[Operation]:
    ops = [op for op in OPERATIONS if op.auth]
    unreviewed = {(op.method, op.rule) for op in OPERATIONS if not op.auth} - PUBLIC
    assert not unreviewed, f"routes without auth that nobody reviewed: {sorted(unreviewed)}"
    return ops


def op_id(op: Operation) -> str:
    return f"{op.method.upper()} {op.rule}"


def victim_ids(world: World, param: str, *, agent_side: bool = False) -> str:
    """The id of the victim's resource a path parameter names.

    ``agent_side`` picks the agent-owned webhook and delivery instead of the client's.
    """
    values: dict[str, str] = {
        "agent_id": world.agent_id,
        "task_id": world.task_id,
        "chain_id": world.chain_id,
        "template_id": world.template_id,
        "schedule_id": world.schedule_id,
        "webhook_id": world.agent_webhook_id if agent_side else world.webhook_id,
        "delivery_id": world.agent_delivery_id if agent_side else world.delivery_id,
        "capability": world.capability,
        # Admin-only routes refuse other roles before looking anything up: any id will do.
        "key_id": "key_unknown",
    }
    assert param in values, f"tests/security/operations.py cannot fill <{param}>: add it"
    return values[param]


def path_of(op: Operation, world: World, *, agent_side: bool = False) -> str:
    return PARAM.sub(lambda m: victim_ids(world, m.group(1), agent_side=agent_side), op.rule)


def has_params(op: Operation) -> bool:
    return bool(PARAM.search(op.rule))


def reads_shared(op: Operation) -> bool:
    """Whether the route is open to every role (no role list) and takes no id."""
    return not op.roles and not has_params(op)


def assert_spec_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The SPEC's error shape: {"error": {"code", "message", "details"}} with ``status``."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: expected {status}, "
        f"got {response.status_code}: {response.text[:300]}"
    )
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["details"], list), body
    if code is not None:
        assert error["code"] == code, body
    return error
