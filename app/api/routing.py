"""Routing: the strategies, a dry run, and each capability's default strategy."""

from __future__ import annotations

from typing import Any

from app.api import bp
from app.api.endpoint import endpoint
from app.api.schemas import (
    CapabilityRoutingList,
    CapabilityRoutingOut,
    CapabilityRoutingUpdate,
    RoutingTest,
    RoutingTestOut,
    StrategiesOut,
)
from app.services import routing
from app.services.principal import Principal
from app.services.settings import settings

TAG = "Routing"


@endpoint(
    bp,
    "/ains/routing/strategies",
    "GET",
    summary="List the routing strategies",
    tag=TAG,
    responses={200: StrategiesOut},
)
def list_strategies(principal: Principal) -> dict[str, Any]:
    return {
        "strategies": routing.strategies(),
        "default_strategy": settings.routing_default_strategy,
    }


@endpoint(
    bp,
    "/ains/routing/test",
    "POST",
    summary="Which agent would get a task now, with the scored candidates (assigns nothing)",
    tag=TAG,
    body=RoutingTest,
    responses={200: RoutingTestOut},
    roles=("client",),
)
def test_routing(principal: Principal, body: RoutingTest) -> dict[str, Any]:
    return routing.preview(principal, body.capability_required, body.strategy)


@endpoint(
    bp,
    "/ains/routing/capabilities",
    "GET",
    summary="Capabilities and their default routing strategy",
    tag=TAG,
    responses={200: CapabilityRoutingList},
)
def list_capability_routing(principal: Principal) -> dict[str, Any]:
    return {"capabilities": routing.capability_settings()}


@endpoint(
    bp,
    "/ains/routing/capabilities/<capability>",
    "PUT",
    summary="Set a capability's default routing strategy (admin)",
    tag=TAG,
    body=CapabilityRoutingUpdate,
    responses={200: CapabilityRoutingOut},
    roles=("admin",),
)
def set_capability_routing(
    principal: Principal, capability: str, body: CapabilityRoutingUpdate
) -> dict[str, Any]:
    return routing.set_default_strategy(principal, capability, body.default_strategy)
