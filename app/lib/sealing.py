"""Secrets we must read back (webhook signing secrets), encrypted at rest.

A signing secret cannot be stored as a hash: the server needs it to sign. It is sealed
with Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from the app's SECRET_KEY;
SECRET_KEY_FALLBACKS still open what older keys sealed, so SECRET_KEY can be rotated.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# Keeps the derived key apart from other uses of SECRET_KEY (session signing).
CONTEXT = b"ains webhook secret sealing v1"


class Unsealable(ValueError):
    """No configured key opens the token (SECRET_KEY changed without a fallback)."""


def _fernet(secret_key: str) -> Fernet:
    digest = hashlib.sha256(CONTEXT + b"\0" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


class Sealer:
    """Seals with the first key, opens with any of them."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._fernet = MultiFernet([_fernet(k) for k in keys])

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise Unsealable(
                "cannot decrypt the stored secret: SECRET_KEY changed and the old key is not "
                "in SECRET_KEY_FALLBACKS; rotate the webhook's secret"
            ) from None
