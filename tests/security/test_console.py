"""The console under attack: posts without CSRF tokens, open redirects, security headers."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from flask import Flask

from tests.security.conftest import OPERATOR, Http, World, console_login, csrf_token

CONVERTER = re.compile(r"<(?:(?P<conv>[a-z]+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>[a-z_]+)>")


def console_posts(app: Flask) -> list[str]:
    """Every console rule that accepts POST (so a new form is covered without a test edit)."""
    return sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("ui.") and "POST" in (rule.methods or set())
    )


def fill(rule: str, world: World) -> str:
    values = {
        "task_id": world.task_id,
        "chain_id": world.chain_id,
        "schedule_id": world.schedule_id,
        "template_id": world.template_id,
        "webhook_id": world.webhook_id,
        "delivery_id": world.delivery_id,
        "agent_id": world.agent_id,
        "key_id": "key_unknown",
        "user_id": "1",
    }

    def one(match: re.Match[str]) -> str:
        if match["conv"] == "any":
            return match["args"].split(",")[0].strip()
        assert match["name"] in values, f"tests/security/test_console.py cannot fill {rule}"
        return values[match["name"]]

    return CONVERTER.sub(one, rule)


def test_it_refuses_every_console_post_without_a_csrf_token(
    app: Flask, http: Http, world: World, console: requests.Session
) -> None:
    rules = console_posts(app)
    assert "/login" in rules and "/tasks/<task_id>/cancel" in rules
    for rule in rules:
        url = http.base + fill(rule, world)
        attempts = {
            "form without token": {"data": {"reason": "csrf"}},
            "wrong token": {"data": {"csrf_token": "forged", "reason": "csrf"}},
            "htmx without header": {"headers": {"HX-Request": "true"}, "data": {}},
            "htmx wrong header": {"headers": {"HX-Request": "true", "X-CSRFToken": "forged"}},
            "json body": {"json": {"reason": "csrf"}},
        }
        for name, kwargs in attempts.items():
            response = console.post(url, timeout=30, allow_redirects=False, **kwargs)
            assert response.status_code == 400, (rule, name, response.status_code)
            assert "did not come from this site" in response.text, (rule, name)
    # Nothing happened: the task the cancel forms aimed at still runs.
    task = http.ok("GET", f"/ains/tasks/{world.task_id}", world.keys.client)
    assert task["status"] == "ACTIVE"


def test_it_refuses_a_token_from_another_session(http: Http, world: World) -> None:
    """A token is bound to its session: one lifted from another browser does not pass."""
    victim = console_login(http.base)
    attacker = requests.Session()
    stolen = csrf_token(attacker.get(f"{http.base}/login", timeout=30).text)
    response = victim.post(
        f"{http.base}/schedules/{world.schedule_id}/pause",
        data={"csrf_token": stolen},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 400


def test_it_accepts_the_htmx_header_token(http: Http, world: World) -> None:
    """The control: the same HTMX post with the page's token in its header goes through."""
    session = console_login(http.base)
    page = session.get(f"{http.base}/schedules/{world.schedule_id}", timeout=30)
    response = session.post(
        f"{http.base}/schedules/{world.schedule_id}/pause",
        headers={"HX-Request": "true", "X-CSRFToken": csrf_token(page.text)},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code in (200, 204, 302, 303), response.text[:300]
    schedule = http.ok("GET", f"/aitp/tasks/schedule/{world.schedule_id}", world.keys.client)
    assert schedule["status"] == "PAUSED"
    http.ok("POST", f"/aitp/tasks/schedule/{world.schedule_id}/resume", world.keys.client)


OFF_SITE = [
    "//evil.com",
    "//evil.com/path",
    "/\\evil.com",
    "\\\\evil.com",
    "/\\/evil.com",
    "https://evil.com",
    "http:evil.com",
    "https:/evil.com",
    "/%2F%2Fevil.com",
    "%2F%2Fevil.com",
    "/%5Cevil.com",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "/\tevil.com",
    "/\t/evil.com",
    "/\n/evil.com",
    "\x00//evil.com",
    " //evil.com",
    "///evil.com",
    "/.//evil.com",
    "/@evil.com",
    "//evil.com@127.0.0.1",
    "//127.0.0.1@evil.com",
    "/%09/evil.com",
    "//\u3002evil.com",
    "https://127.0.0.1.evil.com/",
]


def assert_same_site(base: str, response: requests.Response, payload: str) -> None:
    assert response.status_code in (302, 303), (payload, response.status_code)
    location = response.headers["Location"]
    target = urlsplit(urljoin(base + "/login", location))
    assert target.scheme in ("http", "https"), (payload, location)
    assert target.netloc == urlsplit(base).netloc, (payload, location)
    # Browsers read a backslash or a second slash as another host even on a same-site URL.
    assert not location.startswith(("//", "/\\", "\\")), (payload, location)
    assert "evil" not in target.netloc and "\\" not in location, (payload, location)


@pytest.mark.parametrize("payload", OFF_SITE)
def test_it_never_redirects_off_site_after_login(http: Http, world: World, payload: str) -> None:
    session = requests.Session()
    page = session.get(f"{http.base}/login", params={"next": payload}, timeout=30)
    if "\x00" in payload:
        assert page.status_code == 400  # a NUL is refused outright: there is nothing to follow
        return
    assert page.status_code == 200
    response = session.post(
        f"{http.base}/login",
        params={"next": payload},
        data={**OPERATOR, "csrf_token": csrf_token(page.text)},
        allow_redirects=False,
        timeout=30,
    )
    assert_same_site(http.base, response, payload)
    # Signed in already, /login?next=... redirects at once: the same rule applies.
    again = session.get(
        f"{http.base}/login", params={"next": payload}, allow_redirects=False, timeout=30
    )
    assert_same_site(http.base, again, payload)


def test_it_follows_a_safe_next(http: Http, world: World) -> None:
    """The control: a path on this site is where the login sends you."""
    session = requests.Session()
    page = session.get(f"{http.base}/login", params={"next": "/tasks?status=FAILED"}, timeout=30)
    response = session.post(
        f"{http.base}/login",
        params={"next": "/tasks?status=FAILED"},
        data={**OPERATOR, "csrf_token": csrf_token(page.text)},
        allow_redirects=False,
        timeout=30,
    )
    assert response.headers["Location"].endswith("/tasks?status=FAILED")


# The security headers every response carries (app/lib/security_headers.py, issue 8).
EXPECTED_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy")


def test_it_sends_security_headers_on_every_kind_of_response(
    http: Http, world: World, console: requests.Session
) -> None:
    key = world.keys.client
    responses = {
        "api json": http.call("GET", "/ains/tasks", key),
        "api 401": http.call("GET", "/ains/tasks"),
        "api 404": http.call("GET", "/ains/tasks/nope", key),
        "api 413": http.call("POST", "/ains/tasks", key, data=b"x" * (600 * 1024)),
        "api 422": http.call("GET", "/ains/tasks", key, params={"limit": "x"}),
        "openapi": http.call("GET", "/openapi.json"),
        "docs": http.call("GET", "/docs"),
        "health": http.call("GET", "/health"),
        "login page": http.call("GET", "/login"),
        "redirect to login": http.call("GET", "/tasks"),
        "console page": console.get(f"{http.base}/tasks", timeout=30),
        "console fragment": console.get(
            f"{http.base}/tasks", headers={"HX-Request": "true"}, timeout=30
        ),
        "console 404": console.get(f"{http.base}/tasks/nope", timeout=30),
        "console 400": console.post(f"{http.base}/logout", timeout=30, allow_redirects=False),
        "unknown path": http.call("GET", "/no/such/page"),
        "static css": http.call("GET", "/static/css/app.css"),
        "static js": http.call("GET", "/static/js/app.js"),
        "metrics": http.call("GET", "/metrics"),
    }
    for kind, response in responses.items():
        missing = [h for h in EXPECTED_HEADERS if h not in response.headers]
        assert not missing, f"{kind} ({response.status_code}) lacks {missing}"
        assert response.headers["X-Content-Type-Options"] == "nosniff", kind
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp, kind
        assert "'unsafe-inline'" not in csp.split("script-src", 1)[-1].split(";")[0], kind
        assert "*" not in csp, f"{kind}: a wildcard source"
