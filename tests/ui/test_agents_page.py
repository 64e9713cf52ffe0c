"""The agents list."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import time_machine
from flask.testing import FlaskClient

from app.lib.clock import utcnow
from app.services import dashboard
from tests.conftest import Api, Personas
from tests.ui.conftest import HTMX, text


def row(body: str, agent_id: str) -> str:
    start = body.index(f'<tr data-agent-id="{agent_id}">')
    return body[start : body.index("</tr>", start)]


def test_it_lists_agents_with_status_capabilities_slots_and_record(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    worker_id, worker = api.register_agent(
        personas.fleet, capabilities=("report-v1", "ocr-v2"), slots=3, name="report worker"
    )
    busy_id, busy = api.register_agent(personas.other_fleet, name="degraded one")
    beat = api.post(f"/ains/agents/{busy_id}/heartbeat", busy, json={"status": "DEGRADED"})
    assert beat.status_code == 200
    api.submit(personas.client)
    api.claim(worker_id, worker)

    response = console.get("/agents")
    assert response.status_code == 200
    body = text(response)
    first = row(body, worker_id)
    assert "report worker" in first and worker_id in first
    assert '<span class="badge badge-available">Available</span>' in first
    assert re.findall(r'<li class="chip"[^>]*>([\w.-]+)', first) == ["ocr-v2", "report-v1"]
    assert "1 / 3" in first
    assert "just now" in first or " s ago" in first
    assert '<td data-label="Trust" class="num">0.50</td>' in first
    assert f'href="/tasks?agent={worker_id}"' in first

    second = row(body, busy_id)
    assert '<span class="badge badge-busy">Busy</span>' in second and "Degraded" in second
    assert body.index(busy_id) < body.index(worker_id)  # newest first


def test_it_escapes_agent_names(console: FlaskClient, api: Api, personas: Personas) -> None:
    api.register_agent(personas.fleet, name="<script>alert(1)</script>")
    body = text(console.get("/agents"))
    assert "<script>alert(1)" not in body and "&lt;script&gt;alert(1)" in body


def test_it_says_so_when_no_agent_is_registered(console: FlaskClient) -> None:
    assert "No agents yet." in text(console.get("/agents"))


def test_it_serves_the_table_fragment_to_htmx(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet, name=f"agent {uuid.uuid4().hex[:6]}")
    page = console.get("/agents")
    assert "HX-Request" in page.headers["Vary"]
    assert text(page).startswith("<!doctype html>")
    assert 'hx-trigger="every 10s"' in text(page)

    fragment = console.get("/agents", headers=HTMX)
    assert "HX-Request" in fragment.headers["Vary"]
    body = text(fragment)
    assert "<html" not in body and body.lstrip().startswith('<section id="agent-list"')
    assert agent_id in body


def test_it_marks_an_agent_whose_heartbeats_stopped(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet)
    body = text(console.get("/agents"))
    assert '<span data-stat="agents-online">1</span> online' in body
    assert "heartbeat-stale" not in row(body, agent_id)

    silence = dashboard.heartbeat_silence()
    with time_machine.travel(utcnow() + silence + timedelta(seconds=5)):
        body = text(console.get("/agents"))
    assert '<span data-stat="agents-online">0</span> online' in body
    assert 'class="heartbeat-stale"' in row(body, agent_id)
