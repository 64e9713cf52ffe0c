"""Hostile-input suite: a real gunicorn server and a world of two clients and two fleets.

Each module gets one server and one world, built once through the HTTP API (the attacks
read far more than they write, and what they write is checked per test), so the whole
directory runs in well under a minute per database instead of one server per test.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import requests
from flask import Flask

from app.extensions import db, redis_client
from app.lib.clock import utcnow
from app.models import ApiKey
from app.services.auth import create_api_key, create_user
from tests.conftest import Persona, truncate_all
from tests.processes import WebServer, start_web

OPERATOR = {"email": "security-operator@example.com", "password": "correct horse battery"}


@pytest.fixture(autouse=True)
def _clean_state() -> None:
    """Replace the per-test wipe: each module starts clean once (see ``fresh_database``)."""


@pytest.fixture(scope="module", autouse=True)
def fresh_database(app: Flask) -> None:
    truncate_all(app)
    redis_client(app.config["REDIS_URL"]).flushdb()


@pytest.fixture(scope="module")
def server(app: Flask, fresh_database: None) -> Iterator[WebServer]:
    web = start_web(app, name="security-web")
    yield web
    web.process.stop()


class Http:
    """``requests`` against the live server, with a persona's key when given."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()

    def call(
        self, method: str, path: str, persona: Persona | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if persona is not None:
            headers.setdefault("Authorization", f"Bearer {persona.key}")
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("allow_redirects", False)
        return self.session.request(method, self.base + path, headers=headers, **kwargs)

    def ok(self, method: str, path: str, persona: Persona, **kwargs: Any) -> dict[str, Any]:
        response = self.call(method, path, persona, **kwargs)
        assert response.status_code in (200, 201, 202), (path, response.status_code, response.text)
        return response.json()


@pytest.fixture(scope="module")
def http(server: WebServer) -> Http:
    return Http(server.url)


@dataclass
class Keys:
    admin: Persona
    client: Persona  # client-1: the victim
    other_client: Persona  # client-2: the attacker
    fleet: Persona  # registers the victim's agent
    other_fleet: Persona
    expired: Persona
    revoked: Persona
    agent: Persona = field(default=None)  # type: ignore[assignment]  # set by ``world``
    other_agent: Persona = field(default=None)  # type: ignore[assignment]


@pytest.fixture(scope="module")
def keys(app: Flask, fresh_database: None) -> Keys:
    with app.app_context():

        def make(role: str, name: str, client_id: str | None = None, **kw: Any) -> Persona:
            _, raw = create_api_key(name=name, role=role, client_id=client_id, **kw)
            return Persona(raw, role, client_id)

        result = Keys(
            admin=make("admin", "admin"),
            client=make("client", "client one", "client-1"),
            other_client=make("client", "client two", "client-2"),
            fleet=make("agent", "fleet one"),
            other_fleet=make("agent", "fleet two"),
            expired=make("client", "expired", "client-1"),
            revoked=make("client", "revoked", "client-1"),
        )
        # Set on the rows: keys cannot be made already expired or revoked.
        by_name = {k.name: k for k in db.session.scalars(db.select(ApiKey))}
        by_name["expired"].expires_at = utcnow() - timedelta(minutes=1)
        by_name["revoked"].revoked_at = utcnow()
        db.session.commit()
        create_user(OPERATOR["email"], OPERATOR["password"])
        db.session.remove()
        return result


@dataclass
class World:
    """Ids of what client-1 and the first fleet own, made through the API."""

    keys: Keys
    agent_id: str
    other_agent_id: str
    task_id: str  # client-1's, ACTIVE on agent_id
    pending_task_id: str  # client-1's, waiting for a capability nobody has
    chain_id: str
    template_id: str
    schedule_id: str
    webhook_id: str  # client-1's
    delivery_id: str  # of webhook_id
    agent_webhook_id: str  # agent_id's
    agent_delivery_id: str
    capability: str = "report-v1"

    @property
    def client_owned(self) -> set[str]:
        """Ids no other client, and no other fleet, may learn of."""
        return {
            self.task_id,
            self.pending_task_id,
            self.chain_id,
            self.template_id,
            self.schedule_id,
            self.webhook_id,
            self.delivery_id,
        }


def register_agent(http: Http, fleet: Persona, name: str, capability: str) -> tuple[str, Persona]:
    body = http.ok(
        "POST",
        "/ains/agents",
        fleet,
        json={
            "display_name": name,
            "public_key": uuid.uuid4().hex,
            "capabilities": [{"name": capability}],
            "max_concurrent_tasks": 5,
        },
    )
    return body["agent_id"], Persona(body["api_key"], "agent")


def build_world(http: Http, keys: Keys) -> World:
    agent_id, keys.agent = register_agent(http, keys.fleet, "victim agent", "report-v1")
    other_agent_id, keys.other_agent = register_agent(
        http, keys.other_fleet, "attacker agent", "other-v1"
    )
    client = keys.client
    task = http.ok(
        "POST", "/ains/tasks", client, json={"task_type": "r", "capability_required": "report-v1"}
    )
    claimed = http.ok(
        "POST", f"/ains/agents/{agent_id}/tasks/claim", keys.agent, json={"max_tasks": 1}
    )
    assert [t["task_id"] for t in claimed["tasks"]] == [task["task_id"]]
    pending = http.ok(
        "POST", "/ains/tasks", client, json={"task_type": "r", "capability_required": "idle-v1"}
    )
    step = {"task_type": "r", "capability_required": "idle-v1"}
    chain = http.ok("POST", "/ains/task-chains", client, json={"name": "c", "steps": [step]})
    template = http.ok(
        "POST",
        "/ains/task-templates",
        client,
        json={"name": "t", "task_type": "r", "capability_required": "idle-v1"},
    )
    schedule = http.ok(
        "POST",
        "/aitp/tasks/schedule",
        client,
        json={"cron_expression": "0 3 * * *", "task_type": "r", "capability_required": "idle-v1"},
    )
    hook = http.ok("POST", "/ains/webhooks", client, json={"url": "http://127.0.0.1:9/hook"})
    delivery = http.ok("POST", f"/ains/webhooks/{hook['webhook_id']}/test", client)
    agent_hook = http.ok(
        "POST",
        f"/ains/agents/{agent_id}/webhooks",
        keys.agent,
        json={"url": "http://127.0.0.1:9/agent-hook"},
    )
    agent_delivery = http.ok("POST", f"/ains/webhooks/{agent_hook['webhook_id']}/test", keys.agent)
    return World(
        keys=keys,
        agent_id=agent_id,
        other_agent_id=other_agent_id,
        task_id=task["task_id"],
        pending_task_id=pending["task_id"],
        chain_id=chain["chain_id"],
        template_id=template["template_id"],
        schedule_id=schedule["schedule_id"],
        webhook_id=hook["webhook_id"],
        delivery_id=delivery["delivery_id"],
        agent_webhook_id=agent_hook["webhook_id"],
        agent_delivery_id=agent_delivery["delivery_id"],
    )


@pytest.fixture(scope="module")
def world(http: Http, keys: Keys) -> World:
    return build_world(http, keys)


CSRF_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def csrf_token(html: str) -> str:
    match = CSRF_FIELD.search(html) or CSRF_META.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def console_login(base: str) -> requests.Session:
    """A browser-like session signed in as the operator through the real login form."""
    session = requests.Session()
    page = session.get(f"{base}/login", timeout=30)
    response = session.post(
        f"{base}/login",
        data={**OPERATOR, "csrf_token": csrf_token(page.text)},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 302, response.text[:500]
    return session


@pytest.fixture(scope="module")
def console(server: WebServer, keys: Keys) -> requests.Session:
    return console_login(server.url)
