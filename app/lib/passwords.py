"""Operator password hashing: Argon2id, with older werkzeug hashes upgraded at sign-in."""

from __future__ import annotations

import contextlib

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from werkzeug.security import check_password_hash

# OWASP's Argon2id baseline: 19 MiB, 2 passes, 1 lane (about 20 ms here per hash).
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified against when the account does not exist, so the answer takes as long.
_DUMMY = HASHER.hash("not a password of anyone")


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored``; None (no such account) costs the same time."""
    if stored is None:
        with contextlib.suppress(VerificationError):
            HASHER.verify(_DUMMY, password)
        return False
    if not stored.startswith("$argon2"):
        # Accounts made before Argon2 (werkzeug's scrypt/pbkdf2): still accepted, then
        # rehashed by the caller (needs_rehash is true for them).
        return check_password_hash(stored, password)
    try:
        return HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True for legacy hashes and Argon2 hashes made with weaker parameters."""
    if not stored.startswith("$argon2"):
        return True
    try:
        return HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True
