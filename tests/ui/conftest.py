"""UI helpers: sign in through the real form, CSRF token included."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient

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


@pytest.fixture
def console(client: FlaskClient, operator: dict[str, str]) -> FlaskClient:
    """The test client, signed in as the operator."""
    response = sign_in(client, operator["email"], operator["password"])
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def text(response: Any) -> str:
    return response.get_data(as_text=True)
