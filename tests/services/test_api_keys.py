"""API key services: creation rules, rotation with a grace period, revocation, expiry,
last use, status and the list's filters, on a pinned clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask

from app.extensions import db
from app.models import ApiKey, Role
from app.services import auth
from app.services.errors import Conflict, InvalidInput, NotAuthenticated, NotFound, NotPermitted
from app.services.principal import Principal, operator
from tests.api.support import T0

ADMIN = operator("admin@example.com")
CLIENT = Principal(role=Role.CLIENT, name="client", key_id="key_x", client_id="c1")
DAY = 86400


def make(name: str = "k", role: str = Role.CLIENT, **fields: object) -> tuple[ApiKey, str]:
    fields.setdefault("client_id", "c1" if role == Role.CLIENT else None)
    return auth.create_api_key(name=name, role=role, now=T0, **fields)  # type: ignore[arg-type]


def field_of(exc: pytest.ExceptionInfo[InvalidInput]) -> str:
    return exc.value.details[0]["field"]


def test_it_keeps_the_old_secret_for_the_grace_period_and_refuses_it_after(
    app_ctx: Flask,
) -> None:
    key, old = make()
    rotated, new = auth.rotate_api_key(ADMIN, key.id, 3600, now=T0)
    assert rotated.id == key.id and new != old
    assert rotated.rotated_at == T0 and rotated.previous_expires_at == T0 + timedelta(hours=1)
    # Both work during the grace period, as the same key.
    soon = T0 + timedelta(minutes=59)
    assert auth.authenticate_key(old, now=soon).key_id == key.id
    assert auth.authenticate_key(new, now=soon).key_id == key.id
    # The old one dies when the grace period ends; the new one lives on.
    with pytest.raises(NotAuthenticated, match="grace period has ended"):
        auth.authenticate_key(old, now=T0 + timedelta(hours=1))
    assert auth.authenticate_key(new, now=T0 + timedelta(days=40)).client_id == "c1"


def test_it_ends_the_old_secret_at_once_with_no_grace(app_ctx: Flask) -> None:
    key, old = make()
    rotated, new = auth.rotate_api_key(ADMIN, key.id, 0, now=T0)
    assert rotated.previous_key_hash is None and rotated.previous_expires_at is None
    with pytest.raises(NotAuthenticated, match="invalid API key"):
        auth.authenticate_key(old, now=T0)
    assert auth.authenticate_key(new, now=T0).key_id == key.id


def test_a_second_rotation_during_the_grace_period_ends_the_oldest_secret(
    app_ctx: Flask,
) -> None:
    key, first = make()
    _, second = auth.rotate_api_key(ADMIN, key.id, DAY, now=T0)
    later = T0 + timedelta(hours=1)
    _, third = auth.rotate_api_key(ADMIN, key.id, DAY, now=later)
    with pytest.raises(NotAuthenticated):
        auth.authenticate_key(first, now=later)
    # The secret just replaced gets a fresh grace period from the second rotation.
    assert auth.authenticate_key(second, now=later + timedelta(hours=23)).key_id == key.id
    with pytest.raises(NotAuthenticated):
        auth.authenticate_key(second, now=later + timedelta(days=1))
    assert auth.authenticate_key(third, now=later + timedelta(days=2)).key_id == key.id


def test_revoking_refuses_both_secrets_and_is_idempotent(app_ctx: Flask) -> None:
    key, old = make()
    _, new = auth.rotate_api_key(ADMIN, key.id, DAY, now=T0)
    revoked = auth.revoke_api_key(ADMIN, key.id, now=T0 + timedelta(minutes=1))
    assert revoked.revoked_at == T0 + timedelta(minutes=1)
    for secret in (old, new):
        with pytest.raises(NotAuthenticated, match="revoked or expired"):
            auth.authenticate_key(secret, now=T0 + timedelta(minutes=2))
    again = auth.revoke_api_key(ADMIN, key.id, now=T0 + timedelta(hours=5))
    assert again.revoked_at == T0 + timedelta(minutes=1)
    assert auth.key_status(again, T0 + timedelta(hours=5)) == auth.KeyStatus.REVOKED


def test_an_expired_key_is_refused_and_cannot_be_rotated(app_ctx: Flask) -> None:
    key, raw = make(expires_at=T0 + timedelta(days=1))
    assert auth.authenticate_key(raw, now=T0 + timedelta(hours=23)).key_id == key.id
    with pytest.raises(NotAuthenticated, match="revoked or expired"):
        auth.authenticate_key(raw, now=T0 + timedelta(days=1))
    with pytest.raises(Conflict, match="expired"):
        auth.rotate_api_key(ADMIN, key.id, DAY, now=T0 + timedelta(days=2))


def test_the_grace_period_never_outlives_the_key(app_ctx: Flask) -> None:
    key, old = make(expires_at=T0 + timedelta(hours=2))
    auth.rotate_api_key(ADMIN, key.id, DAY, now=T0)
    with pytest.raises(NotAuthenticated, match="revoked or expired"):
        auth.authenticate_key(old, now=T0 + timedelta(hours=3))


def test_a_revoked_key_cannot_be_rotated(app_ctx: Flask) -> None:
    key, _ = make()
    auth.revoke_api_key(ADMIN, key.id, now=T0)
    with pytest.raises(Conflict, match="revoked"):
        auth.rotate_api_key(ADMIN, key.id, DAY, now=T0)


@pytest.mark.parametrize("grace", [-1, 30 * DAY + 1, True])
def test_it_refuses_a_grace_period_out_of_range(app_ctx: Flask, grace: int) -> None:
    key, raw = make()
    with pytest.raises(InvalidInput) as exc:
        auth.rotate_api_key(ADMIN, key.id, grace, now=T0)
    assert field_of(exc) == "grace_seconds"
    assert auth.authenticate_key(raw, now=T0).key_id == key.id  # unchanged


def test_an_agent_bound_key_keeps_its_binding_through_a_rotation(app_ctx: Flask) -> None:
    key, _ = make(role=Role.AGENT, agent_id="agent_1")
    _, new = auth.rotate_api_key(ADMIN, key.id, 0, now=T0)
    principal = auth.authenticate_key(new, now=T0)
    assert (principal.role, principal.agent_id, principal.key_id) == ("agent", "agent_1", key.id)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"role": "owner"}, "role"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "bad\x00name"}, "name"),
        ({"client_id": None}, "client_id"),
        ({"role": Role.ADMIN, "client_id": "c1"}, "client_id"),
        ({"client_id": "c" * 201}, "client_id"),
        ({"agent_id": "agent_1"}, "agent_id"),
        ({"expires_at": T0}, "expires_at"),
        ({"expires_at": T0 - timedelta(seconds=1)}, "expires_at"),
    ],
)
def test_it_refuses_bad_fields_naming_them(
    app_ctx: Flask, fields: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {"name": "k", "role": Role.CLIENT, "client_id": "c1", **fields}
    with pytest.raises(InvalidInput) as exc:
        auth.create_api_key(now=T0, **args)  # type: ignore[arg-type]
    assert field_of(exc) == field
    assert db.session.scalars(db.select(ApiKey)).all() == []


def test_only_admins_make_admin_keys_and_the_creator_is_recorded(app_ctx: Flask) -> None:
    fleet = Principal(role=Role.AGENT, name="fleet", key_id="key_f")
    with pytest.raises(NotPermitted):
        auth.create_api_key(name="k", role=Role.ADMIN, created_by=fleet, now=T0)
    key, _ = auth.create_api_key(name="  ops  ", role=Role.ADMIN, created_by=ADMIN, now=T0)
    assert key.created_by == "admin:admin@example.com" and key.name == "ops"


def test_it_notes_the_last_use_of_either_secret_at_most_once_a_minute(app_ctx: Flask) -> None:
    key, old = make()
    assert key.last_used_at is None
    auth.authenticate_key(old, now=T0)
    assert db.session.get(ApiKey, key.id).last_used_at == T0  # type: ignore[union-attr]
    auth.authenticate_key(old, now=T0 + timedelta(seconds=30))
    assert db.session.get(ApiKey, key.id).last_used_at == T0  # type: ignore[union-attr]
    auth.rotate_api_key(ADMIN, key.id, DAY, now=T0 + timedelta(minutes=1))
    auth.authenticate_key(old, now=T0 + timedelta(minutes=5))
    used = db.session.get(ApiKey, key.id).last_used_at  # type: ignore[union-attr]
    assert used == T0 + timedelta(minutes=5)


def test_it_lists_by_status_role_and_client_newest_first(app_ctx: Flask) -> None:
    active, _ = make("active")
    expiring, _ = make("expiring", expires_at=T0 + timedelta(days=3))
    expired, _ = make("expired", expires_at=T0 + timedelta(hours=1))
    revoked, _ = make("revoked", client_id="c2")
    auth.revoke_api_key(ADMIN, revoked.id, now=T0)
    agent, _ = make("agent", role=Role.AGENT)
    now = T0 + timedelta(hours=2)

    def names(**filters: str) -> list[str]:
        page = auth.list_api_keys(ADMIN, auth.KeyFilters(**filters), now=now)
        assert page.total == len(page.keys)
        return sorted(k.name for k in page.keys)

    assert names(status="active") == ["active", "agent"]
    assert names(status="expiring") == ["expiring"]
    assert names(status="expired") == ["expired"]
    assert names(status="revoked") == ["revoked"]
    assert names(role="agent") == ["agent"]
    assert names(client_id="c2") == ["revoked"]
    for key in (active, expiring, expired, revoked, agent):
        listed = names(status=auth.key_status(key, now))
        assert key.name in listed  # the filter agrees with the status shown
    with pytest.raises(InvalidInput):
        auth.list_api_keys(ADMIN, auth.KeyFilters(status="lost"), now=now)


def test_it_pages_the_list(app_ctx: Flask) -> None:
    for i in range(5):
        auth.create_api_key(name=f"k{i}", role=Role.AGENT, now=T0 + timedelta(seconds=i))
    first = auth.list_api_keys(ADMIN, limit=2, offset=0)
    last = auth.list_api_keys(ADMIN, limit=2, offset=4)
    assert first.total == last.total == 5
    assert [k.name for k in first.keys] == ["k4", "k3"]
    assert [k.name for k in last.keys] == ["k0"]


def test_only_admins_manage_keys_and_unknown_ids_are_not_found(app_ctx: Flask) -> None:
    key, _ = make()
    for action in (
        lambda: auth.list_api_keys(CLIENT),
        lambda: auth.get_api_key(CLIENT, key.id),
        lambda: auth.revoke_api_key(CLIENT, key.id),
        lambda: auth.rotate_api_key(CLIENT, key.id, 0),
    ):
        with pytest.raises(NotPermitted):
            action()
    with pytest.raises(NotFound):
        auth.get_api_key(ADMIN, "key_nope")
    with pytest.raises(NotFound):
        auth.rotate_api_key(ADMIN, "key_nope", 0)
