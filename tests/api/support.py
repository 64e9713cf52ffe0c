"""Helpers for the API tests: the error shape, database snapshots, pinned times."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from sqlalchemy import event, select, update
from werkzeug.test import TestResponse

from app.api.schemas import ErrorOut
from app.extensions import db
from app.models import Agent, ApiKey, Capability, Task, TaskEvent

# A fixed instant in the past for tests that pin the clock around submits.
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

Snapshot = dict[str, list[dict[str, Any]]]


def assert_error(
    response: TestResponse, status: int, code: str | None = None, field: str | None = None
) -> dict[str, Any]:
    """The SPEC error shape with this status; return the inner error object."""
    body = response.get_json(silent=True)
    assert response.status_code == status, (response.status_code, body or response.data[:300])
    assert response.mimetype == "application/json"
    assert isinstance(body, dict) and set(body) == {"error"}, body
    ErrorOut.model_validate(body)
    error = body["error"]
    assert error["code"] and error["message"], error
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        fields = [d.get("field") or "" for d in error["details"]]
        assert any(f == field or f.startswith((f"{field}.", f"{field}[")) for f in fields), error
    if status == 401:
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer"), response.headers
    return error


def snapshot(app: Flask) -> Snapshot:
    """Every row the API can write, to prove that a refused request changed nothing."""
    with app.app_context():
        tables: Snapshot = {}
        for model in (Task, TaskEvent, Agent, Capability):
            table = model.__table__
            rows = db.session.execute(select(table).order_by(*table.primary_key.columns))
            tables[table.name] = [dict(row) for row in rows.mappings()]
        keys = db.session.execute(
            select(ApiKey.id, ApiKey.role, ApiKey.agent_id).order_by(ApiKey.id)
        )
        tables["api_keys"] = [dict(row) for row in keys.mappings()]
        db.session.remove()
    return tables


def row_counts(app: Flask) -> dict[str, int]:
    return {name: len(rows) for name, rows in snapshot(app).items()}


@contextmanager
def unchanged(app: Flask) -> Iterator[None]:
    """Assert that the block leaves every table exactly as it found it."""
    before = snapshot(app)
    yield
    after = snapshot(app)
    for name in before:
        assert after[name] == before[name], f"table {name} changed"


def load(app: Flask, model: type[Any], row_id: Any) -> Any:
    """A detached copy of one row, read in a fresh session."""
    with app.app_context():
        row = db.session.get(model, row_id)
        assert row is not None, f"{model.__name__} {row_id} not found"
        db.session.expunge(row)
        db.session.remove()
        return row


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{value} has no offset"
    return parsed


@contextmanager
def sql_sent(app: Flask) -> Iterator[list[tuple[str, Any]]]:
    """(SQL on one line, parameters) of every statement sent meanwhile; an executemany's
    parameters are a list of sets."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        seen.append((" ".join(statement.split()), parameters))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def set_active_tasks(app: Flask, agent_id: str, count: int) -> None:
    """Make the agent hold ``count`` running tasks as far as routing sees (a full agent
    leaves submits waiting unassigned)."""
    with app.app_context():
        db.session.execute(update(Agent).where(Agent.id == agent_id).values(active_tasks=count))
        db.session.commit()
