"""The dashboard's tasks-by-status counts: exact while small, estimated and marked past
EXACT_COUNT_LIMIT on PostgreSQL (bench/console.py measured a million tasks)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text as sql

from app.extensions import db
from app.services import dashboard
from tests.conftest import IS_POSTGRES, Api, Personas
from tests.ui.conftest import fail_tasks, text


def make_tasks(api: Api, personas: Personas) -> None:
    """Four FAILED tasks and two PENDING ones."""
    agent = api.register_agent(personas.fleet, slots=4)
    fail_tasks(api, personas.client, agent, 4)
    for _ in range(2):
        api.submit(personas.client, capability_required="nobody-offers-this")


def test_small_counts_are_exact_and_unmarked(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    make_tasks(api, personas)
    with app.app_context():
        counts, approximate = dashboard.status_counts()
        assert dashboard.tasks_by_status() == counts
    assert counts["FAILED"] == 4 and counts["PENDING"] == 2 and counts["COMPLETED"] == 0
    assert approximate == frozenset()
    body = text(console.get("/"))
    assert 'aria-label="Failed: 4"' in body
    assert "data-approximate" not in body and "≈" not in body


@pytest.mark.skipif(not IS_POSTGRES, reason="SQLite always counts exactly")
def test_a_status_past_the_limit_shows_the_planners_estimate_marked_approximate(
    app: Flask,
    console: FlaskClient,
    api: Api,
    personas: Personas,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_tasks(api, personas)
    monkeypatch.setattr(dashboard, "EXACT_COUNT_LIMIT", 3)
    with app.app_context():
        db.session.execute(sql("ANALYZE tasks"))  # what autovacuum does on a busy table
        db.session.commit()
        counts, approximate = dashboard.status_counts()
    # FAILED (4) is past the limit: the planner's figure, from fresh statistics.
    assert approximate == {"FAILED"}
    assert counts["FAILED"] == 4
    # Under the limit: counted, so exact whatever the statistics say.
    assert counts["PENDING"] == 2 and counts["COMPLETED"] == 0

    body = text(console.get("/", headers={"HX-Request": "true"}))
    assert 'aria-label="Failed: about 4"' in body
    assert 'data-approximate title="Estimated: more than 3 tasks' in body
    assert "≈ 4" in body and "estimated from PostgreSQL" in body
    assert 'aria-label="Pending: 2"' in body
    # The open figure is exact while every open status is.
    assert 'data-stat="open">2<' in body


@pytest.mark.skipif(not IS_POSTGRES, reason="SQLite always counts exactly")
def test_an_estimate_never_shows_fewer_than_were_counted(
    app: Flask, api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Statistics taken before the tasks existed say none; the count still beats the limit."""
    with app.app_context():
        db.session.execute(sql("ANALYZE tasks"))
        db.session.commit()
    make_tasks(api, personas)
    monkeypatch.setattr(dashboard, "EXACT_COUNT_LIMIT", 1)
    with app.app_context():
        counts, approximate = dashboard.status_counts()
    assert approximate == {"FAILED", "PENDING"}
    assert counts["FAILED"] >= 2 and counts["PENDING"] >= 2
