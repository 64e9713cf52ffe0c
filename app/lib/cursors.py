"""Opaque keyset-pagination cursors."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime


class BadCursor(ValueError):
    """The cursor was not made by this server."""


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """Cursor pointing after the row (created_at, id) in newest-first order."""
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of encode_cursor; raise BadCursor on anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        when = datetime.fromisoformat(created)
        if when.tzinfo is not None:
            when.astimezone(UTC)  # a forged 9999-12-31T23:59-14:00 does not exist in UTC
        return when, str(row_id)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadCursor(f"cursor is not valid: {cursor[:40]!r}") from exc
