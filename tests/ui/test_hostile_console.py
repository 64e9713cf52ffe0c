"""Hostile input found by review of the security work: each was a 500, a lost audit
detail or a silently changed password before its fix."""

from __future__ import annotations

import base64
import json
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import AuditEvent, OperatorRole
from tests.api.support import assert_error
from tests.conftest import Api, Personas
from tests.ui.conftest import console_as, csrf_token, form_token, sign_in

PASSWORD = "correct horse battery"
NOT_IN_UTC = "9999-12-31T23:59:59-14:00"


def admin_console(app: Flask) -> FlaskClient:
    return console_as(app, OperatorRole.ADMIN, "root@example.com")


def forged_cursor(created_at: str, row_id: str) -> str:
    raw = json.dumps([created_at, row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "path",
    [
        "/audit?actor=a%00b",
        "/audit.csv?actor=a%00b",
        "/api-keys?client_id=a%00b",
        "/api-keys/key%00x",
        "/tasks?client=%00",
        "/tasks/task%00x",
        "/agents/a%00",
    ],
)
def test_a_nul_in_a_console_address_is_a_400(app: Flask, path: str) -> None:
    assert admin_console(app).get(path).status_code == 400


def test_a_nul_in_a_console_form_is_a_400_even_signed_out(app: Flask) -> None:
    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"csrf_token": token, "email": "a\x00@x.io", "password": "whatever123"}
    )
    assert response.status_code == 400
    console = admin_console(app)
    made = console.post(
        "/users",
        data={
            "csrf_token": form_token(console, "/users"),
            "email": "a\x00b@x.io",
            "role": "viewer",
        },
    )
    assert made.status_code == 400


@pytest.mark.parametrize("action", ["role", "deactivate", "sign-out", "reset-password"])
def test_a_huge_user_id_is_not_found(app: Flask, action: str) -> None:
    console = admin_console(app)
    response = console.post(
        f"/users/99999999999999999999/{action}",
        data={"csrf_token": form_token(console, "/users"), "role": "viewer"},
    )
    assert response.status_code in (302, 404)
    page = console.get("/users").get_data(as_text=True)
    assert response.status_code == 404 or "not found" in page


def test_times_that_do_not_exist_in_utc_are_422(api: Api, personas: Personas) -> None:
    admin = personas.admin
    assert_error(api.get(f"/ains/audit-events?since={NOT_IN_UTC}", admin), 422)
    assert_error(api.get(f"/ains/tasks?created_after={NOT_IN_UTC}", admin), 422)
    made = api.post(
        "/ains/api-keys", admin, json={"name": "x", "role": "admin", "expires_at": NOT_IN_UTC}
    )
    assert_error(made, 422)


@pytest.mark.parametrize(
    "cursor", [forged_cursor(NOT_IN_UTC, "1"), forged_cursor("2026-01-01T00:00:00+00:00", "9" * 30)]
)
def test_forged_cursors_are_422_not_500(
    api: Api, personas: Personas, app: Flask, cursor: str
) -> None:
    assert_error(api.get(f"/ains/audit-events?cursor={cursor}", personas.admin), 422)
    assert admin_console(app).get(f"/audit?cursor={cursor}").status_code in (400, 422)


def test_a_password_set_by_an_admin_keeps_its_spaces(app: Flask) -> None:
    console = admin_console(app)
    spaced = "  spaced password  "
    made = console.post(
        "/users",
        data={
            "csrf_token": form_token(console, "/users"),
            "email": "s@example.com",
            "role": "viewer",
            "password": spaced,
        },
    )
    assert made.status_code == 201
    assert sign_in(app.test_client(), "s@example.com", spaced).status_code == 302


def test_the_template_preview_is_not_audited_and_key_creation_names_its_key(
    app: Flask,
) -> None:
    console = admin_console(app)
    token = form_token(console, "/task-templates/new")
    for _ in range(3):
        console.post(
            "/task-templates/preview",
            data={"csrf_token": token, "input_schema": "{}"},
            headers={"HX-Request": "true"},
        )
    created = console.post(
        "/api-keys",
        data={
            "csrf_token": form_token(console, "/api-keys"),
            "name": "billing",
            "role": "client",
            "client_id": "c1",
            "expires": "30",
        },
    )
    assert created.status_code in (302, 303)
    key_id = re.search(r"/api-keys/(key_[0-9a-f]+)", created.headers["Location"]).group(1)
    with app.app_context():
        actions = [a for (a,) in db.session.execute(db.select(AuditEvent.action)).all()]
        assert not any("preview" in a for a in actions), actions
        row = db.session.scalars(
            db.select(AuditEvent).where(AuditEvent.action == "api_key.create")
        ).one()
        assert (row.target_type, row.target_id) == ("api_key", key_id)
        assert "client" in str(row.summary) and "c1" in str(row.summary)
        db.session.remove()


def test_a_flood_of_bad_keys_writes_one_row_a_minute(app: Flask, api: Api) -> None:
    bad = {"Authorization": "Bearer ains_000000000000_nope"}
    for _ in range(6):
        assert api.post("/ains/tasks", json={}, headers=bad).status_code == 401
    with app.app_context():
        rows = db.session.scalars(db.select(AuditEvent).where(AuditEvent.status_code == 401)).all()
        assert len(rows) == 1
        db.session.remove()
