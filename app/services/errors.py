"""Domain exceptions; api/errors.py and the UI map them to responses."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a service raises on purpose."""

    code = "error"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class NotAuthenticated(DomainError):
    code = "unauthorized"


class NotPermitted(DomainError):
    code = "forbidden"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class StaleAttempt(Conflict):
    """A report from an attempt that is no longer the task's current one."""

    code = "stale_attempt"


class CancelRequested(Conflict):
    """A report on a running task that a client asked to cancel."""

    code = "cancel_requested"


class InvalidInput(DomainError):
    code = "validation_error"


def invalid(field: str, message: str) -> InvalidInput:
    """A 422 about one field: ``"<field>: <message>"``, with the field named in details."""
    return InvalidInput(f"{field}: {message}", [{"field": field, "message": message}])
