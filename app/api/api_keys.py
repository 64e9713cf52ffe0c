"""API keys, for admins: create, list, get, revoke, rotate under /ains/api-keys.

A key's secret is in the create and rotate responses only; lists and gets show its prefix.
Revoking is idempotent: DELETE answers 200 with the key (status ``revoked``) every time, so
a retried request reads the same. Rotation keeps the key's id, and with it the agents it
registered; the replaced secret works for ``grace_seconds`` (API_KEY_ROTATION_GRACE_SECONDS
by default), and a second rotation during a grace period ends the older secret at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from flask import current_app
from pydantic import Field

from app.api import bp
from app.api.endpoint import endpoint
from app.api.schemas import Body, OffsetDatetime, Out, Query
from app.lib.clock import utcnow
from app.models import Role
from app.services import auth
from app.services.errors import invalid
from app.services.principal import Principal

TAG = "API keys"
BASE = "/ains/api-keys"
ADMINS = (Role.ADMIN,)

KeyRole = Literal["admin", "client", "agent"]
KeyStatusName = Literal["active", "expiring", "expired", "revoked"]


class ApiKeyCreate(Body):
    name: Annotated[str, Field(min_length=1, max_length=auth.MAX_KEY_NAME_LENGTH)]
    role: KeyRole
    client_id: str | None = Field(
        None, min_length=1, max_length=auth.MAX_CLIENT_ID_LENGTH, description="client keys only"
    )
    expires_at: OffsetDatetime | None = Field(
        None, description="ISO 8601 with an offset, in the future; or give expires_in_days"
    )
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="or give expires_at")


class ApiKeyRotate(Body):
    grace_seconds: int | None = Field(
        None,
        ge=0,
        le=auth.MAX_ROTATION_GRACE_SECONDS,
        description="how long the replaced secret keeps working (0: not at all); "
        "API_KEY_ROTATION_GRACE_SECONDS by default",
    )


class ApiKeyListQuery(Query):
    role: KeyRole | None = None
    client_id: str | None = Field(None, max_length=auth.MAX_CLIENT_ID_LENGTH)
    agent_id: str | None = Field(None, max_length=40)
    status: KeyStatusName | None = None
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=1_000_000)


class ApiKeyOut(Out):
    key_id: str
    name: str
    prefix: str = Field(description="the key starts ains_<prefix>_; the secret is never shown")
    role: KeyRole
    client_id: str | None
    agent_id: str | None = Field(description="set on the key an agent registration returned")
    status: KeyStatusName = Field(description="expiring: expires within 7 days")
    created_at: datetime
    created_by: str | None
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_at: datetime | None
    previous_expires_at: datetime | None = Field(
        description="until then the secret the last rotation replaced still works"
    )


class ApiKeySecretOut(ApiKeyOut):
    api_key: str = Field(description="the secret, shown this once: store it now")


class ApiKeyPageOut(Out):
    api_keys: list[ApiKeyOut]
    total: int
    limit: int
    offset: int


def expiry(body: ApiKeyCreate, now: datetime) -> datetime | None:
    """The expiry asked for, as a time or a number of days from now."""
    if body.expires_at is not None and body.expires_in_days is not None:
        raise invalid("expires_in_days", "give expires_at or expires_in_days, not both")
    if body.expires_in_days is not None:
        return now + timedelta(days=body.expires_in_days)
    return body.expires_at


@endpoint(
    bp,
    BASE,
    "POST",
    summary="Create an API key (the key is shown this once)",
    tag=TAG,
    body=ApiKeyCreate,
    responses={201: ApiKeySecretOut},
    roles=ADMINS,
)
def create_api_key(principal: Principal, body: ApiKeyCreate) -> tuple[dict[str, Any], int]:
    now = utcnow()
    key, raw = auth.create_api_key(
        name=body.name,
        role=body.role,
        client_id=body.client_id,
        expires_at=expiry(body, now),
        created_by=principal,
        now=now,
    )
    return auth.api_key_dict(key, now) | {"api_key": raw}, 201


@endpoint(
    bp,
    BASE,
    "GET",
    summary="List API keys (newest first; never their secrets)",
    tag=TAG,
    query=ApiKeyListQuery,
    responses={200: ApiKeyPageOut},
    roles=ADMINS,
)
def list_api_keys(principal: Principal, query: ApiKeyListQuery) -> dict[str, Any]:
    now = utcnow()
    filters = auth.KeyFilters(
        role=query.role, client_id=query.client_id, agent_id=query.agent_id, status=query.status
    )
    page = auth.list_api_keys(principal, filters, limit=query.limit, offset=query.offset, now=now)
    return {
        "api_keys": [auth.api_key_dict(k, now) for k in page.keys],
        "total": page.total,
        "limit": query.limit,
        "offset": query.offset,
    }


@endpoint(
    bp,
    f"{BASE}/<key_id>",
    "GET",
    summary="Get an API key (never its secret)",
    tag=TAG,
    responses={200: ApiKeyOut},
    roles=ADMINS,
)
def get_api_key(principal: Principal, key_id: str) -> dict[str, Any]:
    return auth.api_key_dict(auth.get_api_key(principal, key_id), utcnow())


@endpoint(
    bp,
    f"{BASE}/<key_id>",
    "DELETE",
    summary="Revoke an API key: both its secrets stop working (idempotent: 200 every time)",
    tag=TAG,
    responses={200: ApiKeyOut},
    roles=ADMINS,
)
def revoke_api_key(principal: Principal, key_id: str) -> dict[str, Any]:
    now = utcnow()
    return auth.api_key_dict(auth.revoke_api_key(principal, key_id, now), now)


@endpoint(
    bp,
    f"{BASE}/<key_id>/rotate",
    "POST",
    summary="Give a key a new secret (shown this once); the old one works for a grace period",
    tag=TAG,
    body=ApiKeyRotate,
    responses={200: ApiKeySecretOut},
    roles=ADMINS,
)
def rotate_api_key(principal: Principal, key_id: str, body: ApiKeyRotate) -> dict[str, Any]:
    now = utcnow()
    grace = body.grace_seconds
    if grace is None:
        grace = current_app.config["API_KEY_ROTATION_GRACE_SECONDS"]
    key, raw = auth.rotate_api_key(principal, key_id, grace, now)
    return auth.api_key_dict(key, now) | {"api_key": raw}
