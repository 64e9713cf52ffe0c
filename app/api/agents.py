"""Agents: register, capabilities, heartbeat, claim, batch completion."""

from __future__ import annotations

from typing import Any

from flask import current_app

from app.api import bp
from app.api.endpoint import endpoint
from app.api.schemas import (
    AgentList,
    AgentListQuery,
    AgentOut,
    AgentRegister,
    AgentRegistered,
    AgentTrustOut,
    CapabilityIn,
    CapabilityOut,
    ClaimOut,
    ClaimRequest,
    CompleteBatch,
    CompleteBatchOut,
    Heartbeat,
    HeartbeatAck,
    LeaderboardOut,
    LeaderboardQuery,
    TrustAdjust,
    TrustAdjustedOut,
    TrustQuery,
)
from app.services import agents as agent_service
from app.services import dispatch, reports, trust
from app.services.principal import Principal, visible_agent

TAG = "Agents"


@endpoint(
    bp,
    "/ains/agents",
    "POST",
    summary="Register an agent",
    tag=TAG,
    body=AgentRegister,
    responses={201: AgentRegistered},
    roles=("agent",),
)
def register_agent(principal: Principal, body: AgentRegister) -> tuple[dict[str, Any], int]:
    agent, api_key = agent_service.register_agent(
        principal,
        display_name=body.display_name,
        public_key=body.public_key,
        capabilities=[c.model_dump() for c in body.capabilities],
        max_concurrent_tasks=body.max_concurrent_tasks,
    )
    return {"agent_id": agent.id, "api_key": api_key, "agent": agent.to_dict()}, 201


@endpoint(
    bp,
    "/ains/agents",
    "GET",
    summary="List agents",
    tag=TAG,
    query=AgentListQuery,
    responses={200: AgentList},
)
def list_agents(principal: Principal, query: AgentListQuery) -> dict[str, Any]:
    agents = agent_service.list_agents(principal, status=query.status)
    return {"agents": [a.to_dict() for a in agents], "total": len(agents)}


@endpoint(
    bp, "/ains/agents/<agent_id>", "GET", summary="Get an agent", tag=TAG, responses={200: AgentOut}
)
def get_agent(principal: Principal, agent_id: str) -> dict[str, Any]:
    return visible_agent(principal, agent_id).to_dict()


@endpoint(
    bp,
    "/ains/agents/<agent_id>/capabilities",
    "POST",
    summary="Add or replace a capability",
    tag=TAG,
    body=CapabilityIn,
    responses={201: CapabilityOut},
    roles=("agent",),
)
def add_capability(
    principal: Principal, agent_id: str, body: CapabilityIn
) -> tuple[dict[str, Any], int]:
    cap = agent_service.upsert_capability(principal, agent_id, body.model_dump())
    return cap.to_dict(), 201


@endpoint(
    bp,
    "/ains/agents/<agent_id>/heartbeat",
    "POST",
    summary="Send a heartbeat",
    tag=TAG,
    body=Heartbeat,
    responses={200: HeartbeatAck},
    roles=("agent",),
)
def heartbeat(principal: Principal, agent_id: str, body: Heartbeat) -> dict[str, Any]:
    return agent_service.record_heartbeat(
        principal,
        agent_id,
        health_status=body.status,
        uptime_ms=body.uptime_ms,
        metrics=body.metrics,
        running_task_ids=body.running_task_ids,
        interval_seconds=current_app.config["HEARTBEAT_INTERVAL_SECONDS"],
    )


@endpoint(
    bp,
    "/ains/agents/<agent_id>/tasks/claim",
    "POST",
    summary="Claim tasks (long poll with wait_seconds)",
    tag=TAG,
    body=ClaimRequest,
    responses={200: ClaimOut},
    roles=("agent",),
)
def claim(principal: Principal, agent_id: str, body: ClaimRequest) -> dict[str, Any]:
    found = dispatch.claim_tasks_waiting(principal, agent_id, body.max_tasks, body.wait_seconds)
    return {"tasks": [t.to_dict() for t in found.tasks], **(found.notices or {})}


@endpoint(
    bp,
    "/ains/agents/<agent_id>/tasks/complete",
    "POST",
    summary="Report the results of several tasks at once (each applied or refused alone)",
    tag=TAG,
    body=CompleteBatch,
    responses={200: CompleteBatchOut},
    roles=("agent",),
)
def complete_batch(principal: Principal, agent_id: str, body: CompleteBatch) -> dict[str, Any]:
    items = [
        {"task_id": item.task_id, "result": item.result, "attempt": item.attempt}
        for item in body.results
    ]
    outcomes = reports.complete_tasks(principal, agent_id, items)
    return {
        "results": [
            {"task_id": o.task_id, "ok": True, "status": o.status}
            if o.error is None
            else {
                "task_id": o.task_id,
                "ok": False,
                "error": {"code": o.error.code, "message": o.error.message},
            }
            for o in outcomes
        ]
    }


@endpoint(
    bp,
    "/ains/agents/<agent_id>/trust",
    "GET",
    summary="An agent's trust score, level, metrics and trust records",
    tag=TAG,
    query=TrustQuery,
    responses={200: AgentTrustOut},
)
def get_trust(principal: Principal, agent_id: str, query: TrustQuery) -> dict[str, Any]:
    return trust.get_trust(principal, agent_id, limit=query.limit)


# A static segment outranks <agent_id> in werkzeug's rule order, whatever the order here.
@endpoint(
    bp,
    "/ains/agents/leaderboard",
    "GET",
    summary="Agents ranked by trust score",
    tag=TAG,
    query=LeaderboardQuery,
    responses={200: LeaderboardOut},
)
def leaderboard(principal: Principal, query: LeaderboardQuery) -> dict[str, Any]:
    return {"leaderboard": trust.leaderboard(principal, limit=query.limit)}


@endpoint(
    bp,
    "/ains/agents/<agent_id>/trust/adjust",
    "POST",
    summary="Adjust an agent's trust score by hand (admin)",
    tag=TAG,
    body=TrustAdjust,
    responses={201: TrustAdjustedOut},
    roles=("admin",),
)
def adjust_trust(
    principal: Principal, agent_id: str, body: TrustAdjust
) -> tuple[dict[str, Any], int]:
    record = trust.adjust_trust(principal, agent_id, body.delta, body.reason)
    agent = visible_agent(principal, agent_id)
    return {"record": record.to_dict(), "trust": trust.trust_summary(agent)}, 201
