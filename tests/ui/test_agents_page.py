"""The agents list."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask.testing import FlaskClient

from app.lib.clock import utcnow
from app.services import dashboard
from tests.conftest import Api, Personas
from tests.ui.conftest import HTMX, fail_tasks, text


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
    assert '<span class="trust-score" data-field="trust-score">0.50</span>' in first
    assert 'data-trust-level="medium">Medium</span>' in first
    assert f'href="/agents/{worker_id}"' in first  # the name opens the agent's page

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


def test_it_shows_trust_level_history_success_rate_and_average_time(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    steady = api.register_agent(personas.fleet, name="steady", slots=3)
    shaky = api.register_agent(personas.fleet, name="shaky", capabilities=("ocr-v2",), slots=2)
    idle_id, _ = api.register_agent(personas.fleet, name="idle", capabilities=("idle-v1",))
    done = [api.submit(personas.client)["task_id"] for _ in range(3)]
    assert sorted(t["task_id"] for t in api.claim(*steady, max_tasks=3)) == sorted(done)
    for task_id in done:
        reply = api.post(f"/ains/tasks/{task_id}/complete", steady[1], json={"result_data": {}})
        assert reply.status_code == 200, reply.get_json()
    fail_tasks(api, personas.client, shaky, 2, capability_required="ocr-v2")

    body = text(console.get("/agents"))
    good = row(body, steady[0])
    assert '<span class="trust-score" data-field="trust-score">0.56</span>' in good
    assert 'data-trust-level="medium">Medium</span>' in good
    assert re.search(
        r'<td data-label="Success rate" class="num" data-field="success-rate">\s*100 %', good
    )
    assert "3 done · 0 failed" in good
    assert re.search(r'data-field="avg-time">(\d+\.\d+ s|0\.\d\d s)</td>', good)
    # The sparkline: the starting score and one point per change, rising.
    assert 'class="sparkline sparkline-sm sparkline-up"' in good
    assert 'data-points="4"' in good
    assert "Trust 0.50 → 0.56 over the last 3 changes" in good

    bad = row(body, shaky[0])
    assert '<span class="trust-score" data-field="trust-score">0.40</span>' in bad
    assert 'data-trust-level="low">Low</span>' in bad
    assert "sparkline-down" in bad and 'data-points="3"' in bad
    assert re.search(r'data-field="success-rate">\s*0 %', bad)
    assert "0 done · 2 failed" in bad

    idle = row(body, idle_id)
    assert "no history" in idle and "<svg" not in idle
    assert re.search(r'data-field="success-rate">\s*—', idle)
    assert 'data-field="avg-time">—</td>' in idle


def test_it_draws_every_sparkline_from_one_query(
    console: FlaskClient, api: Api, personas: Personas, monkeypatch: Any
) -> None:
    from app.services import trust

    for n in range(3):
        api.register_agent(personas.fleet, name=f"agent {n}")
    calls: list[list[str]] = []
    original = trust.sparkline_points

    def counting(agent_ids: Any, **kwargs: Any) -> Any:
        calls.append(list(agent_ids))
        return original(agent_ids, **kwargs)

    monkeypatch.setattr(trust, "sparkline_points", counting)
    assert console.get("/agents").status_code == 200
    assert len(calls) == 1 and len(calls[0]) == 3


def test_it_scales_a_sparkline_to_its_scores_but_never_below_a_fifth() -> None:
    from app.ui.sparkline import MIN_SPAN, scale, sparkline

    # A few small steps read as a slope inside a 0.2 band, not as a cliff.
    assert scale([0.5, 0.52, 0.54]) == pytest.approx((0.42, 0.62))
    assert scale([0.0, 0.05]) == (0.0, MIN_SPAN)  # kept inside 0..1
    assert scale([1.0, 0.98]) == pytest.approx((0.8, 1.0))
    assert scale([0.2, 0.9]) == (0.2, 0.9)  # a wide series uses its own range

    line = sparkline([0.5, 0.9], width=100, height=20)
    assert line.points == "2.5,17.5 97.5,2.5" and (line.end_x, line.end_y) == (97.5, 2.5)
    assert line.trend == "up" and line.changes == 1
    assert line.label == "Trust 0.50 → 0.90 over the last change"
    flat = sparkline([0.5])
    assert flat.trend == "flat" and flat.label == "Trust 0.50"
    assert flat.points.count(",") == 2  # one score draws a level line across the box
    empty = sparkline([])
    assert empty.count == 0 and empty.points == "" and empty.label == "No trust changes yet"


def test_it_pages_the_agents_newest_first(
    console: FlaskClient, api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.ui import agents as agents_view

    monkeypatch.setattr(agents_view, "AGENTS_PER_PAGE", 2)
    ids = [api.register_agent(personas.fleet, name=f"paged {i}")[0] for i in range(5)]
    newest_first = ids[::-1]

    def shown(body: str) -> list[str]:
        return re.findall(r'<tr data-agent-id="([^"]+)">', body)

    first = text(console.get("/agents"))
    assert shown(first) == newest_first[:2]
    assert "5 agents" in first and "page 1 of 3" in first
    assert '<span data-stat="agents-online">5</span> online' in first  # the whole fleet
    assert 'href="/agents?page=2"' in first and "← Newer" not in first

    second = console.get("/agents?page=2", headers=HTMX)
    body = text(second)
    assert shown(body) == newest_first[2:4]
    assert 'hx-get="/agents?page=2"' in body  # the live refresh stays on its page
    assert 'href="/agents"' in body and 'href="/agents?page=3"' in body

    assert shown(text(console.get("/agents?page=3"))) == newest_first[4:]
    # Past the end, zero, negative or not a number: the nearest page that exists.
    assert shown(text(console.get("/agents?page=999"))) == newest_first[4:]
    for bad in ("0", "-3", "abc", "1e9", ""):
        response = console.get(f"/agents?page={bad}")
        assert response.status_code == 200, bad
        assert shown(text(response)) == newest_first[:2], bad
