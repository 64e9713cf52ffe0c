"""SQL and template injection strings: stored as given, read back unchanged, shown escaped.

One string carries every probe: SQL quoting, a script tag, an attribute break-out, and
Jinja, JavaScript-template and Ruby-style expressions whose value (1234321) would show if
anything evaluated them. It goes into every free-text field the API stores; the API must
give it back byte for byte and the console must print it as text.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.security.conftest import Http, World
from tests.security.operations import assert_spec_error

SQL = "' OR 1=1 --"
SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = "\"'><img src=x onerror=alert(2)>"
EXPRESSIONS = "{{1111*1111}} ${1111*1111} #{1111*1111} {% print 1111*1111 %} {{config}}"
EVIL = f"{SQL}; DROP TABLE tasks; -- {SCRIPT} {ATTRIBUTE} {EXPRESSIONS}"
EVALUATED = "1234321"  # 1111*1111: shows only if some template engine ran the probe
# How the script tag may appear once escaped: as HTML text, or inside escaped JSON.
ESCAPED_FORMS = ("&lt;script&gt;alert(1)&lt;/script&gt;", "\\u003cscript\\u003e")


class Stored:
    """The ids of what was stored with EVIL in it, and what the API gave back."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}


@pytest.fixture(scope="module")
def stored(http: Http, world: World) -> Stored:
    """EVIL in every free-text field, through the API; each read back unchanged."""
    keys, out = world.keys, Stored()
    client, agent = keys.client, keys.agent

    registered = http.ok(
        "POST",
        "/ains/agents",
        keys.fleet,
        json={
            "display_name": EVIL,
            "public_key": EVIL,
            "capabilities": [
                {"name": "evil-v1", "description": EVIL, "version": EVIL[:50], "pricing_model": SQL}
            ],
        },
    )
    assert registered["agent"]["display_name"] == EVIL
    out.ids["agent"] = registered["agent_id"]
    cap = http.ok(
        "POST",
        f"/ains/agents/{world.agent_id}/capabilities",
        agent,
        json={"name": "report-v1", "description": EVIL},
    )
    assert cap["description"] == EVIL

    task = http.ok(
        "POST",
        "/ains/tasks",
        client,
        json={
            "task_type": EVIL,
            "capability_required": "report-v1",
            "input_data": {EVIL: EVIL, "list": [EVIL, {"k": EVIL}]},
        },
        headers={"Idempotency-Key": EVIL},
    )
    out.ids["task"] = task["task_id"]
    claimed = http.ok("POST", f"/ains/agents/{world.agent_id}/tasks/claim", agent, json={})
    assert out.ids["task"] in [t["task_id"] for t in claimed["tasks"]]
    http.ok(
        "POST",
        f"/ains/tasks/{out.ids['task']}/progress",
        agent,
        json={"progress": 5, "message": EVIL},
    )
    http.ok(
        "POST",
        f"/ains/tasks/{out.ids['task']}/fail",
        agent,
        json={"error_message": EVIL, "retryable": False},
    )
    read = http.ok("GET", f"/ains/tasks/{out.ids['task']}", client)
    assert (read["task_type"], read["input_data"]) == (
        EVIL,
        {EVIL: EVIL, "list": [EVIL, {"k": EVIL}]},
    )
    assert read["status"] == "FAILED" and read["error_message"] == EVIL

    admin_task = http.ok(
        "POST",
        "/ains/tasks",
        keys.admin,
        json={"client_id": EVIL, "task_type": "r", "capability_required": "idle-v1"},
    )
    out.ids["admin_task"] = admin_task["task_id"]
    assert admin_task["client_id"] == EVIL
    cancelled = http.ok(
        "POST", f"/ains/tasks/{admin_task['task_id']}/cancel", keys.admin, json={"reason": EVIL}
    )
    assert cancelled["status"] == "CANCELLED"

    chain = http.ok(
        "POST",
        "/ains/task-chains",
        client,
        json={"name": EVIL, "steps": [{"task_type": EVIL, "capability_required": "idle-v1"}]},
    )
    assert chain["name"] == EVIL
    out.ids["chain"] = chain["chain_id"]

    template = http.ok(
        "POST",
        "/ains/task-templates",
        client,
        json={
            "name": EVIL,
            "description": EVIL,
            "task_type": EVIL,
            "capability_required": "idle-v1",
            "default_input_data": {"body": EVIL},
            "input_schema": {"type": "object", "description": EVIL},
        },
    )
    assert (template["name"], template["description"]) == (EVIL, EVIL)
    assert template["default_input_data"] == {"body": EVIL}
    out.ids["template"] = template["template_id"]

    schedule = http.ok(
        "POST",
        "/aitp/tasks/schedule",
        client,
        json={
            "cron_expression": "0 3 * * *",
            "description": EVIL,
            "task_type": EVIL,
            "capability_required": "idle-v1",
            "input_data": {"q": EVIL},
        },
    )
    assert (schedule["description"], schedule["input_data"]) == (EVIL, {"q": EVIL})
    out.ids["schedule"] = schedule["schedule_id"]

    hook = http.ok(
        "POST",
        "/ains/webhooks",
        client,
        json={"url": "http://127.0.0.1:9/hook?q=<script>", "description": EVIL[:200]},
    )
    assert hook["description"] == EVIL[:200]
    out.ids["webhook"] = hook["webhook_id"]

    adjusted = http.ok(
        "POST",
        f"/ains/agents/{world.agent_id}/trust/adjust",
        keys.admin,
        json={"delta": 0.01, "reason": EVIL[:500]},
    )
    assert adjusted["record"]["reason"] == EVIL[:500]
    return out


def test_it_refuses_injection_where_a_name_has_a_pattern(http: Http, world: World) -> None:
    """Capability names are identifiers: the probe is refused with 422, not stored."""
    for body, path, persona in (
        ({"name": EVIL}, f"/ains/agents/{world.agent_id}/capabilities", world.keys.agent),
        ({"task_type": "r", "capability_required": EVIL}, "/ains/tasks", world.keys.client),
    ):
        assert_spec_error(http.call("POST", path, persona, json=body), 422, "validation_error")


def test_it_treats_injection_in_filters_as_plain_values(
    http: Http, world: World, stored: Stored
) -> None:
    """A quote in a filter matches nothing; LIKE wildcards in a name search are literal."""
    admin = world.keys.admin
    for params in ({"client_id": SQL}, {"capability": SQL}, {"agent_id": "' OR '1'='1"}):
        page = http.ok("GET", "/ains/tasks", admin, params=params)
        assert page["tasks"] == [], params
    evil_only = http.ok("GET", "/ains/tasks", admin, params={"client_id": EVIL})
    assert [t["task_id"] for t in evil_only["tasks"]] == [stored.ids["admin_task"]]
    for wildcard in ("%", "_", "' OR 1=1 --%"):
        found = http.ok("GET", "/ains/task-templates", world.keys.client, params={"name": wildcard})
        names = [t["name"] for t in found["templates"]]
        assert all(wildcard in n for n in names), (wildcard, names)
    found = http.ok("GET", "/ains/task-templates", world.keys.client, params={"name": SQL})
    assert [t["template_id"] for t in found["templates"]] == [stored.ids["template"]]


def console_pages(world: World, stored: Stored) -> dict[str, bool]:
    """Console pages, each with whether it must show the probe (escaped)."""
    ids = stored.ids
    return {
        "/": False,
        "/tasks": True,
        f"/tasks/{ids['task']}": True,
        f"/tasks/{ids['admin_task']}": True,
        "/tasks?client_id=" + requests.utils.quote(EVIL): True,
        "/dead-letter": True,
        "/agents": True,
        f"/agents/{ids['agent']}": True,
        f"/agents/{world.agent_id}": True,
        "/agents/leaderboard": True,
        "/routing": False,
        "/chains": True,
        f"/chains/{ids['chain']}": True,
        "/task-templates": True,
        f"/task-templates/{ids['template']}": True,
        f"/task-templates/{ids['template']}/edit": True,
        "/task-templates?name=" + requests.utils.quote(SCRIPT): False,
        "/schedules": True,
        f"/schedules/{ids['schedule']}": True,
        f"/schedules/{ids['schedule']}/edit": True,
        "/webhooks": True,
        f"/webhooks/{ids['webhook']}": True,
    }


def assert_inert(html: str, where: str) -> None:
    assert SCRIPT not in html, f"{where}: raw <script> from stored input"
    assert "<img src=x" not in html, f"{where}: raw tag from stored input"
    assert EVALUATED not in html, f"{where}: a template expression was evaluated"
    assert "SECRET_KEY" not in html and "test-secret-key" not in html, f"{where}: config leaked"


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx-fragment"])
def test_it_shows_stored_probes_escaped_in_the_console(
    console: requests.Session, http: Http, world: World, stored: Stored, htmx: bool
) -> None:
    headers = {"HX-Request": "true"} if htmx else {}
    for path, must_show in console_pages(world, stored).items():
        response = console.get(http.base + path, headers=headers, timeout=30, allow_redirects=False)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
        assert_inert(response.text, path)
        if must_show and not htmx:
            assert any(form in response.text for form in ESCAPED_FORMS), f"{path}: probe not shown"


def test_it_reflects_query_strings_escaped(
    console: requests.Session, http: Http, world: World
) -> None:
    """Filter values typed into a URL come back in the page's form, escaped."""
    for path in ("/tasks", "/dead-letter", "/chains", "/task-templates", "/schedules", "/agents"):
        for name in ("client_id", "name", "status", "capability", "q", "cursor"):
            response = console.get(
                f"{http.base}{path}", params={name: EVIL}, timeout=30, allow_redirects=False
            )
            assert response.status_code in (200, 400, 422), (path, name, response.status_code)
            assert_inert(response.text, f"{path}?{name}=")


def test_it_keeps_the_probe_out_of_api_errors_unescaped(http: Http, world: World) -> None:
    """An error naming a bad value is JSON (never HTML) so a browser cannot run it."""
    response = http.call(
        "GET", "/ains/tasks", world.keys.client, params={"status": SCRIPT, "limit": SCRIPT}
    )
    assert_spec_error(response, 422)
    assert response.headers["Content-Type"].startswith("application/json")


def test_it_stores_and_returns_the_probe_in_every_field_it_accepted(
    http: Http, world: World, stored: Stored
) -> None:
    """Read back after everything else: no later write rewrote or unescaped any of it."""
    client = world.keys.client
    assert http.ok("GET", f"/ains/task-chains/{stored.ids['chain']}", client)["name"] == EVIL
    template = http.ok("GET", f"/ains/task-templates/{stored.ids['template']}", client)
    assert template["input_schema"] == {"type": "object", "description": EVIL}
    schedule = http.ok("GET", f"/aitp/tasks/schedule/{stored.ids['schedule']}", client)
    assert schedule["task_type"] == EVIL
    agent: dict[str, Any] = http.ok("GET", f"/ains/agents/{stored.ids['agent']}", world.keys.admin)
    assert agent["display_name"] == EVIL
    task = http.ok("GET", f"/ains/tasks/{stored.ids['task']}", client)
    assert task["progress_message"] == EVIL
    assert f"{EVIL} (not retryable)" in [e["reason"] for e in task["events"]]
