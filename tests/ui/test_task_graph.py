"""The task page's dependency graph: nodes, edges and links drawn, the lists, the caps."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app.services import graph
from app.services.principal import operator as operator_principal
from tests.conftest import Api, Persona, Personas
from tests.ui.conftest import HTMX, text

NODE = re.compile(
    r'<a class="graph-node graph-(\w+)( graph-current)?"\s+href="/tasks/([^"]+)" '
    r'transform="translate\(([\d.]+) ([\d.]+)\)"'
)
EDGE = re.compile(r'data-edge="(\S+) (\S+)"')
WAITING_EDGE = re.compile(
    r'class="graph-edge graph-edge-waiting" d="[^"]+"\s+'
    r'marker-end="[^"]+"\s+data-edge="(\S+) (\S+)"'
)


def nodes(body: str) -> dict[str, dict[str, Any]]:
    """The drawn nodes by task id: status, whether current, position."""
    return {
        task_id: {"status": status, "current": bool(current), "x": float(x), "y": float(y)}
        for status, current, task_id, x, y in NODE.findall(body)
    }


def edges(body: str) -> set[tuple[str, str]]:
    return set(EDGE.findall(body))


def listed(body: str, name: str) -> str:
    start = body.index(f'data-list="{name}"')
    return body[start : body.index("</ul>", start)]


def diamond(api: Api, client: Persona) -> tuple[str, str, str, str]:
    """top ← left, right ← bottom: bottom waits for left and right, which wait for top."""
    top = api.submit(client, task_type="fetch-data")["task_id"]
    left = api.submit(client, task_type="clean-rows", depends_on=[top])["task_id"]
    right = api.submit(client, task_type="enrich-rows", depends_on=[top])["task_id"]
    bottom = api.submit(client, task_type="publish-report", depends_on=[left, right])["task_id"]
    return top, left, right, bottom


def complete(api: Api, personas: Personas, task_id: str) -> None:
    agent_id, key = api.register_agent(personas.fleet)
    [claimed] = api.claim(agent_id, key)
    assert claimed["task_id"] == task_id
    done = api.post(f"/ains/tasks/{task_id}/complete", key, json={"result_data": {"rows": 3}})
    assert done.status_code == 200, done.get_json()


def test_it_draws_the_diamond_above_a_task_with_links_and_arrows(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    top, left, right, bottom = diamond(api, personas.client)

    response = console.get(f"/tasks/{bottom}")
    body = text(response)
    assert response.status_code == 200
    drawn = nodes(body)
    assert set(drawn) == {top, left, right, bottom}
    assert [t for t, n in drawn.items() if n["current"]] == [bottom]
    assert {n["status"] for t, n in drawn.items() if t != top} == {"blocked"}
    assert drawn[top]["status"] == "pending"
    # Layered left to right: top, then left and right in one column, then the task.
    assert drawn[top]["x"] < drawn[left]["x"] == drawn[right]["x"] < drawn[bottom]["x"]
    assert drawn[left]["y"] != drawn[right]["y"]
    assert edges(body) == {(top, left), (top, right), (left, bottom), (right, bottom)}
    assert body.count('marker-end="url(#graph-arrow') == 4
    assert (
        'aria-current="page"' in body
        and f'aria-label="publish-report, blocked, {bottom} (this task)"' in body
    )

    assert "waits for 2 tasks · nothing waits for it" in body
    assert "Blocked: waiting for 2 dependencies." in body
    assert "if one fails, expires or is cancelled, this task is cancelled" in body
    depends_on = listed(body, "dependencies")
    assert f'href="/tasks/{left}">clean-rows</a>' in depends_on
    assert f'href="/tasks/{right}">enrich-rows</a>' in depends_on
    assert depends_on.count(">blocking</span>") == 2
    assert "No task waits for this one." in listed(body, "dependents")


def test_it_draws_what_waits_for_a_task_to_its_right(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    top, left, right, bottom = diamond(api, personas.client)

    body = text(console.get(f"/tasks/{top}"))
    drawn = nodes(body)
    assert set(drawn) == {top, left, right, bottom}
    assert drawn[top]["current"] and drawn[top]["x"] < drawn[left]["x"] < drawn[bottom]["x"]
    assert edges(body) == {(top, left), (top, right), (left, bottom), (right, bottom)}
    assert "waits for nothing · needed by 2" in body
    dependents = listed(body, "dependents")
    assert dependents.count("waiting on this") == 2
    assert "Nothing: it was ready to run when submitted." in listed(body, "dependencies")
    assert 'id="blocked-state"' not in body


def test_it_shows_which_edges_still_hold_a_task_back(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    top, left, right, bottom = diamond(api, personas.client)
    complete(api, personas, top)

    body = text(console.get(f"/tasks/{bottom}"))
    drawn = nodes(body)
    assert drawn[top]["status"] == "completed"
    # Both are ready now; the agent's one free slot takes one of them, the other waits.
    assert sorted([drawn[left]["status"], drawn[right]["status"]]) == ["assigned", "pending"]
    assert set(WAITING_EDGE.findall(body)) == {(left, bottom), (right, bottom)}
    assert "Blocked: waiting for 2 dependencies." in body

    page = text(console.get(f"/tasks/{left}"))
    assert set(WAITING_EDGE.findall(page)) == {(left, bottom)}
    assert "No task waits" not in page and listed(page, "dependencies").count("blocking") == 0


def test_it_puts_a_dependency_needed_twice_left_of_the_other(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    client = personas.client
    first = api.submit(client, task_type="a")["task_id"]
    second = api.submit(client, task_type="b", depends_on=[first])["task_id"]
    last = api.submit(client, task_type="c", depends_on=[first, second])["task_id"]

    drawn = nodes(text(console.get(f"/tasks/{last}")))
    # first is a direct dependency of last, but also second's: it goes one column further.
    assert drawn[first]["x"] < drawn[second]["x"] < drawn[last]["x"]


def test_it_caps_a_level_and_counts_the_tasks_left_out(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    root = api.submit(personas.client, task_type="split")["task_id"]
    fan = graph.LEVEL_LIMIT + 3
    batch = api.post(
        "/ains/tasks/batch",
        personas.client,
        json={
            "tasks": [
                {"task_type": f"part-{i}", "capability_required": "report-v1", "depends_on": [root]}
                for i in range(fan)
            ]
        },
    )
    assert batch.status_code in (200, 201), batch.get_json()

    body = text(console.get(f"/tasks/{root}"))
    assert len(nodes(body)) == graph.LEVEL_LIMIT + 1
    assert '<g class="graph-more"' in body and ">+3 more</text>" in body
    assert 'data-graph-hidden="3"' in body and "3 more not drawn." in body
    assert f"needed by {fan}" in body
    assert listed(body, "dependents").count("<li data-task-id=") == fan


def test_it_walks_two_levels_each_way_and_says_more_lie_beyond(
    app: Flask, console: FlaskClient, api: Api, personas: Personas
) -> None:
    ids: list[str] = []
    for i in range(6):
        ids.append(
            api.submit(personas.client, task_type=f"stage-{i}", depends_on=ids[-1:])["task_id"]
        )

    body = text(console.get(f"/tasks/{ids[3]}"))
    assert set(nodes(body)) == set(ids[1:6])
    assert "Further dependencies lie beyond" in body

    with app.app_context():
        small = graph.task_graph(operator_principal("o@example.com"), ids[3], depth=1, limit=2)
    assert {n.id for n in small.nodes} == {ids[3], ids[2]}
    assert small.hidden == {1: 1} and small.more_before and not small.more_after
    assert {n.layer for n in small.nodes} == {0, -1}


def test_it_shows_no_graph_for_a_task_on_its_own(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    task = api.submit(personas.client)["task_id"]
    body = text(console.get(f"/tasks/{task}"))
    assert 'id="task-dependencies"' not in body and '<svg class="graph"' not in body
    assert 'class="chain-membership"' not in body


def test_it_keeps_the_graph_in_the_refreshed_fragment(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    top, left, _, bottom = diamond(api, personas.client)
    response = console.get(f"/tasks/{left}", headers=HTMX)
    body = text(response)
    assert response.status_code == 200 and "HX-Request" in response.headers["Vary"]
    assert not body.lstrip().startswith("<!doctype")
    # right is neither before nor after left: it is not drawn.
    assert set(nodes(body)) == {top, left, bottom}


def test_it_names_the_chain_a_step_belongs_to(
    console: FlaskClient, api: Api, personas: Personas
) -> None:
    created = api.post(
        "/ains/task-chains",
        personas.client,
        json={
            "name": "nightly <etl>",
            "steps": [
                {"task_type": "extract", "capability_required": "report-v1"},
                {"task_type": "transform", "capability_required": "report-v1"},
                {"task_type": "load", "capability_required": "report-v1"},
            ],
        },
    )
    assert created.status_code == 201, created.get_json()
    chain = created.get_json()

    body = text(console.get(f"/tasks/{chain['current_task_id']}"))
    assert (
        f'Step 1 of 3 of chain <a href="/chains/{chain["chain_id"]}">nightly &lt;etl&gt;</a>'
        in body
    )


def test_it_needs_a_signed_in_operator(client: FlaskClient, api: Api, personas: Personas) -> None:
    top, *_ = diamond(api, personas.client)
    response = client.get(f"/tasks/{top}")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
