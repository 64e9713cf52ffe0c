"""Operator passwords: Argon2id at rest, older hashes upgraded at sign-in, unknown emails
checked as slowly as known ones."""

from __future__ import annotations

import time

from flask import Flask
from werkzeug.security import generate_password_hash

from app.extensions import db
from app.models import User
from app.services import auth
from app.services.errors import InvalidInput

PASSWORD = "correct horse battery"


def test_passwords_are_stored_as_argon2id(app_ctx: Flask) -> None:
    user = auth.create_user("a@example.com", PASSWORD)
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash
    assert auth.authenticate_user("a@example.com", PASSWORD) is not None
    assert auth.authenticate_user("a@example.com", PASSWORD + "x") is None


def test_a_legacy_hash_still_signs_in_and_is_upgraded(app_ctx: Flask) -> None:
    user = auth.create_user("old@example.com", PASSWORD)
    user.password_hash = generate_password_hash(PASSWORD)  # werkzeug scrypt, as before
    db.session.commit()
    assert auth.authenticate_user("old@example.com", "wrong password") is None
    assert db.session.get(User, user.id).password_hash.startswith("scrypt:")
    assert auth.authenticate_user("old@example.com", PASSWORD) is not None
    upgraded = db.session.get(User, user.id).password_hash
    assert upgraded.startswith("$argon2id$")
    assert auth.authenticate_user("old@example.com", PASSWORD) is not None


def test_an_unknown_email_costs_a_hash_check_too(app_ctx: Flask) -> None:
    auth.create_user("known@example.com", PASSWORD)

    def median(email: str) -> float:
        times = []
        for _ in range(7):
            start = time.perf_counter()
            assert auth.authenticate_user(email, "wrong password") is None
            times.append(time.perf_counter() - start)
        return sorted(times)[3]

    known, unknown = median("known@example.com"), median("nobody@example.com")
    # Both pay for an Argon2 check (about 20-40 ms); without the dummy check the unknown
    # email would answer in well under a millisecond.
    assert unknown > known / 3, (known, unknown)


def test_a_deactivated_account_cannot_sign_in(app_ctx: Flask) -> None:
    user = auth.create_user("gone@example.com", PASSWORD)
    user.active = False
    db.session.commit()
    assert auth.authenticate_user("gone@example.com", PASSWORD) is None


def test_password_rules(app_ctx: Flask) -> None:
    for bad in ("short", "x" * 1025):
        try:
            auth.create_user("p@example.com", bad)
        except InvalidInput as exc:
            assert "password" in exc.message
        else:
            raise AssertionError(f"{len(bad)}-character password accepted")
    try:
        auth.create_user("p@example.com", PASSWORD, role="owner")
    except InvalidInput as exc:
        assert "role" in exc.message
    else:
        raise AssertionError("unknown role accepted")


def test_changing_a_password_ends_existing_sessions(app_ctx: Flask) -> None:
    user = auth.create_user("s@example.com", PASSWORD)
    before = user.get_id()
    auth.set_password("s@example.com", "another good password")
    assert db.session.get(User, user.id).get_id() != before
