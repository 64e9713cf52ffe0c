"""Signing in and out: required login, bad passwords, CSRF, no open redirects."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import User
from tests.ui.conftest import HTMX, csrf_token, sign_in, text


@pytest.mark.parametrize("path", ["/", "/tasks", "/tasks/task_x", "/agents"])
def test_it_sends_anonymous_visitors_to_the_login_page(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response.location.startswith("/login?next=")
    page = client.get(response.location)
    assert page.status_code == 200
    assert "Please sign in to continue." in text(page)
    assert 'name="password"' in text(page)


def test_it_keeps_the_query_string_in_next(client: FlaskClient) -> None:
    response = client.get("/tasks?status=FAILED")
    assert response.location == "/login?next=/tasks?status%3DFAILED"


def test_it_makes_htmx_navigate_to_the_login_page(client: FlaskClient) -> None:
    response = client.get("/", headers=HTMX)
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?next=/"


def test_it_signs_in_and_goes_to_next(client: FlaskClient, operator: dict[str, str]) -> None:
    response = sign_in(client, operator["email"], operator["password"], next="/agents")
    assert response.status_code == 302
    assert response.location == "/agents"
    page = client.get("/agents")
    assert page.status_code == 200
    assert operator["email"] in text(page)


def test_it_signs_in_case_insensitively_on_the_email(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    response = sign_in(client, operator["email"].upper(), operator["password"])
    assert response.status_code == 302 and response.location == "/"


def test_it_refuses_a_wrong_password(client: FlaskClient, operator: dict[str, str]) -> None:
    response = sign_in(client, operator["email"], "wrong password")
    assert response.status_code == 401
    body = text(response)
    assert "That email and password do not match an operator account." in body
    assert f'value="{operator["email"]}"' in body  # the email is kept, the password is not
    assert client.get("/").status_code == 302


def test_it_refuses_an_unknown_email(client: FlaskClient, operator: dict[str, str]) -> None:
    response = sign_in(client, "nobody@example.com", operator["password"])
    assert response.status_code == 401
    assert client.get("/").status_code == 302


def test_it_refuses_an_inactive_operator(
    app: Flask, client: FlaskClient, operator: dict[str, str]
) -> None:
    with app.app_context():
        db.session.scalars(db.select(User)).one().active = False
        db.session.commit()
    response = sign_in(client, operator["email"], operator["password"])
    assert response.status_code == 401


def test_it_asks_for_both_fields(client: FlaskClient) -> None:
    token = csrf_token(text(client.get("/login")))
    response = client.post("/login", data={"email": "", "password": "", "csrf_token": token})
    assert response.status_code == 422
    assert "This field is required." in text(response)


def test_it_refuses_a_login_post_without_csrf_token(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    response = client.post(
        "/login", data={"email": operator["email"], "password": operator["password"]}
    )
    assert response.status_code == 400
    assert "The form was stale or did not come from this site." in text(response)
    assert client.get("/").status_code == 302


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "//evil.example/tasks",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "evil.example",
    ],
)
def test_it_ignores_a_next_that_leaves_the_site(
    client: FlaskClient, operator: dict[str, str], target: str
) -> None:
    response = sign_in(client, operator["email"], operator["password"], next=target)
    assert response.status_code == 302
    assert response.location == "/"


def test_it_does_not_put_a_foreign_next_into_the_form(client: FlaskClient) -> None:
    body = text(client.get("/login", query_string={"next": "//evil.example"}))
    assert "evil.example" not in body


def test_it_sends_a_signed_in_operator_from_login_to_the_dashboard(console: FlaskClient) -> None:
    response = console.get("/login")
    assert response.status_code == 302 and response.location == "/"


def test_it_signs_out_only_by_post_with_csrf(console: FlaskClient) -> None:
    assert console.get("/logout").status_code == 405
    assert console.post("/logout").status_code == 400
    assert console.get("/").status_code == 200  # still signed in

    token = csrf_token(text(console.get("/")))
    response = console.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302 and response.location == "/login"
    assert "You are signed out." in text(console.get("/login"))
    assert console.get("/").status_code == 302


def test_it_accepts_the_csrf_header_that_htmx_sends(console: FlaskClient) -> None:
    page = text(console.get("/"))
    token = csrf_token(page[page.index('<meta name="csrf-token"') :])
    response = console.post("/logout", headers={**HTMX, "X-CSRFToken": token})
    assert response.status_code == 302
