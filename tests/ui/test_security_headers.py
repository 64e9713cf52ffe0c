"""Security headers on the console, the API, static files and error pages."""

from __future__ import annotations

from flask.testing import FlaskClient

EXPECTED = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def check(response) -> str:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (name, response.headers.get(name))
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'self'"
    assert "http" not in csp  # no third-party origins
    return csp


def test_every_kind_of_response_has_them(client: FlaskClient) -> None:
    csp = check(client.get("/login"))
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    check(client.get("/ains/tasks"))  # 401 JSON
    check(client.get("/health"))
    check(client.get("/static/css/app.css"))
    check(client.get("/no/such/page"))
    check(client.get("/openapi.json"))


def test_only_the_swagger_page_allows_inline_styles(client: FlaskClient) -> None:
    csp = check(client.get("/docs"))
    assert "style-src 'self' 'unsafe-inline'" in csp
    assert "script-src 'self';" in csp


def test_console_pages_are_not_cached_and_https_gets_hsts(client: FlaskClient) -> None:
    page = client.get("/login")
    assert page.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in page.headers
    secure = client.get("/login", base_url="https://localhost")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_the_session_cookie_is_httponly_and_samesite(client: FlaskClient, operator: dict) -> None:
    from tests.ui.conftest import sign_in

    response = sign_in(
        client,
        operator["email"],
        operator["password"],
    )
    cookie = next(v for v in response.headers.getlist("Set-Cookie") if v.startswith("session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_forwarded_headers_count_only_behind_a_trusted_proxy(app) -> None:
    from app import create_app
    from app.config import TestConfig

    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    plain = app.test_client().get("/login", headers=forwarded)
    assert "Strict-Transport-Security" not in plain.headers  # a client cannot claim HTTPS

    class BehindOneProxy(TestConfig):
        TRUSTED_PROXY_COUNT = 1

    proxied = create_app(BehindOneProxy).test_client().get("/login", headers=forwarded)
    assert proxied.headers["Strict-Transport-Security"].startswith("max-age=")


def test_cookies_set_over_https_are_secure(client: FlaskClient, operator: dict) -> None:
    from tests.ui.conftest import csrf_token

    base = "https://localhost"
    page = client.get("/login", base_url=base)
    token = csrf_token(page.get_data(as_text=True))
    response = client.post(
        "/login",
        base_url=base,
        headers={"Referer": f"{base}/login"},  # Flask-WTF's strict check over HTTPS
        data={**operator, "remember": "y", "csrf_token": token},
    )
    assert response.status_code == 302
    cookies = response.headers.getlist("Set-Cookie")
    assert {c.split("=")[0] for c in cookies} >= {"session", "remember_token"}
    assert all("; Secure" in c for c in cookies), cookies
    plain = client.get("/login")
    assert all("Secure" not in c for c in plain.headers.getlist("Set-Cookie"))


def test_answers_carrying_a_secret_are_never_cached(client: FlaskClient, personas) -> None:
    made = client.post(
        "/ains/api-keys",
        json={"name": "n", "role": "client", "client_id": "c"},
        headers=personas.admin.headers,
    )
    assert made.status_code == 201 and made.headers["Cache-Control"] == "no-store"
    static = client.get("/static/css/app.css")
    assert static.headers.get("Cache-Control") != "no-store"
