"""One error shape for the JSON API: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from flask_limiter import RateLimitExceeded
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from app.extensions import db
from app.lib.ratelimit import refusal
from app.services.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    NotPermitted,
)

log = logging.getLogger(__name__)


def status_of(exc: DomainError) -> int:
    """The HTTP status of a domain error, through its class or a base class."""
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 400


STATUS_OF: dict[type[DomainError], int] = {
    NotAuthenticated: 401,
    NotPermitted: 403,
    NotFound: 404,
    Conflict: 409,
    InvalidInput: 422,
}


class BadRequestBody(DomainError):
    """The body is not JSON, or not a JSON object."""

    code = "bad_request"


def error_response(
    status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details or []}})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ains"'
    return response


def validation_details(exc: ValidationError, prefix: str = "") -> list[dict[str, Any]]:
    """Pydantic errors as [{field, message}], naming each field by its path."""
    details = []
    for err in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in err["loc"])
        field = f"{prefix}{path}" if path else (prefix.rstrip(".") or None)
        details.append({"field": field, "message": err["msg"]})
    return details


def wants_json() -> bool:
    """API paths and JSON clients get JSON errors; browsers get the UI's pages."""
    path = request.path
    return (
        path.startswith(("/ains/", "/aitp/", "/health", "/openapi"))
        or request.accept_mimetypes.best == "application/json"
    )


# A client still sending a refused body sees the connection reset, not the 413, when the
# server closes on unread data: read and drop up to this much first (a lingering close).
DRAIN_LIMIT_BYTES = 8 * 1024 * 1024


def drain_body() -> None:
    """Read what is left of the request body, up to DRAIN_LIMIT_BYTES, and drop it."""
    stream = request.environ.get("wsgi.input")
    declared = request.content_length
    if stream is None or (declared is not None and declared > DRAIN_LIMIT_BYTES):
        return  # larger still: closing on it is cheaper than reading it
    left = DRAIN_LIMIT_BYTES if declared is None else declared
    try:
        while left > 0:
            chunk = stream.read(min(65536, left))
            if not chunk:
                return
            left -= len(chunk)
    except (OSError, ValueError):
        return  # the client went away: nothing to answer


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def domain_error(exc: DomainError) -> Response:
        db.session.rollback()
        status = 400 if isinstance(exc, BadRequestBody) else status_of(exc)
        return error_response(status, exc.code, exc.message, exc.details)

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded) -> Response:
        # Raised by Flask-Limiter before the view: nothing was read or written.
        refused = refusal()
        response = error_response(429, "rate_limited", refused.message, refused.details)
        response.headers["Retry-After"] = str(refused.retry_after)
        return response

    @app.errorhandler(ValidationError)
    def pydantic_error(exc: ValidationError) -> Response:
        db.session.rollback()
        details = validation_details(exc)
        fields = ", ".join(sorted({d["field"] or "body" for d in details}))
        return error_response(422, "validation_error", f"invalid fields: {fields}", details)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response | HTTPException:
        if exc.code == 413:
            drain_body()
        if not wants_json():
            return exc
        db.session.rollback()
        code = {413: "payload_too_large", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.code or 500, (exc.name or "error").lower().replace(" ", "_")
        )
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        if exc.code == 429 and exc.response is not None and "Retry-After" in exc.response.headers:
            response.headers["Retry-After"] = exc.response.headers["Retry-After"]
        return response

    @app.errorhandler(OperationalError)
    def database_unavailable(exc: OperationalError) -> Response:
        # A lost connection, a restarting server, a lock timeout: nothing was committed,
        # and the same request may well succeed in a moment.
        db.session.rollback()
        log.warning("database error on %s %s: %s", request.method, request.path, exc.orig)
        response = error_response(
            503, "database_unavailable", "the database did not answer; nothing was changed"
        )
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        db.session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed; the error was logged")
