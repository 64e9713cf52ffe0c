"""Page or fragment: one URL serves both, chosen by the HX-Request header.

Following the htmx docs, every response that depends on HX-Request says so in ``Vary``,
and history-restore requests get the full page, since htmx swaps the whole body with it.
"""

from __future__ import annotations

from typing import Any

from flask import Response, make_response, render_template, request


def is_htmx() -> bool:
    """Whether htmx sent this request (any kind)."""
    return request.headers.get("HX-Request") == "true"


def wants_fragment() -> bool:
    """Whether htmx asked for a region of the page rather than the whole page."""
    return is_htmx() and request.headers.get("HX-History-Restore-Request") != "true"


def render_region(page: str, fragment: str, /, *, status: int = 200, **context: Any) -> Response:
    """The full ``page``, or only its swappable ``fragment`` when htmx asks for it."""
    template = fragment if wants_fragment() else page
    response = make_response(render_template(template, **context), status)
    response.vary.add("HX-Request")
    # Operator data: browsers may keep it but must ask again; shared caches must not keep it.
    response.headers.setdefault("Cache-Control", "private, no-cache")
    return response
