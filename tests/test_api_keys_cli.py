"""The flask CLI's key commands: create with an expiry, rotate with a grace period, revoke."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask

from app.extensions import db
from app.lib.clock import utcnow
from app.models import ApiKey
from app.services.auth import authenticate_key
from app.services.errors import NotAuthenticated


def run(app: Flask, *args: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["keys", *args])
    return result.exit_code, result.output


def test_it_creates_rotates_and_revokes_a_key(app: Flask) -> None:
    code, out = run(app, "create", "--role", "agent", "--name", "fleet", "--expires-in-days", "5")
    assert code == 0, out
    first = out.strip().splitlines()[-1]
    with app.app_context():
        key = db.session.scalars(db.select(ApiKey)).one()
        assert key.created_by == "admin:cli" and key.expires_at is not None
        assert timedelta(days=4) < key.expires_at - utcnow() <= timedelta(days=5)
        key_id = key.id
        db.session.remove()
    code, out = run(app, "rotate", key_id, "--grace-seconds", "0")
    assert code == 0, out
    second = out.strip().splitlines()[-1]
    assert second.startswith("ains_") and second != first
    with app.app_context():
        assert authenticate_key(second).key_id == key_id
        with pytest.raises(NotAuthenticated):
            authenticate_key(first)
        db.session.remove()
    code, out = run(app, "revoke", key_id)
    assert code == 0 and "Revoked" in out
    with app.app_context():
        with pytest.raises(NotAuthenticated):
            authenticate_key(second)
        db.session.remove()


def test_it_names_an_unknown_key_and_refuses_a_bad_grace(app: Flask) -> None:
    code, out = run(app, "rotate", "key_nope")
    assert code == 2 and "key_nope" in out
    code, out = run(app, "rotate", "key_nope", "--grace-seconds", "-1")
    assert code == 2 and "grace-seconds" in out
