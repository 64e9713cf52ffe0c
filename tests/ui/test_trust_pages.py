"""Trust in the console: the leaderboard, an agent's page, the admin adjustment form."""

from __future__ import annotations

import html
import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import Agent, TaskEvent, TaskStatus, TrustEvent, TrustRecord
from tests.conftest import Api, Personas
from tests.ui.conftest import HTMX, fail_tasks, form_token, text

RANK = re.compile(r'<tr data-agent-id="([^"]+)" data-rank="(\d+)">')
RECORD = re.compile(r'<tr data-record-id="\d+" data-event="([a-z_]+)">')


def complete_tasks(api: Api, personas: Personas, agent: tuple[str, Any], count: int) -> list[str]:
    """Submit ``count`` report-v1 tasks; the agent claims and completes them all."""
    submitted = [api.submit(personas.client)["task_id"] for _ in range(count)]
    agent_id, key = agent
    claimed = [t["task_id"] for t in api.claim(agent_id, key, max_tasks=count)]
    assert sorted(claimed) == sorted(submitted)
    for task_id in submitted:
        reply = api.post(f"/ains/tasks/{task_id}/complete", key, json={"result_data": {"ok": 1}})
        assert reply.status_code == 200, reply.get_json()
    return submitted


def trust_of(app: Flask, agent_id: str) -> tuple[float, list[TrustRecord]]:
    with app.app_context():
        agent = db.session.get(Agent, agent_id)
        assert agent is not None
        records = list(
            db.session.scalars(
                db.select(TrustRecord)
                .where(TrustRecord.agent_id == agent_id)
                .order_by(TrustRecord.id)
            )
        )
        for record in records:
            db.session.expunge(record)
        score = agent.trust_score
        db.session.remove()
    return score, records


def section(body: str, element_id: str) -> str:
    start = body.index(f'id="{element_id}"')
    return body[start : body.index("</section>", start)]


# ---------------------------------------------------------------------------------------
# Leaderboard
# ---------------------------------------------------------------------------------------


def test_it_ranks_agents_by_trust_on_the_leaderboard(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    best = api.register_agent(personas.fleet, name="best", slots=3)
    worst = api.register_agent(personas.fleet, name="worst", capabilities=("ocr-v2",), slots=1)
    new_id, _ = api.register_agent(personas.other_fleet, name="newcomer", capabilities=("x-v1",))
    complete_tasks(api, personas, best, 3)
    fail_tasks(api, personas.client, worst, 1, capability_required="ocr-v2")

    response = console.get("/agents/leaderboard")
    assert response.status_code == 200
    body = text(response)
    assert RANK.findall(body) == [(best[0], "1"), (new_id, "2"), (worst[0], "3")]
    first = body[body.index(f'data-agent-id="{best[0]}"') :]
    first = first[: first.index("</tr>")]
    assert f'<a href="/agents/{best[0]}">best</a>' in first
    assert '<span class="trust-score" data-field="trust-score">0.56</span>' in first
    assert 'data-trust-level="medium"' in first
    assert 'data-field="success-rate">100 %</td>' in first
    assert "sparkline-up" in first
    last = body[body.index(f'data-agent-id="{worst[0]}"') :]
    last = last[: last.index("</tr>")]
    assert "0.45" in last and 'data-field="success-rate">0 %</td>' in last
    # The legend explains the levels with the seed's thresholds.
    assert "≥ 0.9 · Top-tier agents, priority routing" in body
    nav = body[body.index('aria-label="Main"') :]
    assert '<a href="/agents/leaderboard" aria-current="page">Leaderboard' in nav


def test_it_shows_an_empty_leaderboard_and_serves_its_fragment(console: FlaskClient) -> None:
    assert "No agents yet: the leaderboard fills" in text(console.get("/agents/leaderboard"))
    fragment = console.get("/agents/leaderboard", headers=HTMX)
    assert fragment.status_code == 200 and "HX-Request" in fragment.headers["Vary"]
    assert text(fragment).lstrip().startswith('<section id="leaderboard"')


# ---------------------------------------------------------------------------------------
# One agent
# ---------------------------------------------------------------------------------------


def test_it_shows_an_agent_with_its_trust_records_and_tasks(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent = api.register_agent(
        personas.fleet, name="report writer", capabilities=("report-v1", "summarise-v1"), slots=2
    )
    done = complete_tasks(api, personas, agent, 2)
    waiting = api.submit(personas.client, task_type="late-report")["task_id"]

    response = console.get(f"/agents/{agent[0]}")
    assert response.status_code == 200
    body = text(response)
    assert "<h1>report writer" in body and agent[0] in body
    assert '<span class="badge badge-available">Available</span>' in body
    assert re.findall(r'<li class="chip"[^>]*>([\w.-]+)', body) == ["report-v1", "summarise-v1"]
    assert '<span class="slots">0 / 2</span>' in body

    summary = section(body, "trust-summary")
    assert '<p class="trust-big" data-field="trust-score">0.54</p>' in summary
    assert 'data-trust-level="medium">Medium</span>' in summary
    assert "Average agents, standard routing" in summary
    assert 'class="sparkline sparkline-lg sparkline-up"' in summary
    assert "0.50 → 0.54 over the last 2 changes" in summary
    assert re.search(r'data-field="success-rate"><dt>Success rate</dt><dd>100 %', summary)

    records = section(body, "trust-records")
    assert RECORD.findall(records) == [TrustEvent.TASK_COMPLETED] * 2
    newest = records[records.index("<tbody>") : records.index("</tr>", records.index("<tbody>"))]
    assert '0.52 <span class="arrow" aria-label="to">→</span> <strong>0.54</strong>' in newest
    assert '<span class="delta delta-up">+0.02</span>' in newest
    assert f'href="/tasks/{done[1]}"' in newest and "Task completed" in newest
    assert f"agent:{agent[0]}" in newest

    tasks = section(body, "agent-tasks")
    assert re.findall(r'<tr data-task-id="([^"]+)"', tasks) == [waiting, done[1], done[0]]
    assert "late-report" in tasks and '<span class="badge badge-assigned">Assigned</span>' in tasks


def test_it_answers_404_for_an_unknown_agent(console: FlaskClient) -> None:
    response = console.get("/agents/agent_nope")
    assert response.status_code == 404
    assert "agent &#39;agent_nope&#39; not found" in text(response)


def test_it_adjusts_trust_through_the_form_and_shows_the_record(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet, name="reviewed")
    page = text(console.get(f"/agents/{agent_id}"))
    assert 'id="trust-form"' in page and "No trust changes yet" in page

    response = console.post(
        f"/agents/{agent_id}/trust",
        data={
            "delta": "0.3",
            "reason": "  output checked by hand  ",
            "csrf_token": form_token(console, f"/agents/{agent_id}"),
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"/agents/{agent_id}"

    score, records = trust_of(app, agent_id)
    assert score == 0.8
    (record,) = records
    assert record.event_type == TrustEvent.MANUAL_ADJUSTMENT
    assert (record.trust_score_before, record.trust_score_after) == (0.5, 0.8)
    assert record.reason == "output checked by hand"
    assert record.actor == "admin:operator@example.com"

    body = text(console.get(f"/agents/{agent_id}"))
    assert "Trust changed 0.50 → 0.80 (+0.30), now high." in body
    assert '<p class="trust-big" data-field="trust-score">0.80</p>' in body
    assert 'data-trust-level="high">High</span>' in body
    rows = section(body, "trust-records")
    assert RECORD.findall(rows) == [TrustEvent.MANUAL_ADJUSTMENT]
    assert "Manual adjustment" in rows and "output checked by hand" in rows
    assert (
        "admin:operator@example.com" in rows and '<span class="delta delta-up">+0.30</span>' in rows
    )

    # A cut below zero is clamped, and the record and the message say what was applied.
    response = console.post(
        f"/agents/{agent_id}/trust",
        data={"delta": "-1", "reason": "caught faking results", "csrf_token": form_token(console)},
        follow_redirects=True,
    )
    body = text(response)
    assert "Trust changed 0.80 → 0.00 (\u22120.80 (clamped at the bound)), now very_low." in body
    assert 'data-trust-level="very_low">Very low</span>' in body
    assert trust_of(app, agent_id)[0] == 0.0


def assert_refused(
    app: Flask, console: FlaskClient, agent_id: str, data: dict[str, str], field: str, message: str
) -> str:
    """The form comes back 422 with ``message`` under ``field``; trust is unchanged."""
    token = form_token(console, f"/agents/{agent_id}")
    response = console.post(f"/agents/{agent_id}/trust", data={**data, "csrf_token": token})
    assert response.status_code == 422
    body = text(response)
    assert "Trust was not changed." in body
    error = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', body)
    assert error, body[body.index('id="trust-form"') :][:3000]
    assert message in html.unescape(error.group(1))
    assert 'aria-invalid="true"' in body
    assert trust_of(app, agent_id) == (0.5, [])
    return body


def test_it_shows_bad_input_at_the_field_and_changes_nothing(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet, name="untouched")
    reason = {"reason": "because"}
    body = assert_refused(
        app, console, agent_id, {"delta": "lots", **reason}, "delta", "'lots' is not a number"
    )
    # What was typed stays in the form.
    assert "because</textarea>" in body
    assert_refused(
        app, console, agent_id, {"delta": "1.5", **reason}, "delta", "must be from -1 to 1"
    )
    assert_refused(
        app, console, agent_id, {"delta": "-2", **reason}, "delta", "must be from -1 to 1"
    )
    assert_refused(app, console, agent_id, {"delta": "0", **reason}, "delta", "a change of 0")
    assert_refused(app, console, agent_id, {"delta": "nan", **reason}, "delta", "is not a number")
    assert_refused(app, console, agent_id, {"delta": "", **reason}, "delta", "type a change")
    assert_refused(app, console, agent_id, {"delta": "0.1", "reason": "   "}, "reason", "say why")
    assert_refused(
        app, console, agent_id, {"delta": "0.1", "reason": "x" * 501}, "reason", "at most 500"
    )


def test_it_refuses_an_adjustment_without_the_csrf_token(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet)
    response = console.post(f"/agents/{agent_id}/trust", data={"delta": "0.2", "reason": "x"})
    assert response.status_code == 400
    assert trust_of(app, agent_id) == (0.5, [])


def test_it_answers_404_when_adjusting_an_unknown_agent(console: FlaskClient) -> None:
    token = form_token(console, "/agents")
    response = console.post(
        "/agents/agent_nope/trust", data={"delta": "0.2", "reason": "x", "csrf_token": token}
    )
    assert response.status_code == 404


# ---------------------------------------------------------------------------------------
# Task page: the routing decision
# ---------------------------------------------------------------------------------------


def test_it_shows_the_routing_decision_on_the_task_page(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    first = api.register_agent(personas.fleet, name="alpha", slots=2)
    second = api.register_agent(personas.fleet, name="beta", slots=2)
    gone = api.register_agent(personas.fleet, name="gamma")
    beat = api.post(f"/ains/agents/{gone[0]}/heartbeat", gone[1], json={"status": "OFFLINE"})
    assert beat.status_code == 200
    task_id = api.submit(personas.client, routing_strategy="least_loaded")["task_id"]
    with app.app_context():
        event = db.session.scalars(
            db.select(TaskEvent).where(
                TaskEvent.task_id == task_id, TaskEvent.to_status == TaskStatus.ASSIGNED
            )
        ).one()
        routing = event.data["routing"]
        db.session.remove()
    winner = routing["winner"]
    assert winner in (first[0], second[0])

    body = text(console.get(f"/tasks/{task_id}"))
    decision = body[body.index('class="routing-decision"') :]
    decision = decision[: decision.index("</div>")]
    assert 'data-strategy="least_loaded"' in decision
    name = "alpha" if winner == first[0] else "beta"
    assert re.search(
        rf'least loaded</span>\s*picked <a href="/agents/{winner}" data-field="winner">'
        rf"{name}</a>\s*from 2 candidates",
        decision,
    )
    assert re.findall(r'<tr data-agent-id="([^"]+)"', decision) == [
        c["agent_id"] for c in routing["candidates"]
    ]
    assert f'<tr data-agent-id="{winner}" class="row-winner">' in decision
    assert "0 of 2 slots held" in decision
    assert "Left out:</strong> gamma (status INACTIVE)" in decision
    # The decision is shown, not dumped: no raw JSON of it remains.
    assert "candidate_count" not in body
    # The task's agent links to the agent's page.
    assert f'<a class="mono" href="/agents/{winner}"' in body
