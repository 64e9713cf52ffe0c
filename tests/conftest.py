"""Shared fixtures: the app on SQLite or PostgreSQL, a clean database per test, personas.

Set TEST_DATABASE_URL to run on PostgreSQL and TEST_REDIS_URL to use a given Redis (a DB
number of its own: the suite flushes it). Real processes (gunicorn, the RQ worker, the
clock, the sample agent) are started by the fixtures in tests/processes.py.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before the app is imported: keep tests away from the developer's instance/ folder.
_INSTANCE = Path(tempfile.mkdtemp(prefix="ains-test-"))
os.environ.setdefault("AINS_INSTANCE_DIR", str(_INSTANCE))
os.environ.pop("DATABASE_URL", None)

import pytest  # noqa: E402
from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402
from sqlalchemy import text  # noqa: E402

from app import create_app  # noqa: E402
from app.config import TestConfig  # noqa: E402
from app.extensions import db, redis_client  # noqa: E402
from app.services.auth import create_api_key, create_user  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IS_POSTGRES = TestConfig.SQLALCHEMY_DATABASE_URI.startswith("postgresql")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_POSTGRES:
        return
    skip = pytest.mark.skip(reason="PostgreSQL only (set TEST_DATABASE_URL)")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> list[str]:
    where = TestConfig.SQLALCHEMY_DATABASE_URI.split("@")[-1]
    return [f"database: {'PostgreSQL' if IS_POSTGRES else 'SQLite'} ({where})"]


def reset_schema(app: Flask) -> None:
    """Drop everything and build the schema through the migrations (so they are tested)."""
    from flask_migrate import upgrade

    with app.app_context():
        if IS_POSTGRES:
            with db.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        else:
            db.drop_all()
            with db.engine.begin() as conn:
                conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        upgrade()


@pytest.fixture(scope="session")
def app() -> Iterator[Flask]:
    application = create_app(TestConfig)
    reset_schema(application)
    yield application
    if not os.environ.get("TEST_REDIS_URL") and not os.environ.get("REDIS_URL"):
        # The suite started the embedded Redis in its temporary instance folder: stop it.
        from app.lib.embedded_redis import stop_embedded_redis

        stop_embedded_redis(os.environ["AINS_INSTANCE_DIR"])


def truncate_all(app: Flask) -> None:
    with app.app_context():
        tables = [t.name for t in reversed(db.metadata.sorted_tables)]
        with db.engine.begin() as conn:
            if IS_POSTGRES:
                conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            else:
                for table in tables:
                    conn.execute(text(f"DELETE FROM {table}"))
        db.session.remove()


@pytest.fixture(autouse=True)
def _push_request_context() -> None:
    """Replace pytest-flask's: no request context stays pushed around a whole test.

    Code under test opens and closes its own contexts as it does in production; a context
    held open by the harness would keep a SQLite transaction (and its lock) alive.
    """


@pytest.fixture(autouse=True)
def _clean_state(app: Flask) -> Iterator[None]:
    """Every test starts with empty tables and an empty Redis database."""
    truncate_all(app)
    redis_client(app.config["REDIS_URL"]).flushdb()
    yield
    with app.app_context():
        db.session.remove()


@pytest.fixture
def app_ctx(app: Flask) -> Iterator[Flask]:
    with app.app_context():
        yield app
        db.session.remove()


@dataclass
class Persona:
    """An API caller: a key and its headers."""

    key: str
    role: str
    client_id: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Personas:
    admin: Persona
    client: Persona
    other_client: Persona
    fleet: Persona  # agent key that registers agents
    other_fleet: Persona


@pytest.fixture
def personas(app: Flask) -> Personas:
    with app.app_context():

        def make(role: str, name: str, client_id: str | None = None) -> Persona:
            _, raw = create_api_key(name=name, role=role, client_id=client_id)
            return Persona(raw, role, client_id)

        result = Personas(
            admin=make("admin", "admin"),
            client=make("client", "client one", "client-1"),
            other_client=make("client", "client two", "client-2"),
            fleet=make("agent", "fleet one"),
            other_fleet=make("agent", "fleet two"),
        )
        db.session.remove()
        return result


class Api:
    """Thin JSON caller over the Flask test client."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def call(self, method: str, path: str, persona: Persona | None = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if persona is not None:
            headers.update(persona.headers)
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def post(self, path: str, persona: Persona | None = None, **kwargs: Any) -> Any:
        return self.call("POST", path, persona, **kwargs)

    def get(self, path: str, persona: Persona | None = None, **kwargs: Any) -> Any:
        return self.call("GET", path, persona, **kwargs)

    def patch(self, path: str, persona: Persona | None = None, **kwargs: Any) -> Any:
        return self.call("PATCH", path, persona, **kwargs)

    def register_agent(
        self,
        fleet: Persona,
        capabilities: tuple[str, ...] = ("report-v1",),
        slots: int = 1,
        name: str = "agent",
    ) -> tuple[str, Persona]:
        """Register an agent; return its id and its own bound key."""
        import uuid

        response = self.post(
            "/ains/agents",
            fleet,
            json={
                "display_name": name,
                "public_key": uuid.uuid4().hex,
                "capabilities": [{"name": c} for c in capabilities],
                "max_concurrent_tasks": slots,
            },
        )
        assert response.status_code == 201, response.get_json()
        body = response.get_json()
        return body["agent_id"], Persona(body["api_key"], "agent")

    def submit(self, persona: Persona, **fields: Any) -> dict[str, Any]:
        body = {"task_type": "report", "capability_required": "report-v1", **fields}
        response = self.post("/ains/tasks", persona, json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def claim(self, agent_id: str, persona: Persona, **fields: Any) -> list[dict[str, Any]]:
        response = self.post(f"/ains/agents/{agent_id}/tasks/claim", persona, json=fields)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["tasks"]


@pytest.fixture
def api(client: FlaskClient) -> Api:
    return Api(client)


@pytest.fixture
def operator(app: Flask) -> dict[str, str]:
    """An operator account (email, password) for UI tests."""
    with app.app_context():
        create_user("operator@example.com", "correct horse battery")
        db.session.remove()
    return {"email": "operator@example.com", "password": "correct horse battery"}


def python_executable() -> str:
    return sys.executable
