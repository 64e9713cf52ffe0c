"""The users page (admins): add accounts, change roles, deactivate, reset passwords, and
sign out everywhere; sessions end when they should."""

from __future__ import annotations

import re

from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import OperatorRole, User
from app.services.auth import create_user
from tests.ui.conftest import console_as, form_token, sign_in, text

PASSWORD = "correct horse battery"


def admin_console(app: Flask) -> FlaskClient:
    return console_as(app, OperatorRole.ADMIN, "root@example.com")


def user_named(app: Flask, email: str) -> User:
    with app.app_context():
        user = db.session.scalars(db.select(User).where(User.email == email)).one()
        db.session.expunge(user)
        db.session.remove()
    return user


def test_an_admin_adds_a_user_and_sees_the_generated_password_once(app: Flask) -> None:
    console = admin_console(app)
    response = console.post(
        "/users",
        data={
            "csrf_token": form_token(console, "/users"),
            "email": "Ann@Example.com",
            "role": "viewer",
        },
    )
    assert response.status_code == 201
    html = text(response)
    password = re.search(r"data-secret>([^<]+)<", html).group(1)
    assert response.headers["Cache-Control"] == "no-store"
    assert user_named(app, "ann@example.com").role == "viewer"
    # The password works, and is not on the page any more.
    assert password not in text(console.get("/users"))
    other = app.test_client()
    assert sign_in(other, "ann@example.com", password).status_code == 302


def test_bad_new_users_are_refused_with_the_reason(app: Flask) -> None:
    console = admin_console(app)
    token = form_token(console, "/users")
    short = console.post(
        "/users",
        data={"csrf_token": token, "email": "b@example.com", "role": "viewer", "password": "short"},
    )
    assert short.status_code == 422 and "at least 8" in text(short)
    again = console.post(
        "/users", data={"csrf_token": token, "email": "root@example.com", "role": "admin"}
    )
    assert again.status_code == 422 and "already exists" in text(again)
    role = console.post(
        "/users", data={"csrf_token": token, "email": "c@example.com", "role": "owner"}
    )
    assert role.status_code == 422
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(User)) == 1
        db.session.remove()


def test_a_role_change_takes_effect_on_the_next_request(app: Flask) -> None:
    console = admin_console(app)
    with app.app_context():
        create_user("op@example.com", PASSWORD, role=OperatorRole.OPERATOR)
        db.session.remove()
    op = app.test_client()
    assert sign_in(op, "op@example.com", PASSWORD).status_code == 302
    token = form_token(op, "/")
    assert op.post("/tasks/nosuch/cancel", data={"csrf_token": token}).status_code == 404
    user = user_named(app, "op@example.com")
    response = console.post(
        f"/users/{user.id}/role",
        data={"csrf_token": form_token(console, "/users"), "role": "viewer"},
    )
    assert response.status_code == 302
    assert op.post("/tasks/nosuch/cancel", data={"csrf_token": token}).status_code == 403


def test_the_last_admin_cannot_be_demoted_or_deactivated(app: Flask) -> None:
    console = admin_console(app)
    me = user_named(app, "root@example.com")
    token = form_token(console, "/users")
    console.post(f"/users/{me.id}/role", data={"csrf_token": token, "role": "viewer"})
    page = text(console.get("/users"))
    assert "last active admin" in page
    console.post(f"/users/{me.id}/deactivate", data={"csrf_token": token})
    assert user_named(app, "root@example.com").role == "admin"
    assert user_named(app, "root@example.com").active is True


def test_deactivating_signs_the_user_out_at_once(app: Flask) -> None:
    console = admin_console(app)
    with app.app_context():
        create_user("v@example.com", PASSWORD, role=OperatorRole.VIEWER)
        db.session.remove()
    viewer = app.test_client()
    assert sign_in(viewer, "v@example.com", PASSWORD).status_code == 302
    assert viewer.get("/tasks").status_code == 200
    user = user_named(app, "v@example.com")
    console.post(f"/users/{user.id}/deactivate", data={"csrf_token": form_token(console, "/users")})
    assert viewer.get("/tasks").status_code == 302
    assert sign_in(viewer, "v@example.com", PASSWORD).status_code == 401


def test_sign_out_everywhere_ends_every_session_and_remember_cookie(app: Flask) -> None:
    with app.app_context():
        create_user("m@example.com", PASSWORD, role=OperatorRole.OPERATOR)
        db.session.remove()
    laptop, phone = app.test_client(), app.test_client()
    assert sign_in(laptop, "m@example.com", PASSWORD).status_code == 302
    page = phone.get("/login")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', text(page)).group(1)
    remembered = phone.post(
        "/login",
        data={"email": "m@example.com", "password": PASSWORD, "remember": "y", "csrf_token": token},
    )
    assert remembered.status_code == 302
    assert phone.get_cookie("remember_token") is not None
    assert (
        laptop.post("/logout/everywhere", data={"csrf_token": form_token(laptop, "/")}).status_code
        == 302
    )
    assert laptop.get("/tasks").status_code == 302
    # The phone's session cookie and its remember-me cookie are both dead now.
    assert phone.get("/tasks").status_code == 302
    phone.delete_cookie("session")
    assert phone.get("/tasks").status_code == 302
    # Signing in again works.
    assert sign_in(laptop, "m@example.com", PASSWORD).status_code == 302


def test_reset_password_shows_a_new_one_and_the_old_stops_working(app: Flask) -> None:
    console = admin_console(app)
    with app.app_context():
        create_user("r@example.com", PASSWORD, role=OperatorRole.VIEWER)
        db.session.remove()
    user = user_named(app, "r@example.com")
    response = console.post(
        f"/users/{user.id}/reset-password", data={"csrf_token": form_token(console, "/users")}
    )
    new = re.search(r"data-secret>([^<]+)<", text(response)).group(1)
    assert sign_in(app.test_client(), "r@example.com", PASSWORD).status_code == 401
    assert sign_in(app.test_client(), "r@example.com", new).status_code == 302


def test_account_changes_are_audited_without_passwords(app: Flask) -> None:
    from app.models import AuditEvent

    console = admin_console(app)
    token = form_token(console, "/users")
    created = console.post(
        "/users", data={"csrf_token": token, "email": "aud@example.com", "role": "viewer"}
    )
    password = re.search(r"data-secret>([^<]+)<", text(created)).group(1)
    user = user_named(app, "aud@example.com")
    console.post(f"/users/{user.id}/role", data={"csrf_token": token, "role": "operator"})
    console.post(f"/users/{user.id}/deactivate", data={"csrf_token": token})
    reset = console.post(f"/users/{user.id}/reset-password", data={"csrf_token": token})
    new_password = re.search(r"data-secret>([^<]+)<", text(reset)).group(1)
    with app.app_context():
        rows = db.session.scalars(
            db.select(AuditEvent).where(AuditEvent.target_type == "user").order_by(AuditEvent.id)
        ).all()
        actions = [(r.action, r.target_id) for r in rows]
        assert actions == [
            ("user.create", str(user.id)),
            ("user.change_role", str(user.id)),
            ("user.deactivate", str(user.id)),
            ("user.reset_password", str(user.id)),
        ]
        role_change = rows[1].summary
        assert "viewer" in str(role_change) and "operator" in str(role_change)
        everything = " ".join(str(r.summary) for r in rows)
        assert password not in everything and new_password not in everything
        assert "argon2" not in everything
        db.session.remove()
