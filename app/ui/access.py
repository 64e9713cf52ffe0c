"""Who may do what in the console: operator roles, checked before every UI request.

Roles rank viewer < operator < admin. Reading needs a signed-in viewer, any other method
an operator, unless the view asks for more (or, like signing out, for less) with
``@requires``. One ``before_request`` check covers every route, so a new page cannot
forget it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import abort, current_app, request
from flask_login import current_user

from app.extensions import login_manager
from app.models import OperatorRole
from app.services.errors import NotPermitted

F = TypeVar("F", bound=Callable[..., Any])

RANK = {OperatorRole.VIEWER: 0, OperatorRole.OPERATOR: 1, OperatorRole.ADMIN: 2}
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Served to anyone: the sign-in page itself.
PUBLIC = frozenset({"ui.login"})


def requires(role: str) -> Callable[[F], F]:
    """The least role this view needs, for every method (instead of the default)."""

    def mark(view: F) -> F:
        view.required_role = role  # type: ignore[attr-defined]
        return view

    return mark


def required_role(endpoint: str | None, method: str) -> str | None:
    """The role a request to ``endpoint`` needs, or None when it is public."""
    if endpoint is None or endpoint in PUBLIC:
        return None
    view = current_app.view_functions.get(endpoint)
    marked = getattr(view, "required_role", None)
    if marked is not None:
        return marked
    return OperatorRole.VIEWER if method in READ_METHODS else OperatorRole.OPERATOR


def may(role: str) -> bool:
    """Whether the signed-in operator has at least ``role`` (for templates and views)."""
    if not current_user.is_authenticated:
        return False
    return RANK.get(current_user.role, -1) >= RANK[role]


def check_access() -> Any:
    """Before every console request: sign-in, then the role the route needs."""
    needed = required_role(request.endpoint, request.method)
    if needed is None:
        return None
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if not may(needed):
        raise NotPermitted(
            f"this needs the {needed} role; you are signed in as {current_user.role}"
        )
    return None


def refuse_nul() -> None:
    """No real value holds a NUL (PostgreSQL text cannot store one): answer 400 here, not a
    DataError (500) from whichever query the value reaches."""
    values = [request.path, *(v for _, v in request.args.items(multi=True))]
    if request.method not in READ_METHODS:
        values += [v for _, v in request.form.items(multi=True)]
    if any("\x00" in v for v in values):
        abort(400, "A NUL character is not allowed here.")
