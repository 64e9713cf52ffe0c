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


def encode_keyset(sort: str, values: list[datetime | int | str]) -> str:
    """Cursor after a row in any keyset order: the sort's name and the row's key values."""
    key = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    raw = json.dumps({"sort": sort, "key": key}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_keyset(cursor: str, sort: str, kinds: tuple[type, ...]) -> list[datetime | int | str]:
    """Inverse of encode_keyset for ``sort`` whose key has these types; BadCursor on
    anything else, a cursor of another sort included."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(data, dict) or data.get("sort") != sort:
            raise ValueError("made for another order")
        key = data["key"]
        if not isinstance(key, list) or len(key) != len(kinds):
            raise ValueError("wrong key")
        values: list[datetime | int | str] = []
        for kind, value in zip(kinds, key, strict=True):
            if kind is datetime:
                when = datetime.fromisoformat(value)
                if when.tzinfo is not None:
                    when.astimezone(UTC)
                values.append(when)
            elif kind is int:
                if not isinstance(value, int) or isinstance(value, bool) or abs(value) >= 2**63:
                    raise ValueError("not an integer")
                values.append(value)
            else:
                values.append(str(value))
        return values
    except (ValueError, TypeError, OverflowError, KeyError) as exc:
        raise BadCursor(f"cursor is not valid: {cursor[:40]!r}") from exc
