"""The routing playground and the per-capability default strategies."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import CapabilityRouting, Task, TaskEvent
from tests.conftest import Api, Personas
from tests.ui.conftest import HTMX, form_token, text

CANDIDATE = re.compile(r'<tr data-agent-id="([^"]+)"(?: class="row-winner")?>')


def result(body: str) -> str:
    start = body.index('<section id="routing-result"')
    return body[start : body.index('<div class="grid grid-detail routing-reference">', start)]


def fragment_rows(body: str, table_id: str) -> list[str]:
    start = body.index(f'id="{table_id}"')
    return CANDIDATE.findall(body[start : body.index("</section>", start)])


def routing_state(app: Flask) -> tuple[int, int, dict[str, Any]]:
    """Tasks, events and routing rows: what the playground must leave alone."""
    with app.app_context():
        tasks = db.session.scalar(db.select(db.func.count()).select_from(Task)) or 0
        events = db.session.scalar(db.select(db.func.count()).select_from(TaskEvent)) or 0
        rows = {
            r.capability: (r.default_strategy, r.round_robin_after)
            for r in db.session.scalars(db.select(CapabilityRouting))
        }
        db.session.remove()
    return tasks, events, rows


def test_it_prompts_for_a_capability_and_lists_the_known_ones(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    api.register_agent(personas.fleet, capabilities=("report-v1", "ocr-v2"))
    api.register_agent(personas.fleet, capabilities=("report-v1",))
    response = console.get("/routing")
    assert response.status_code == 200
    body = text(response)
    assert "Choose a capability to see which agent would get its next task" in result(body)
    assert '<option value="ocr-v2">ocr-v2 (1 agent)</option>' in body
    assert '<option value="report-v1">report-v1 (2 agents)</option>' in body
    # Every strategy is offered and explained; the server default is named.
    for name in ("round_robin", "least_loaded", "trust_weighted", "fastest_response"):
        assert f'<option value="{name}">{name.replace("_", " ")}</option>' in body
    assert "Takes turns: the candidates form a ring" in body
    assert "server default: round robin" in body
    nav = body[body.index('aria-label="Main"') :]
    assert '<a href="/routing" aria-current="page">Routing' in nav


def test_it_shows_the_winner_the_scored_candidates_and_who_is_left_out(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    # "full" takes a task into its only slot, then "busy" one into one of its two.
    full = api.register_agent(personas.fleet, name="full", slots=1)
    api.submit(personas.client)
    assert len(api.claim(*full)) == 1
    busy = api.register_agent(personas.fleet, name="busy", slots=2)
    api.submit(personas.client)
    assert len(api.claim(*busy)) == 1
    idle = api.register_agent(personas.fleet, name="idle", slots=2)
    offline = api.register_agent(personas.fleet, name="offline")
    beat = api.post(f"/ains/agents/{offline[0]}/heartbeat", offline[1], json={"status": "OFFLINE"})
    assert beat.status_code == 200
    before = routing_state(app)

    response = console.get("/routing?capability=report-v1&strategy=least_loaded")
    assert response.status_code == 200
    body = result(text(response))
    assert 'data-strategy="least_loaded"' in body
    assert (
        'strategy <span class="strategy" data-field="strategy">least loaded</span> · chosen here'
        in body
    )
    winner = body[
        body.index('id="routing-winner"') : body.index("</div>", body.index('id="routing-winner"'))
    ]
    assert f'data-agent-id="{idle[0]}"' in winner
    assert f'Would go to <a href="/agents/{idle[0]}">idle</a>' in winner
    assert "0 of 2 slots held" in winner
    assert fragment_rows(body, "routing-candidates") == [idle[0], busy[0]]
    assert f'<tr data-agent-id="{idle[0]}" class="row-winner">' in body
    assert "1 of 2 slots held" in body
    assert fragment_rows(body, "routing-excluded") == sorted(
        [full[0], offline[0]], key=lambda a: body.index(f'data-agent-id="{a}"')
    )
    excluded = body[body.index('id="routing-excluded"') :]
    assert "no free slot (1 of 1 held)" in excluded and "status INACTIVE" in excluded
    assert "Nothing was assigned" in body
    assert routing_state(app) == before


def test_it_uses_the_capability_default_when_no_strategy_is_chosen(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    api.register_agent(personas.fleet, name="solo")
    body = result(text(console.get("/routing?capability=report-v1")))
    assert 'data-strategy="round_robin"' in body and "· the server default" in body

    token = form_token(console, "/routing")
    response = console.post(
        "/routing/defaults",
        data={"capability": "report-v1", "strategy": "trust_weighted", "csrf_token": token},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/routing?capability=report-v1"
    assert routing_state(app)[2]["report-v1"][0] == "trust_weighted"

    page = text(console.get(response.headers["Location"]))
    assert "Tasks of report-v1 now route with trust_weighted unless they ask otherwise." in page
    assert 'data-strategy="trust_weighted"' in result(page)
    assert "· the capability&#39;s default" in result(page)
    assert "A weighted random draw" in result(page)
    row = page[page.index('<tr data-capability="report-v1">') :]
    row = row[: row.index("</tr>")]
    assert '<option value="trust_weighted" selected>trust weighted</option>' in row

    # Back to the server default.
    response = console.post(
        "/routing/defaults",
        data={"capability": "report-v1", "strategy": "", "csrf_token": token},
        follow_redirects=True,
    )
    assert "report-v1 follows the server default (round_robin) again." in text(response)
    assert routing_state(app)[2]["report-v1"][0] is None


def test_it_refuses_an_unknown_default_strategy_and_changes_nothing(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    api.register_agent(personas.fleet)
    token = form_token(console, "/routing")
    response = console.post(
        "/routing/defaults",
        data={"capability": "report-v1", "strategy": "fastest", "csrf_token": token},
        follow_redirects=True,
    )
    body = text(response)
    assert "Default not changed: Default strategy: &#39;fastest&#39; is not one of" in body
    assert routing_state(app)[2] == {}
    response = console.post(
        "/routing/defaults", data={"capability": "report-v1", "strategy": "least_loaded"}
    )
    assert response.status_code == 400
    assert routing_state(app)[2] == {}


def test_it_says_so_when_no_agent_offers_the_capability(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    api.register_agent(personas.fleet, capabilities=("ocr-v2",))
    body = result(text(console.get("/routing?capability=translate-v1")))
    assert "No agent offers translate-v1." in body
    assert 'id="routing-candidates"' not in body and 'id="routing-excluded"' not in body


def test_it_says_so_when_every_agent_is_left_out(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent = api.register_agent(personas.fleet, name="resting")
    beat = api.post(f"/ains/agents/{agent[0]}/heartbeat", agent[1], json={"status": "OFFLINE"})
    assert beat.status_code == 200
    body = result(text(console.get("/routing?capability=report-v1")))
    assert "No agent can take a task of report-v1 now." in body
    assert 'id="routing-candidates"' not in body
    assert fragment_rows(body, "routing-excluded") == [agent[0]]


def test_it_answers_htmx_with_the_result_alone(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet, name="solo")
    response = console.get("/routing?capability=report-v1", headers=HTMX)
    assert response.status_code == 200 and "HX-Request" in response.headers["Vary"]
    body = text(response)
    assert body.lstrip().startswith('<section id="routing-result"') and "<html" not in body
    assert f'Would go to <a href="/agents/{agent_id}">solo</a>' in body


def test_it_names_a_bad_strategy(console: FlaskClient, api: Api, personas: Personas) -> None:
    api.register_agent(personas.fleet)
    response = console.get("/routing?capability=report-v1&strategy=random", headers=HTMX)
    assert response.status_code == 422
    assert "Strategy: &#39;random&#39; is not one of round_robin, least_loaded" in text(response)
