"""The flask CLI: keys, users."""

from __future__ import annotations

from flask import Flask

from app.extensions import db
from app.models import ApiKey, User
from app.services.auth import authenticate_key


def test_it_prints_a_new_key_alone_on_the_last_line_and_stores_only_its_hash(app: Flask) -> None:
    result = app.test_cli_runner().invoke(
        args=["keys", "create", "--role", "client", "--name", "acme", "--client-id", "acme"]
    )
    assert result.exit_code == 0, result.output
    raw = result.output.strip().splitlines()[-1]
    assert raw.startswith("ains_")
    with app.app_context():
        key = db.session.scalars(db.select(ApiKey)).one()
        assert raw not in (key.key_hash, key.prefix) and key.key_hash != ""
        principal = authenticate_key(raw)
        assert (principal.role, principal.client_id) == ("client", "acme")


def test_it_refuses_a_client_key_without_a_client_id(app: Flask) -> None:
    result = app.test_cli_runner().invoke(
        args=["keys", "create", "--role", "client", "--name", "x"]
    )
    assert result.exit_code == 2
    assert "client_id" in result.output
    with app.app_context():
        assert db.session.scalars(db.select(ApiKey)).all() == []


def test_it_creates_the_first_operator_once_and_prints_the_password_once(app: Flask) -> None:
    runner = app.test_cli_runner()
    first = runner.invoke(args=["users", "ensure-admin"])
    assert first.exit_code == 0 and "password:" in first.output
    password = first.output.split("password:")[1].split()[0]
    second = runner.invoke(args=["users", "ensure-admin"])
    assert second.exit_code == 0 and "password" not in second.output
    with app.app_context():
        users = db.session.scalars(db.select(User)).all()
        assert len(users) == 1 and users[0].check_password(password)
        assert password not in users[0].password_hash


def test_it_creates_a_user_and_changes_a_password(app: Flask) -> None:
    runner = app.test_cli_runner()
    created = runner.invoke(
        args=["users", "create", "--email", "Ops@Example.com", "--password", "s3cret-pass"]
    )
    assert created.exit_code == 0, created.output
    changed = runner.invoke(
        args=["users", "set-password", "--email", "ops@example.com", "--password", "n3w-password"]
    )
    assert changed.exit_code == 0, changed.output
    short = runner.invoke(
        args=["users", "set-password", "--email", "ops@example.com", "--password", "short"]
    )
    assert short.exit_code == 2
    with app.app_context():
        user = db.session.scalars(db.select(User)).one()
        assert user.email == "ops@example.com" and user.check_password("n3w-password")


def test_command_line_changes_are_audited_without_secrets(app: Flask) -> None:
    from app.models import AuditEvent

    runner = app.test_cli_runner()
    made = runner.invoke(args=["keys", "create", "--role", "admin", "--name", "ops"])
    raw = made.output.strip().splitlines()[-1]
    key_id = made.output.split("key ")[1].split()[0]
    assert runner.invoke(args=["keys", "revoke", key_id]).exit_code == 0
    created = runner.invoke(
        args=["users", "create", "--email", "a@example.com", "--password", "s3cret-pass"]
    )
    assert created.exit_code == 0
    with app.app_context():
        rows = db.session.scalars(db.select(AuditEvent).order_by(AuditEvent.id)).all()
        assert [(r.action, r.method) for r in rows] == [
            ("api_key.create", "CLI"),
            ("api_key.revoke", "CLI"),
            ("user.create", "CLI"),
        ]
        assert rows[0].target_id == key_id and rows[0].actor.startswith("cli:")
        dump = " ".join(f"{r.summary} {r.target_id}" for r in rows)
        assert raw not in dump and "s3cret-pass" not in dump
