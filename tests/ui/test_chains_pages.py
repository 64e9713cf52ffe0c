"""Chains pages: the list with step progress, one chain's stepper, cancel with CSRF."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import ChainStatus, Task, TaskChain, TaskStatus
from app.ui import chains as chains_ui
from app.ui.chains import json_preview
from tests.conftest import Api, Persona, Personas
from tests.ui.conftest import HTMX, form_token, text

ROW = re.compile(r'<tr data-chain-id="([^"]+)">(.*?)</tr>', re.S)
SEGMENT = re.compile(r'<span class="step-seg seg-(\w+)"')
STEP = re.compile(r'<li class="step step-(\w+)( step-current)?" data-step="(\d)">(.*?)</li>', re.S)


def make_chain(api: Api, persona: Persona, name: str = "nightly-etl", steps: int = 3) -> Any:
    kinds = ["extract", "transform", "load", "notify"]
    response = api.post(
        "/ains/task-chains",
        persona,
        json={
            "name": name,
            "steps": [
                {"task_type": kinds[i % 4], "capability_required": "report-v1"}
                for i in range(steps)
            ],
        },
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def chain_json(api: Api, personas: Personas, chain_id: str) -> Any:
    return api.get(f"/ains/task-chains/{chain_id}", personas.admin).get_json()


def run_step(
    api: Api, agent: tuple[str, Persona], result: dict[str, Any] | None = None, error: str = ""
) -> str:
    """Claim the one claimable step task, then complete it (or fail it for good)."""
    agent_id, key = agent
    [task] = api.claim(agent_id, key)
    if error:
        body = {"error_message": error, "retryable": False}
        response = api.post(f"/ains/tasks/{task['task_id']}/fail", key, json=body)
    else:
        body = {"result_data": result or {}}
        response = api.post(f"/ains/tasks/{task['task_id']}/complete", key, json=body)
    assert response.status_code == 200, response.get_json()
    return task["task_id"]


@pytest.fixture
def agent(api: Api, personas: Personas) -> tuple[str, Persona]:
    return api.register_agent(personas.fleet, slots=4)


def rows(body: str) -> dict[str, str]:
    return dict(ROW.findall(body))


def steps(body: str) -> dict[int, tuple[str, bool, str]]:
    return {int(i): (state, bool(current), html) for state, current, i, html in STEP.findall(body)}


def stored_chain(app: Flask, chain_id: str) -> TaskChain:
    with app.app_context():
        chain = db.session.get(TaskChain, chain_id)
        assert chain is not None
        db.session.expunge(chain)
        return chain


def test_it_lists_chains_with_their_step_progress(
    console: FlaskClient, api: Api, personas: Personas, agent: tuple[str, Persona]
) -> None:
    first = make_chain(api, personas.client, "nightly-etl")
    run_step(api, agent, {"rows": 10})
    other = make_chain(api, personas.other_client, "weekly <digest>", steps=2)

    response = console.get("/chains")
    body = text(response)
    assert response.status_code == 200 and "HX-Request" in response.headers["Vary"]
    listed = rows(body)
    assert list(listed) == [other["chain_id"], first["chain_id"]]  # newest first
    row = listed[first["chain_id"]]
    assert f'href="/chains/{first["chain_id"]}"' in row and "nightly-etl" in row
    assert "client-1" in row and "badge-running" in row
    # The second step's task is routed to the agent (it has free slots) and waits for it.
    assert SEGMENT.findall(row) == ["completed", "assigned", "waiting"]
    assert 'data-progress="1/3"' in row and 'aria-label="1 of 3 steps completed"' in row
    assert 'title="Step 2 · transform · Assigned"' in row
    assert "weekly &lt;digest&gt;" in listed[other["chain_id"]]
    assert SEGMENT.findall(listed[other["chain_id"]]) == ["assigned", "waiting"]
    # The nav shows the page; the first page refreshes itself.
    assert re.search(r'<a href="/chains" aria-current="page">Chains', body)
    assert 'hx-trigger="every 5s"' in body


def test_it_filters_by_status_and_client_and_pages(
    console: FlaskClient,
    api: Api,
    personas: Personas,
    agent: tuple[str, Persona],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done = make_chain(api, personas.client, "one-step", steps=1)
    run_step(api, agent)
    running = [make_chain(api, personas.client, f"run-{i}")["chain_id"] for i in range(3)]
    theirs = make_chain(api, personas.other_client, "theirs")["chain_id"]

    completed = text(console.get("/chains", query_string={"status": "completed"}))
    assert list(rows(completed)) == [done["chain_id"]]
    assert "badge-completed" in completed and 'data-progress="1/1"' in completed
    assert list(rows(text(console.get("/chains?client=client-2")))) == [theirs]

    monkeypatch.setattr(chains_ui, "PAGE_SIZE", 2)
    first = text(console.get("/chains?status=RUNNING&client=client-1"))
    assert list(rows(first)) == running[::-1][:2]
    assert "page 1 of 2" in first
    assert 'href="/chains?page=2&amp;status=RUNNING&amp;client=client-1"' in first
    second = console.get("/chains?page=2&status=RUNNING&client=client-1", headers=HTMX)
    body = text(second)
    assert body.lstrip().startswith('<section id="chain-results"')
    assert list(rows(body)) == [running[0]]
    assert "hx-trigger" not in body.split(">", 1)[0]  # only the first page refreshes itself
    assert "← Newer" in body


def test_it_says_which_filter_is_wrong(console: FlaskClient) -> None:
    response = console.get("/chains?status=LOST")
    assert response.status_code == 422
    assert "&#39;LOST&#39; is not one of PENDING, RUNNING, COMPLETED, FAILED, CANCELLED" in text(
        response
    )


def test_it_shows_a_running_chain_as_a_stepper_that_refreshes(
    console: FlaskClient, api: Api, personas: Personas, agent: tuple[str, Persona]
) -> None:
    chain = make_chain(api, personas.client)
    first_task = run_step(api, agent, {"rows": 10, "source": "s3://bucket/in.csv"})
    current = chain_json(api, personas, chain["chain_id"])["current_task_id"]

    response = console.get(f"/chains/{chain['chain_id']}")
    body = text(response)
    assert response.status_code == 200
    assert 'hx-trigger="every 3s"' in body and "data-pause-while-editing" in body
    assert "Cancel chain…" in body
    shown = steps(body)
    assert [(s[0], s[1]) for s in shown.values()] == [
        ("completed", False),
        ("assigned", True),
        ("waiting", False),
    ]
    done = shown[0][2]
    assert f'href="/tasks/{first_task}">extract</a>' in done and "report-v1" in done
    assert "ran 0 s" in done
    assert "&#34;source&#34;: &#34;s3://bucket/in.csv&#34;" in done  # the result preview
    assert f'href="/tasks/{current}">transform</a>' in shown[1][2]
    assert f'routed to agent <a class="mono" href="/agents/{agent[0]}"' in shown[1][2]
    assert "waiting for its claim" in shown[1][2] and "Assigned" in shown[1][2]
    assert "Not started" in shown[2][2] and "/tasks/" not in shown[2][2]
    assert 'data-progress="1/3"' in body

    fragment = console.get(f"/chains/{chain['chain_id']}", headers=HTMX)
    assert text(fragment).lstrip().startswith('<div id="chain-detail"')
    assert "HX-Request" in fragment.headers["Vary"]


def test_it_shows_why_a_chain_failed_and_stops_refreshing(
    console: FlaskClient, api: Api, personas: Personas, agent: tuple[str, Persona]
) -> None:
    chain = make_chain(api, personas.client)
    run_step(api, agent, {"rows": 1})
    run_step(api, agent, error="schema <mismatch>")

    body = text(console.get(f"/chains/{chain['chain_id']}"))
    assert "hx-trigger" not in body and "Cancel chain" not in body
    assert "<strong>Failed:</strong> step 1 (transform, task" in body
    shown = steps(body)
    assert [s[0] for s in shown.values()] == ["completed", "failed", "skipped"]
    assert 'class="step-error">schema &lt;mismatch&gt;</p>' in shown[1][2]
    assert "Not run" in shown[2][2]
    listed = text(console.get("/chains?status=FAILED"))
    assert SEGMENT.findall(rows(listed)[chain["chain_id"]]) == ["completed", "failed", "skipped"]


def test_it_cancels_a_running_chain_with_the_form(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    chain = make_chain(api, personas.client)
    chain_id = chain["chain_id"]
    token = form_token(console, f"/chains/{chain_id}")

    refused = console.post(f"/chains/{chain_id}/cancel", data={"reason": "no token"})
    assert refused.status_code == 400
    assert stored_chain(app, chain_id).status == ChainStatus.RUNNING

    response = console.post(
        f"/chains/{chain_id}/cancel", data={"csrf_token": token, "reason": "wrong input"}
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/chains/{chain_id}")
    stored = stored_chain(app, chain_id)
    assert stored.status == ChainStatus.CANCELLED and stored.cancellation_reason == "wrong input"
    with app.app_context():
        task = db.session.get(Task, chain["current_task_id"])
        assert task is not None and task.status == TaskStatus.CANCELLED

    body = text(console.get(f"/chains/{chain_id}"))
    assert "Chain cancelled: no further step starts." in body
    assert "<strong>Cancelled</strong>" in body and "wrong input" in body
    assert "Cancel chain…" not in body and "hx-trigger" not in body
    assert [s[0] for s in steps(body).values()] == ["cancelled", "skipped", "skipped"]

    again = console.post(f"/chains/{chain_id}/cancel", data={"csrf_token": token})
    assert again.status_code == 302
    assert f"Not cancelled: chain &#39;{chain_id}&#39; is already CANCELLED." in text(
        console.get(f"/chains/{chain_id}")
    )


def test_it_answers_404_for_an_unknown_chain(console: FlaskClient) -> None:
    response = console.get("/chains/chain_missing")
    assert response.status_code == 404
    assert "chain &#39;chain_missing&#39; not found" in text(response)


def test_it_needs_a_signed_in_operator(client: FlaskClient, api: Api, personas: Personas) -> None:
    chain = make_chain(api, personas.client)
    for path in ("/chains", f"/chains/{chain['chain_id']}"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    posted = client.post(f"/chains/{chain['chain_id']}/cancel")
    assert posted.status_code in (302, 400)
    assert chain_json(api, personas, chain["chain_id"])["status"] == "RUNNING"


def test_it_previews_the_first_lines_of_a_result() -> None:
    assert json_preview({"a": 1}) == '{\n  "a": 1\n}'
    long = json_preview({f"k{i}": i for i in range(20)}, lines=4)
    assert long.splitlines() == ["{", '  "k0": 0,', '  "k1": 1,', '  "k2": 2,', "…"]
    wide = json_preview({"text": "x" * 300})
    assert max(len(line) for line in wide.splitlines()) == chains_ui.PREVIEW_CHARS
