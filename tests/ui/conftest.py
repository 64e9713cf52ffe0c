"""UI helpers: sign in through the real form, CSRF token included."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.services.auth import create_user

CSRF_FIELD = re.compile(
    r'name="csrf_token" type="hidden" value="([^"]+)"|'
    r'name="csrf_token" value="([^"]+)"'
)
HTMX = {"HX-Request": "true"}


def csrf_token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = CSRF_FIELD.search(html) or re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return next(group for group in match.groups() if group)


def sign_in(client: FlaskClient, email: str, password: str, **query: str) -> Any:
    page = client.get("/login", query_string=query)
    token = csrf_token(page.get_data(as_text=True))
    return client.post(
        "/login",
        query_string=query,
        data={"email": email, "password": password, "csrf_token": token},
    )


ACCOUNT_PASSWORD = "correct horse battery"


def console_as(app: Flask, role: str, email: str | None = None) -> FlaskClient:
    """A new client signed in to a new account with ``role``.

    A client of its own rather than the ``client`` fixture, whose preserved request context
    would share ``g`` (and with it the signed-in user) with other clients' requests.
    """
    email = email or f"{role}@example.com"
    with app.app_context():
        create_user(email, ACCOUNT_PASSWORD, role=role)
        db.session.remove()
    client = app.test_client()
    response = sign_in(client, email, ACCOUNT_PASSWORD)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


@pytest.fixture
def console(client: FlaskClient, operator: dict[str, str]) -> FlaskClient:
    """The test client, signed in as the operator."""
    response = sign_in(client, operator["email"], operator["password"])
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def text(response: Any) -> str:
    return response.get_data(as_text=True)


def fail_tasks(
    api: Any,
    submitter: Any,
    agent: tuple[str, Any],
    count: int,
    error: str = "boom",
    **fields: Any,
) -> list[str]:
    """Submit ``count`` tasks, let the agent claim them and fail each for good.

    The agent must have ``count`` free slots and nothing else claimable; the ids come back
    in submission order.
    """
    submitted = [api.submit(submitter, max_retries=0, **fields)["task_id"] for _ in range(count)]
    agent_id, key = agent
    claimed = [t["task_id"] for t in api.claim(agent_id, key, max_tasks=count)]
    assert sorted(claimed) == sorted(submitted), claimed
    for task_id in submitted:
        response = api.post(
            f"/ains/tasks/{task_id}/fail",
            key,
            json={"error_message": error, "retryable": False},
        )
        assert response.status_code == 200 and response.get_json()["status"] == "FAILED"
    return submitted


def form_token(client: FlaskClient, path: str = "/dead-letter") -> str:
    """A CSRF token of the signed-in session, read from a page as a browser would."""
    return csrf_token(client.get(path).get_data(as_text=True))
