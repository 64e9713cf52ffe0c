"""Operator roles on every console route: viewers read, operators act, admins also manage
accounts, keys, trust and routing. Driven from the URL map, so a new route is covered."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import OperatorRole, User
from app.services.auth import create_user
from app.ui.access import required_role
from tests.ui.conftest import form_token, sign_in

PASSWORD = "correct horse battery"
# Reviewed by hand: what only admins may open or do. A route that loses its marker fails
# test_admin_routes_are_marked.
ADMIN_ONLY = {
    "ui.users_page",
    "ui.create_user",
    "ui.change_user_role",
    "ui.set_user_active",
    "ui.sign_out_user",
    "ui.reset_user_password",
    "ui.adjust_agent_trust",
    "ui.set_routing_default",
    "ui.api_keys",
    "ui.create_api_key",
    "ui.api_key_detail",
    "ui.rotate_api_key",
    "ui.revoke_api_key",
    "ui.audit_log",
    "ui.audit_csv",
}
# What a viewer may post: signing in and out.
VIEWER_POSTS = {"ui.login", "ui.logout", "ui.logout_everywhere"}
SAMPLE_ARGS = {"action": None, "user_id": 999999}


def make_account(app: Flask, role: str) -> dict[str, str]:
    email = f"{role}@example.com"
    with app.app_context():
        create_user(email, PASSWORD, role=role)
        db.session.remove()
    return {"email": email, "password": PASSWORD}


def signed_in(client: FlaskClient, app: Flask, role: str) -> FlaskClient:
    account = make_account(app, role)
    response = sign_in(client, account["email"], account["password"])
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def ui_routes(app: Flask) -> list[tuple[str, str, str]]:
    """Every console (endpoint, method, path), path arguments filled with unknown ids."""
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("ui.") or rule.endpoint in {"ui.login"}:
            continue
        values: dict[str, Any] = {}
        for name in rule.arguments:
            converter = rule._converters[name]
            items = getattr(converter, "items", None)
            if items:
                values[name] = sorted(items)[0]
            else:
                values[name] = SAMPLE_ARGS.get(name) or "nosuchid"
        with app.test_request_context():
            from flask import url_for

            path = url_for(rule.endpoint, **values)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((rule.endpoint, method, path))
    return routes


def needs(app: Flask, endpoint: str, method: str) -> str | None:
    with app.app_context():
        return required_role(endpoint, method)


def call(client: FlaskClient, method: str, path: str, token: str) -> int:
    if method == "GET":
        return client.get(path).status_code
    return client.open(path, method=method, data={"csrf_token": token}).status_code


def test_admin_routes_are_marked(app: Flask) -> None:
    with app.test_request_context():
        marked = {
            endpoint
            for endpoint in app.view_functions
            if endpoint.startswith("ui.") and required_role(endpoint, "GET") == OperatorRole.ADMIN
        }
    assert marked >= ADMIN_ONLY, f"lost their admin marker: {sorted(ADMIN_ONLY - marked)}"


def test_a_viewer_reads_but_changes_nothing(app: Flask, client: FlaskClient) -> None:
    signed_in(client, app, OperatorRole.VIEWER)
    token = form_token(client, "/")
    refused, allowed = [], []
    for endpoint, method, path in ui_routes(app):
        if endpoint in VIEWER_POSTS:
            continue
        status = call(client, method, path, token)
        admin_only = endpoint in ADMIN_ONLY or needs(app, endpoint, method) != "viewer"
        if method == "GET" and not admin_only:
            # Unknown ids are 404; a page a viewer may read never answers 403.
            (allowed if status != 403 else refused).append((endpoint, method, status))
            assert status != 403, f"viewer refused {method} {path}"
        else:
            assert status == 403, f"viewer got {status} for {method} {path}"
            refused.append((endpoint, method, status))
    assert any(e == "ui.cancel_task" for e, _, _ in refused)
    assert any(e == "ui.tasks" for e, _, _ in allowed)


def test_an_operator_acts_but_does_not_administer(app: Flask, client: FlaskClient) -> None:
    signed_in(client, app, OperatorRole.OPERATOR)
    token = form_token(client, "/")
    seen_admin = 0
    for endpoint, method, path in ui_routes(app):
        if endpoint in VIEWER_POSTS:
            continue
        status = call(client, method, path, token)
        if endpoint in ADMIN_ONLY or needs(app, endpoint, method) == OperatorRole.ADMIN:
            seen_admin += 1
            assert status == 403, f"operator got {status} for {method} {path}"
        else:
            assert status != 403, f"operator refused {method} {path}"
    assert seen_admin >= len(ADMIN_ONLY)


def test_an_admin_is_refused_nothing(app: Flask, client: FlaskClient) -> None:
    signed_in(client, app, OperatorRole.ADMIN)
    token = form_token(client, "/")
    for endpoint, method, path in ui_routes(app):
        if endpoint in VIEWER_POSTS:
            continue
        assert call(client, method, path, token) != 403, f"admin refused {method} {path}"


def test_signed_out_every_page_sends_to_login(app: Flask, client: FlaskClient) -> None:
    for _endpoint, method, path in ui_routes(app):
        if method != "GET":
            continue
        response = client.get(path)
        assert response.status_code == 302, f"{path} answered {response.status_code}"
        assert "/login" in response.headers["Location"]


def test_a_viewer_sees_no_trust_form_and_is_refused_by_post(
    app: Flask, client: FlaskClient, api: Any, personas: Any
) -> None:
    agent_id, _ = api.register_agent(personas.fleet)
    signed_in(client, app, OperatorRole.VIEWER)
    page = client.get(f"/agents/{agent_id}")
    assert page.status_code == 200
    response = client.post(
        f"/agents/{agent_id}/trust",
        data={"csrf_token": form_token(client, "/"), "delta": "0.5", "reason": "x"},
    )
    assert response.status_code == 403
    assert "needs the admin role" in response.get_data(as_text=True)


@pytest.mark.parametrize("role", [OperatorRole.VIEWER, OperatorRole.OPERATOR])
def test_the_users_page_is_for_admins(app: Flask, client: FlaskClient, role: str) -> None:
    signed_in(client, app, role)
    assert client.get("/users").status_code == 403
    token = form_token(client, "/")
    response = client.post(
        "/users", data={"csrf_token": token, "email": "x@example.com", "role": "admin"}
    )
    assert response.status_code == 403
    with app.app_context():
        assert (
            db.session.scalars(db.select(User).where(User.email == "x@example.com")).first() is None
        )
        db.session.remove()


def test_role_links_follow_the_role(app: Flask, client: FlaskClient) -> None:
    signed_in(client, app, OperatorRole.VIEWER)
    html = client.get("/").get_data(as_text=True)
    assert 'href="/users"' not in html
    assert re.search(r'data-role="viewer"', html)
