"""Error pages for the console; the API keeps its JSON errors (app/api/errors.py)."""

from __future__ import annotations

import logging

from flask import Response, make_response, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from app.extensions import db
from app.services.errors import DomainError, NotAuthenticated, NotFound, NotPermitted
from app.ui import bp

log = logging.getLogger(__name__)

STATUS_OF: dict[type[DomainError], int] = {NotAuthenticated: 401, NotPermitted: 403, NotFound: 404}
TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    500: "Something went wrong",
}


def error_page(status: int, message: str) -> Response:
    title = TITLES.get(status, "Error")
    html = render_template("ui/errors/error.html", status=status, title=title, message=message)
    return make_response(html, status)


@bp.errorhandler(404)
def not_found(exc: HTTPException) -> Response:
    return error_page(404, exc.description or "There is nothing at this address.")


@bp.errorhandler(CSRFError)
def csrf_failed(exc: CSRFError) -> Response:
    return error_page(
        400, "The form was stale or did not come from this site. Reload the page and try again."
    )


@bp.errorhandler(DomainError)
def domain_error(exc: DomainError) -> Response:
    db.session.rollback()
    return error_page(STATUS_OF.get(type(exc), 400), exc.message)


@bp.errorhandler(Exception)
def unexpected(exc: Exception) -> Response | HTTPException:
    if isinstance(exc, HTTPException):
        return exc
    db.session.rollback()
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_page(500, "The server failed to show this page. The error was logged.")
