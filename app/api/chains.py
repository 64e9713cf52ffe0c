"""Task chains (seed 003 shapes): steps run one after another, each fed the previous result."""

from __future__ import annotations

from typing import Any

from app.api import bp
from app.api.endpoint import endpoint
from app.api.schemas import CancelRequest, ChainCreate, ChainListQuery, ChainOut, ChainPageOut
from app.services import chains
from app.services.principal import Principal

TAG = "Chains"
BASE = "/ains/task-chains"
CLIENTS = ("client",)


@endpoint(
    bp,
    BASE,
    "POST",
    summary="Create a chain; its first step's task is submitted at once",
    tag=TAG,
    body=ChainCreate,
    responses={201: ChainOut},
    roles=CLIENTS,
)
def create_chain(principal: Principal, body: ChainCreate) -> tuple[dict[str, Any], int]:
    # A template step passes only the fields given: they override the template's defaults.
    steps = [s.model_dump(exclude_unset=s.template_id is not None) for s in body.steps]
    chain = chains.create_chain(principal, body.name, steps, client_id=body.client_id)
    return chains.chain_dict(chain), 201


@endpoint(
    bp,
    BASE,
    "GET",
    summary="List chains (newest first)",
    tag=TAG,
    query=ChainListQuery,
    responses={200: ChainPageOut},
    roles=CLIENTS,
)
def list_chains(principal: Principal, query: ChainListQuery) -> dict[str, Any]:
    page = chains.list_chains(principal, **query.model_dump())
    current = chains.current_task_ids(page.chains)
    return {
        "chains": [chains.chain_dict(c, current) for c in page.chains],
        "total": page.total,
        "limit": query.limit,
        "offset": query.offset,
    }


@endpoint(
    bp,
    f"{BASE}/<chain_id>",
    "GET",
    summary="Get a chain with its step results",
    tag=TAG,
    responses={200: ChainOut},
    roles=CLIENTS,
)
def get_chain(principal: Principal, chain_id: str) -> dict[str, Any]:
    return chains.chain_dict(chains.visible_chain(principal, chain_id))


@endpoint(
    bp,
    f"{BASE}/<chain_id>/cancel",
    "POST",
    summary="Cancel a chain: its running step's task is cancelled, no further step starts",
    tag=TAG,
    body=CancelRequest,
    responses={200: ChainOut},
    roles=CLIENTS,
)
def cancel_chain(principal: Principal, chain_id: str, body: CancelRequest) -> dict[str, Any]:
    return chains.chain_dict(chains.cancel_chain(principal, chain_id, body.reason))
