"""Aware-UTC time: the only clock the domain reads, so tests can pin it."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """Treat a naive datetime as UTC and convert an aware one to UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def isoformat(value: datetime | None) -> str | None:
    """ISO 8601 with an explicit offset, or None."""
    value = as_utc(value)
    return value.isoformat() if value is not None else None


def epoch_micros(value: datetime) -> int:
    """Microseconds since the epoch, for ordering keys."""
    value = as_utc(value)
    assert value is not None
    return int(value.timestamp() * 1_000_000)
