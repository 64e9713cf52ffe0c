"""Agent registration, capabilities and heartbeats."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from app.extensions import db
from app.lib.clock import isoformat, utcnow
from app.lib.tokens import new_id
from app.models import HEALTH_TO_STATUS, Agent, AgentStatus, Capability, Role, WebhookEvents
from app.services import metrics as ains_metrics
from app.services import routing, webhooks
from app.services.attempts import renew_leases, stop_notices
from app.services.auth import create_api_key
from app.services.errors import Conflict, NotPermitted
from app.services.principal import Principal, require_agent


def register_agent(
    principal: Principal,
    *,
    display_name: str,
    public_key: str,
    capabilities: list[dict[str, Any]],
    max_concurrent_tasks: int,
    now: datetime | None = None,
) -> tuple[Agent, str]:
    """Register an agent; return it and a new API key bound to it (shown once)."""
    principal.require_role(Role.AGENT)
    if principal.agent_id is not None:
        raise NotPermitted("a key bound to one agent cannot register other agents")
    now = now or utcnow()
    if db.session.scalars(db.select(Agent.id).where(Agent.public_key == public_key)).first():
        raise Conflict("an agent with this public_key is already registered")
    agent = Agent(
        id=new_id("agent"),
        display_name=display_name,
        public_key=public_key,
        status=AgentStatus.AVAILABLE,
        max_concurrent_tasks=max_concurrent_tasks,
        registered_by_key_id=principal.key_id,
        last_heartbeat=now,
        metrics={},
        created_at=now,
        updated_at=now,
    )
    for cap in capabilities:
        agent.capabilities.append(Capability(id=new_id("cap"), created_at=now, **cap))
    db.session.add(agent)
    _, raw_key = create_api_key(
        name=f"agent {display_name}", role=Role.AGENT, agent_id=agent.id, commit=False
    )
    routing.route_waiting([c.name for c in agent.capabilities], now)
    ains_metrics.count("ains_agent_registrations_total")
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict("an agent with this public_key is already registered") from None
    return agent, raw_key


def visible_agents(principal: Principal, status: str | None = None) -> list[ColumnElement[bool]]:
    """The conditions that keep a query to the agents a principal may see."""
    conditions: list[ColumnElement[bool]] = []
    if principal.role == Role.AGENT:
        if principal.agent_id is not None:
            conditions.append(Agent.id == principal.agent_id)
        else:
            conditions.append(Agent.registered_by_key_id == principal.key_id)
    if status:
        conditions.append(Agent.status == status)
    return conditions


def list_agents(
    principal: Principal,
    *,
    status: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[Agent]:
    """Agents visible to the principal, newest first, their capabilities loaded with them
    (one more query, not one per agent); a page of them when ``limit`` is given."""
    query = (
        db.select(Agent)
        .where(*visible_agents(principal, status))
        .options(selectinload(Agent.capabilities))
        .order_by(Agent.created_at.desc(), Agent.id)
        .offset(offset)
        .limit(limit)
    )
    return list(db.session.scalars(query))


def count_agents(principal: Principal, *, status: str | None = None) -> int:
    return db.session.scalar(
        db.select(func.count()).select_from(Agent).where(*visible_agents(principal, status))
    )


def upsert_capability(
    principal: Principal, agent_id: str, fields: dict[str, Any], now: datetime | None = None
) -> Capability:
    """Add a capability to an agent, replacing one of the same name."""
    agent = require_agent(principal, agent_id)
    now = now or utcnow()
    cap = next((c for c in agent.capabilities if c.name == fields["name"]), None)
    if cap is None:
        cap = Capability(id=new_id("cap"), created_at=now, **fields)
        agent.capabilities.append(cap)
    else:
        for name, value in fields.items():
            setattr(cap, name, value)
    agent.updated_at = now
    routing.route_waiting([cap.name], now)
    db.session.commit()
    return cap


def record_heartbeat(
    principal: Principal,
    agent_id: str,
    *,
    health_status: str,
    uptime_ms: int,
    metrics: dict[str, Any],
    interval_seconds: int,
    running_task_ids: list[str] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record a heartbeat (seed 002 mapping), renew the agent's leases, and tell it which
    tasks to stop."""
    agent = require_agent(principal, agent_id)
    now = now or utcnow()
    # Task rows before the agent row, the order every writer follows (no deadlocks).
    renew_leases(agent.id, now, task_ids=running_task_ids)
    agent.last_heartbeat = now
    agent.health_status = health_status
    was = agent.status
    agent.status = HEALTH_TO_STATUS[health_status]
    if agent.status == AgentStatus.INACTIVE and was != AgentStatus.INACTIVE:
        webhooks.emit(
            WebhookEvents.AGENT_OFFLINE,
            at=now,
            agent_id=agent.id,
            data={"reason": "the agent reported OFFLINE", "last_heartbeat": isoformat(now)},
        )
    agent.uptime_ms = uptime_ms
    agent.metrics = metrics
    agent.updated_at = now
    notices = stop_notices(agent.id, now)
    # Work waiting unassigned is routed (the names are read only then).
    waiting = agent.status == AgentStatus.AVAILABLE and (
        routing.best_waiting_for(agent.id, now) is not None
    )
    if waiting:
        routing.route(agent.capability_names, now)
    ains_metrics.count("ains_agent_heartbeats_total")
    # Built before the commit, which expires the agent: reading it after would read it back.
    answer = {
        "acknowledged": True,
        "next_heartbeat_in": interval_seconds,
        "agent_health_status": health_status,
        "agent_status": agent.status,
        "last_heartbeat": isoformat(now),
        **notices,
    }
    db.session.commit()
    return answer
