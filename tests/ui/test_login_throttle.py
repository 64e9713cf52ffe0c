"""Sign-in throttling: failed sign-ins per account and per address, refused without a look
at the password, failing open when Redis is down."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.lib import ratelimit
from app.models import User
from app.services.auth import create_user
from tests.ui.conftest import csrf_token, text

PASSWORD = "correct horse battery"
THROTTLED = "Too many failed sign-ins for this account or from this address."


@pytest.fixture
def limit(app: Flask) -> Iterator[Callable[..., None]]:
    """Budgets of 3 failures per account and 5 per address an hour, for one test."""
    saved = dict(app.config)

    def configure(**overrides: Any) -> None:
        app.config.update(
            {
                "RATE_LIMIT_SIGN_IN_PER_ACCOUNT": "3/hour",
                "RATE_LIMIT_SIGN_IN_PER_ADDRESS": "5/hour",
                **overrides,
            }
        )
        ratelimit.init_app(app)

    yield configure
    app.config.clear()
    app.config.update(saved)
    ratelimit.init_app(app)


@pytest.fixture
def accounts(app: Flask) -> list[str]:
    """Three operator accounts sharing one password."""
    emails = ["ann@example.com", "bob@example.com", "cy@example.com"]
    with app.app_context():
        for email in emails:
            create_user(email, PASSWORD)
        db.session.remove()
    return emails


def browser(app: Flask, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def attempt(client: FlaskClient, email: str, password: str) -> Any:
    token = csrf_token(text(client.get("/login")))
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


def fail(client: FlaskClient, email: str, times: int) -> None:
    for _ in range(times):
        assert attempt(client, email, "wrong password").status_code == 401


def signed_in(client: FlaskClient) -> bool:
    return client.get("/").status_code == 200


def last_login_at(app: Flask, email: str) -> Any:
    with app.app_context():
        user = db.session.scalars(db.select(User).where(User.email == email)).one()
        value = user.last_login_at
        db.session.remove()
    return value


def test_it_refuses_an_account_after_its_failures_even_with_the_right_password(
    app: Flask, limit: Callable[..., None], accounts: list[str]
) -> None:
    limit()
    client = browser(app, "10.0.0.1")
    fail(client, accounts[0], 3)
    refused = attempt(client, accounts[0], PASSWORD)
    assert refused.status_code == 429
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    page = text(refused)
    assert THROTTLED in page and "Try again in 60 minutes." in page
    assert 'name="password"' in page  # the form is there, for later
    assert not signed_in(client)
    assert last_login_at(app, accounts[0]) is None  # the password was never checked
    # The same account from another address: still refused (the budget is the account's).
    assert attempt(browser(app, "10.0.0.2"), accounts[0], PASSWORD).status_code == 429
    # Other accounts from this address are not (2 address failures left).
    assert attempt(client, accounts[1], PASSWORD).status_code == 302


def test_a_throttled_answer_does_not_tell_whether_the_password_was_right(
    app: Flask, limit: Callable[..., None], accounts: list[str]
) -> None:
    limit()
    client = browser(app, "10.0.0.1")
    fail(client, accounts[0], 3)
    right, wrong = attempt(client, accounts[0], PASSWORD), attempt(client, accounts[0], "nope")

    def without_token(page: str) -> str:
        return re.sub(r'(name="csrf[-_]token"[^>]*value|content)="[^"]*"', "", page)

    assert right.status_code == wrong.status_code == 429
    assert right.headers["Retry-After"] == wrong.headers["Retry-After"]
    assert without_token(text(right)) == without_token(text(wrong))
    assert not signed_in(client)


def test_it_counts_the_account_by_its_normalised_email(
    app: Flask, limit: Callable[..., None], accounts: list[str]
) -> None:
    limit()
    client = browser(app, "10.0.0.1")
    fail(client, "ANN@example.com", 1)
    fail(client, " ann@EXAMPLE.com ", 1)
    fail(client, accounts[0], 1)
    assert attempt(client, accounts[0], PASSWORD).status_code == 429


def test_it_refuses_an_address_after_its_failures_over_every_account(
    app: Flask, limit: Callable[..., None], accounts: list[str]
) -> None:
    limit()
    attacker = browser(app, "10.0.0.9")
    fail(attacker, accounts[0], 2)
    fail(attacker, accounts[1], 2)
    fail(attacker, "nobody@example.com", 1)
    refused = attempt(attacker, accounts[2], PASSWORD)  # an account with no failures
    assert refused.status_code == 429 and THROTTLED in text(refused)
    assert not signed_in(attacker)
    # Its owner, elsewhere, signs in: other accounts' failures from other addresses do
    # not count against them.
    owner = browser(app, "10.0.0.1")
    response = attempt(owner, accounts[2], PASSWORD)
    assert response.status_code == 302 and signed_in(owner)


def test_a_successful_sign_in_starts_the_account_afresh(
    app: Flask, limit: Callable[..., None], accounts: list[str]
) -> None:
    limit(RATE_LIMIT_SIGN_IN_PER_ADDRESS="20/hour")
    client = browser(app, "10.0.0.1")
    fail(client, accounts[0], 2)
    assert attempt(client, accounts[0], PASSWORD).status_code == 302
    client.post("/logout", data={"csrf_token": csrf_token(text(client.get("/")))})
    assert not signed_in(client)
    fail(client, accounts[0], 3)  # three more failures are allowed, not one
    assert attempt(client, accounts[0], PASSWORD).status_code == 429


def test_it_lets_the_account_try_again_when_the_window_ends(
    app: Flask, limit: Callable[..., None], accounts: list[str]
) -> None:
    limit(RATE_LIMIT_SIGN_IN_PER_ACCOUNT="2/second")
    client = browser(app, "10.0.0.1")
    fail(client, accounts[0], 2)
    refused = attempt(client, accounts[0], PASSWORD)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert "Try again in 1 second." in text(refused)
    time.sleep(1.1)
    assert attempt(client, accounts[0], PASSWORD).status_code == 302


def test_it_fails_open_when_redis_is_down(
    app: Flask,
    limit: Callable[..., None],
    accounts: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    limit(RATE_LIMIT_REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens there
    client = browser(app, "10.0.0.1")
    with caplog.at_level(logging.WARNING, logger="app.lib.ratelimit"):
        fail(client, accounts[0], 6)  # wrong passwords are still refused: 401, not 429
        assert attempt(client, accounts[0], PASSWORD).status_code == 302
    assert signed_in(client)
    warnings = [r for r in caplog.records if r.name == "app.lib.ratelimit"]
    assert len(warnings) == 1 and "not enforced" in warnings[0].getMessage()


def test_it_does_not_throttle_when_rate_limits_are_off(
    app: Flask, limit: Callable[..., None], accounts: list[str]
) -> None:
    limit(RATE_LIMIT_ENABLED=False)
    client = browser(app, "10.0.0.1")
    fail(client, accounts[0], 25)
    assert attempt(client, accounts[0], PASSWORD).status_code == 302
