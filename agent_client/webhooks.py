"""Checking AINS webhook deliveries on the receiving side.

Each delivery is signed: ``X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the raw body>``
under the webhook's secret. The body carries the event's ``timestamp`` (signed with it), so a
receiver can drop replays of old deliveries, and ``X-Webhook-Id`` (also ``event_id`` in the
body) is the same on every retry and redelivery, so it can drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any


class InvalidSignature(ValueError):
    """The body was not signed with this secret, or is too old."""


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True if ``header`` is the signature of the raw ``body`` under ``secret``.

    Pass the body exactly as received (bytes, before any JSON parsing).
    """
    if not header or not header.startswith("sha256="):
        return False
    if isinstance(body, str):
        body = body.encode()
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header[len("sha256=") :].strip().lower())


def verify_event(
    secret: str,
    body: bytes,
    header: str | None,
    *,
    max_age_seconds: float | None = 300,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The parsed event if the signature is valid and it is recent; InvalidSignature if not.

    ``max_age_seconds`` bounds how old the event's signed ``timestamp`` may be (None: any
    age, e.g. for redeliveries of old events); de-duplicate on ``event_id`` as well.
    """
    if not verify_signature(secret, body, header):
        raise InvalidSignature("the X-Webhook-Signature does not match the body")
    event = json.loads(body)
    if max_age_seconds is not None:
        try:
            sent = datetime.fromisoformat(event["timestamp"])
        except (KeyError, TypeError, ValueError):
            raise InvalidSignature("the event has no valid timestamp") from None
        age = ((now or datetime.now(UTC)) - sent).total_seconds()
        if age > max_age_seconds:
            raise InvalidSignature(f"the event is {age:.0f}s old (limit {max_age_seconds:g}s)")
    return event
