"""Security headers on every response: the console, the API, static files and errors.

The console loads nothing from other origins and has no inline script or style, so the
Content-Security-Policy can be strict. Swagger UI on /docs styles itself inline, so that
one page allows inline styles (still no inline script).
"""

from __future__ import annotations

from flask import Flask, Response, has_request_context, request
from flask.sessions import SecureCookieSessionInterface

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
# Sent over HTTPS only: a browser then refuses plain HTTP to this host for a year.
HSTS = "max-age=31536000; includeSubDomains"


def add_security_headers(response: Response) -> Response:
    response.headers.setdefault(
        "Content-Security-Policy", DOCS_CSP if request.endpoint == "api.docs" else CSP
    )
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
        secure_cookies(response)
    if request.endpoint != "static":
        # Console pages and API answers hold operational data and, now and then, a secret
        # shown once (a new API key, a webhook secret): never kept by a cache.
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def secure_cookies(response: Response) -> None:
    """Over HTTPS every cookie set (session, remember-me) is marked Secure, whatever
    SESSION_COOKIE_SECURE says: it can then never travel over plain HTTP."""
    cookies = response.headers.getlist("Set-Cookie")
    if not cookies:
        return
    response.headers.remove("Set-Cookie")
    for cookie in cookies:
        marked = any(part.strip().lower() == "secure" for part in cookie.split(";"))
        response.headers.add("Set-Cookie", cookie if marked else f"{cookie}; Secure")


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, marked Secure whenever the request came over HTTPS
    (the session cookie is written after every after_request hook has run)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or (has_request_context() and request.is_secure)


def install(app: Flask) -> None:
    """Call before other extensions register their after_request hooks (Flask-Login's sets
    the remember-me cookie): hooks run in reverse order, so this one sees their cookies."""
    app.session_interface = SessionInterface()
    app.after_request(add_security_headers)
