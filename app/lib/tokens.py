"""Random identifiers and API key material."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

KEY_PREFIX = "ains"


def new_id(kind: str) -> str:
    """A random id with a readable prefix, e.g. ``task_3f2a...``."""
    return f"{kind}_{uuid.uuid4().hex}"


def generate_api_key() -> tuple[str, str]:
    """Return ``(full_key, lookup_prefix)``; only the prefix and a hash are ever stored."""
    lookup = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"{KEY_PREFIX}_{lookup}_{secret}", lookup


def split_api_key(key: str) -> str | None:
    """Return the lookup prefix of a well-formed key, else None."""
    parts = key.split("_", 2)
    if (
        len(parts) != 3
        or parts[0] != KEY_PREFIX
        or len(parts[1]) != 12
        or parts[1].strip("0123456789abcdef")
        or not parts[2]
    ):
        return None
    return parts[1]


def hash_api_key(key: str) -> str:
    """SHA-256 of the key.

    The key carries 256 bits of randomness, so a fast unsalted hash is enough to make a
    leaked table useless, and it does not tie stored keys to SECRET_KEY (which may rotate).
    """
    return hashlib.sha256(key.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(a.encode(), b.encode())
