"""Webhooks: subscriptions of agents, clients and admins, and their delivery history.

Agents' webhooks live under ``/ains/agents/{id}/webhooks`` (seed 004); clients' and global
ones under ``/ains/webhooks``. Who may see or change which webhook is decided by
services/webhooks (others' webhooks are 404). A secret is in the create and rotate-secret
responses only.
"""

from __future__ import annotations

from typing import Any

from app.api import bp
from app.api.endpoint import endpoint
from app.api.schemas import (
    AgentWebhookCreate,
    DeliveryListQuery,
    SecretRotate,
    WebhookCreate,
    WebhookDeletedOut,
    WebhookDeliveryDetailOut,
    WebhookDeliveryOut,
    WebhookDeliveryPageOut,
    WebhookListOut,
    WebhookOut,
    WebhookSecretOut,
    WebhookUpdate,
)
from app.models import Webhook, WebhookDelivery
from app.services import webhooks
from app.services.principal import Principal

TAG = "Webhooks"
BASE = "/ains/webhooks"
DELIVERIES = "/ains/webhook-deliveries"


def webhook_dicts(hooks: list[Webhook]) -> list[dict[str, Any]]:
    """Webhooks with their delivery counts (one query for the lot)."""
    counts = webhooks.webhook_counts([h.id for h in hooks])
    return [h.to_dict() | {"deliveries": counts[h.id]} for h in hooks]


def webhook_dict(hook: Webhook, secret: str | None = None) -> dict[str, Any]:
    [data] = webhook_dicts([hook])
    return data if secret is None else data | {"secret": secret}


def new_delivery_dict(delivery: WebhookDelivery) -> dict[str, Any]:
    return delivery.to_dict(attempts=[])  # just made: no attempt yet


@endpoint(
    bp,
    "/ains/agents/<agent_id>/webhooks",
    "POST",
    summary="Subscribe a URL to an agent's events (the secret is shown this once)",
    tag=TAG,
    body=AgentWebhookCreate,
    responses={201: WebhookSecretOut},
    roles=("agent",),
)
def create_agent_webhook(
    principal: Principal, agent_id: str, body: AgentWebhookCreate
) -> tuple[dict[str, Any], int]:
    hook, secret = webhooks.create_webhook(principal, agent_id=agent_id, **body.model_dump())
    return webhook_dict(hook, secret), 201


@endpoint(
    bp,
    "/ains/agents/<agent_id>/webhooks",
    "GET",
    summary="An agent's webhooks (newest first)",
    tag=TAG,
    responses={200: WebhookListOut},
    roles=("agent",),
)
def list_agent_webhooks(principal: Principal, agent_id: str) -> dict[str, Any]:
    return {"webhooks": webhook_dicts(webhooks.list_webhooks(principal, agent_id=agent_id))}


@endpoint(
    bp,
    BASE,
    "POST",
    summary="Subscribe a URL to a client's events, or (admin, no client_id) to every event",
    tag=TAG,
    body=WebhookCreate,
    responses={201: WebhookSecretOut},
    roles=("client",),
)
def create_webhook(principal: Principal, body: WebhookCreate) -> tuple[dict[str, Any], int]:
    hook, secret = webhooks.create_webhook(principal, **body.model_dump())
    return webhook_dict(hook, secret), 201


@endpoint(
    bp,
    BASE,
    "GET",
    summary="The webhooks this key manages (newest first)",
    tag=TAG,
    responses={200: WebhookListOut},
)
def list_webhooks(principal: Principal) -> dict[str, Any]:
    return {"webhooks": webhook_dicts(webhooks.list_webhooks(principal))}


@endpoint(
    bp,
    f"{BASE}/<webhook_id>",
    "GET",
    summary="Get a webhook with its delivery counts",
    tag=TAG,
    responses={200: WebhookOut},
)
def get_webhook(principal: Principal, webhook_id: str) -> dict[str, Any]:
    return webhook_dict(webhooks.get_webhook(principal, webhook_id))


@endpoint(
    bp,
    f"{BASE}/<webhook_id>",
    "PATCH",
    summary="Change a webhook's url, events, description, or pause and resume it",
    tag=TAG,
    body=WebhookUpdate,
    responses={200: WebhookOut},
)
def update_webhook(principal: Principal, webhook_id: str, body: WebhookUpdate) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    return webhook_dict(webhooks.update_webhook(principal, webhook_id, changes))


@endpoint(
    bp,
    f"{BASE}/<webhook_id>",
    "DELETE",
    summary="Delete a webhook and its delivery history",
    tag=TAG,
    responses={200: WebhookDeletedOut},
)
def delete_webhook(principal: Principal, webhook_id: str) -> dict[str, Any]:
    webhooks.delete_webhook(principal, webhook_id)
    return {"webhook_id": webhook_id, "deleted": True, "message": "Webhook deleted"}


@endpoint(
    bp,
    f"{BASE}/<webhook_id>/rotate-secret",
    "POST",
    summary="Replace the signing secret (given, or generated); shown this once",
    tag=TAG,
    body=SecretRotate,
    responses={200: WebhookSecretOut},
)
def rotate_secret(principal: Principal, webhook_id: str, body: SecretRotate) -> dict[str, Any]:
    hook, secret = webhooks.rotate_secret(principal, webhook_id, body.secret)
    return webhook_dict(hook, secret)


@endpoint(
    bp,
    f"{BASE}/<webhook_id>/test",
    "POST",
    summary="Send a webhook.ping event to this webhook; returns the queued delivery",
    tag=TAG,
    responses={202: WebhookDeliveryOut},
)
def ping_webhook(principal: Principal, webhook_id: str) -> tuple[dict[str, Any], int]:
    return new_delivery_dict(webhooks.ping(principal, webhook_id)), 202


@endpoint(
    bp,
    f"{BASE}/<webhook_id>/deliveries",
    "GET",
    summary="A webhook's deliveries with their attempts, newest first (cursor pages)",
    tag=TAG,
    query=DeliveryListQuery,
    responses={200: WebhookDeliveryPageOut},
)
def list_deliveries(
    principal: Principal, webhook_id: str, query: DeliveryListQuery
) -> dict[str, Any]:
    page = webhooks.list_deliveries(principal, webhook_id, **query.model_dump())
    return {
        "deliveries": [d.to_dict(attempts=page.attempts[d.id]) for d in page.deliveries],
        "next_cursor": page.next_cursor,
        "limit": query.limit,
    }


@endpoint(
    bp,
    f"{DELIVERIES}/<delivery_id>",
    "GET",
    summary="One delivery with its attempts and the body it sends",
    tag=TAG,
    responses={200: WebhookDeliveryDetailOut},
)
def get_delivery(principal: Principal, delivery_id: str) -> dict[str, Any]:
    delivery = webhooks.get_delivery(principal, delivery_id)
    attempts = webhooks.attempts_of([delivery.id])[delivery.id]
    return delivery.to_dict(attempts=attempts) | {"body": webhooks.event_body(delivery.event_id)}


@endpoint(
    bp,
    f"{DELIVERIES}/<delivery_id>/redeliver",
    "POST",
    summary="Send a delivery's event again, as a new delivery (same X-Webhook-Id)",
    tag=TAG,
    responses={202: WebhookDeliveryOut},
)
def redeliver(principal: Principal, delivery_id: str) -> tuple[dict[str, Any], int]:
    return new_delivery_dict(webhooks.redeliver(principal, delivery_id)), 202
