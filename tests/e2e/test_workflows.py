"""End to end: chains and dependency DAGs through gunicorn and real sample agents.

A 3-step chain and a diamond (A; B and C after A; D after both, fed their results through
``$from``) run through the HTTP API and sample agent subprocesses; a failing dependency
cancels what waits for it, and a failing chain step fails the chain. A wider run of
diamonds measures, for every dependent, the time from its last dependency's completion to
its release (BLOCKED → PENDING), to its routing to an agent (PENDING → ASSIGNED) and to
its claim by that long-polling agent (ASSIGNED → ACTIVE); the percentiles are printed and
written to test-artifacts/workflow-latency.json.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import requests
from flask import Flask

from app.extensions import db
from app.models import Task
from tests.conftest import IS_POSTGRES, Personas
from tests.processes import ARTIFACTS, Process, WebServer, start_agent, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CAPABILITY = "workflow-v1"
DIAMONDS = 30
SUBMIT_EVERY_SECONDS = 0.1


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


class Api:
    """requests against the real web server, as one client."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers.update(headers)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.session.post(f"{self.url}{path}", json=body, timeout=30)
        assert response.status_code == 201, response.text
        return response.json()

    def get(self, path: str) -> dict[str, Any]:
        response = self.session.get(f"{self.url}{path}", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def task(self, task_id: str) -> dict[str, Any]:
        return self.get(f"/ains/tasks/{task_id}")

    def batch(self, items: list[dict[str, Any]]) -> list[str]:
        """Submit an atomic batch; the task ids in item order."""
        body = self.post("/ains/tasks/batch", {"tasks": items, "atomic": True})
        assert body["failed"] == [], body["failed"]
        return [item["task_id"] for item in sorted(body["submitted"], key=lambda i: i["index"])]


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def wait_for_tasks(api: Api, ids: list[str], timeout: float = 30) -> dict[str, dict[str, Any]]:
    """Each task's detail once all of them are in a terminal state."""
    terminal = {"COMPLETED", "FAILED", "CANCELLED", "EXPIRED"}
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    for task_id in ids:  # a task that ended stays ended: each is polled until it has
        while (task := api.task(task_id))["status"] not in terminal:
            assert time.monotonic() < deadline, f"{len(ids) - len(done)} tasks still open: {task}"
            time.sleep(0.1)
        done[task_id] = task
    return done


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def ms(later: str, earlier: str) -> float:
    return (at(later) - at(earlier)).total_seconds() * 1000


def transitions(task: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(e["from_status"], e["to_status"]) for e in task["events"]]


def events(task: dict[str, Any], from_status: str | None, to_status: str) -> list[dict[str, Any]]:
    return [
        e for e in task["events"] if (e["from_status"], e["to_status"]) == (from_status, to_status)
    ]


def event(task: dict[str, Any], from_status: str | None, to_status: str) -> dict[str, Any]:
    found = events(task, from_status, to_status)
    assert len(found) == 1, (from_status, to_status, task["events"])
    return found[0]


def first_event(task: dict[str, Any], from_status: str, to_status: str) -> dict[str, Any]:
    """The first such transition: a reservation given back to better-queued work that was
    waiting unrouted is routed again (README, Routing), so there may be several."""
    found = events(task, from_status, to_status)
    assert found, (from_status, to_status, task["events"])
    return found[0]


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "n": len(ordered),
        "min_ms": round(ordered[0], 2),
        "p50_ms": pick(0.5),
        "p95_ms": pick(0.95),
        "max_ms": round(ordered[-1], 2),
    }


def start_agents(
    app: Flask, url: str, key: str, count: int, concurrency: int, name: str
) -> list[Process]:
    agents = [
        start_agent(
            app,
            url,
            key,
            "--capability",
            CAPABILITY,
            "--concurrency",
            str(concurrency),
            name=f"{name}-{n}",
        )
        for n in range(count)
    ]
    for agent in agents:
        agent.wait_for_line("Agent started:", timeout=30)
    return agents


def stop_agents(agents: list[Process]) -> None:
    """SIGTERM them all, then wait: each drains its long poll at the same time."""
    for agent in agents:
        agent.signal(signal.SIGTERM)  # once: a second signal makes the agent exit at once
    codes = [agent.proc.wait(30) for agent in agents]
    assert codes == [0] * len(agents), [agent.output()[-2000:] for agent in agents]


@pytest.fixture
def web(app: Flask) -> Iterator[WebServer]:
    # A log of its own (test-artifacts/workflows-web.log): other suites write web.log.
    server = start_web(app, name="workflows-web")
    yield server
    server.process.stop()


@pytest.fixture
def api(web: WebServer, personas: Personas) -> Iterator[Api]:
    client = Api(web.url, personas.client.headers)
    yield client
    client.session.close()  # an idle keep-alive connection would hold up gunicorn's exit


@pytest.fixture
def agents(app: Flask, web: WebServer, personas: Personas) -> Iterator[list[Process]]:
    """Two sample agents offering the workflow capability, two tasks at a time each."""
    running = start_agents(app, web.url, personas.fleet.key, 2, 2, "workflows-agent")
    yield running
    stop_agents(running)


def step(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "task_type": f"step-{n}",
        "capability_required": CAPABILITY,
        "input_data": {"step": n, "sleep": 0.1, **extra},
        "max_retries": 0,
    }


def diamond(tag: str, sleeps: tuple[float, ...]) -> list[dict[str, Any]]:
    """A; B and C after A; D after B and C, reading B's input and C's whole result.

    ``sleeps`` are A's, B's and C's work in seconds.
    """

    def item(name: str, depends_on: list[int], **input_data: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "task_type": f"diamond-{name}",
            "capability_required": CAPABILITY,
            "input_data": {"name": f"{tag}{name}", **input_data},
            "max_retries": 0,
        }
        if depends_on:
            body["depends_on"] = [f"@{i}" for i in depends_on]
        return body

    a, b, c = sleeps
    return [
        item("a", [], value=7, sleep=a),
        item("b", [0], from_a={"$from": "@0", "path": "input.value"}, sleep=b),
        item("c", [0], sleep=c),
        item(
            "d",
            [1, 2],
            b={"$from": "@1", "path": "input"},
            c={"$from": "@2"},
        ),
    ]


# ---------------------------------------------------------------------------------------
# Chains
# ---------------------------------------------------------------------------------------


def test_it_runs_a_three_step_chain_through_real_agents(
    app: Flask, api: Api, agents: list[Process]
) -> None:
    chain = api.post(
        "/ains/task-chains", {"name": "e2e-chain", "steps": [step(0), step(1), step(2)]}
    )
    chain_id = chain["chain_id"]
    assert chain["status"] == "RUNNING"

    done = wait_until(
        "the chain to complete",
        lambda: (c := api.get(f"/ains/task-chains/{chain_id}"))["status"] == "COMPLETED" and c,
    )

    results = done["step_results"]
    assert [r["step"] for r in results] == [0, 1, 2]
    assert [r["status"] for r in results] == ["COMPLETED"] * 3
    assert done["current_step"] == 3 and done["completed_at"] is not None
    tasks = [api.task(r["task_id"]) for r in results]
    with app.app_context():
        creators = {
            t.id: t.created_by
            for t in db.session.scalars(db.select(Task).where(Task.chain_id == chain_id))
        }
        db.session.remove()
    assert creators == {t["task_id"]: f"chain:{chain_id}" for t in tasks}
    gaps = []
    for n, task in enumerate(tasks):
        assert (task["chain_id"], task["chain_step"], task["status"]) == (chain_id, n, "COMPLETED")
        assert task["result_data"] == results[n]["result_data"]
        assert task["events"][0]["actor"] == f"chain:{chain_id}"
        assert task["result_data"]["input"]["step"] == n
        if n == 0:
            assert "previous_output" not in task["input_data"]
            continue
        previous = tasks[n - 1]
        assert task["input_data"]["previous_output"] == previous["result_data"]
        # The next step is created by the commit that completed the previous one.
        assert at(task["created_at"]) >= at(previous["completed_at"])
        gaps.append(
            {
                "step": n,
                "created_after_previous_completed_ms": ms(
                    task["created_at"], previous["completed_at"]
                ),
                "claimed_after_previous_completed_ms": ms(
                    task["claimed_at"], previous["completed_at"]
                ),
            }
        )
    for gap in gaps:
        print(
            f"chain step {gap['step']}: created {gap['created_after_previous_completed_ms']:.2f} ms"
            f", claimed {gap['claimed_after_previous_completed_ms']:.2f} ms"
            " after the previous step completed"
        )


def test_it_fails_a_chain_at_its_failing_step_and_starts_nothing_after_it(
    app: Flask, api: Api, agents: list[Process]
) -> None:
    chain_id = api.post(
        "/ains/task-chains",
        {"name": "e2e-failing", "steps": [step(0), step(1, fail="permanent"), step(2)]},
    )["chain_id"]

    done = wait_until(
        "the chain to fail",
        lambda: (c := api.get(f"/ains/task-chains/{chain_id}"))["status"] == "FAILED" and c,
    )

    assert [(r["step"], r["status"]) for r in done["step_results"]] == [
        (0, "COMPLETED"),
        (1, "FAILED"),
    ]
    failed = api.task(done["step_results"][1]["task_id"])
    assert failed["status"] == "FAILED"
    assert "Permanent failure" in done["error_message"]
    assert done["error_message"].startswith(f"step 1 (step-1, task {failed['task_id']}) FAILED")
    time.sleep(0.5)  # nothing may start late either
    with app.app_context():
        steps = sorted(
            db.session.scalars(db.select(Task.chain_step).where(Task.chain_id == chain_id))
        )
        db.session.remove()
    assert steps == [0, 1]
    assert api.get(f"/ains/task-chains/{chain_id}")["status"] == "FAILED"


# ---------------------------------------------------------------------------------------
# Dependency DAGs
# ---------------------------------------------------------------------------------------


def test_it_runs_a_diamond_and_feeds_the_join_both_results(api: Api, agents: list[Process]) -> None:
    # C finishes well after B, so which of them releases D is known.
    a_id, b_id, c_id, d_id = api.batch(diamond("x", (0.1, 0.1, 1.0)))
    blocked = api.task(d_id)
    assert blocked["status"] == "BLOCKED" and blocked["pending_dependencies"] == 2
    assert set(blocked["depends_on"]) == {b_id, c_id}

    tasks = wait_for_tasks(api, [a_id, b_id, c_id, d_id])

    a, b, c, d = (tasks[i] for i in (a_id, b_id, c_id, d_id))
    assert [t["status"] for t in (a, b, c, d)] == ["COMPLETED"] * 4
    # B's reference to A was resolved when A completed.
    assert b["input_data"] == {"name": "xb", "from_a": 7, "sleep": 0.1}
    # D's input holds its dependencies' results in place of the references.
    assert d["input_data"] == {"name": "xd", "b": b["result_data"]["input"], "c": c["result_data"]}
    assert d["result_data"]["input"]["b"]["from_a"] == 7
    assert at(b["completed_at"]) < at(c["completed_at"])
    assert at(b["claimed_at"]) >= at(a["completed_at"]) <= at(c["claimed_at"])
    assert at(d["claimed_at"]) >= at(c["completed_at"])
    for dependent in (b, c, d):
        assert transitions(dependent) == [
            (None, "BLOCKED"),
            ("BLOCKED", "PENDING"),
            ("PENDING", "ASSIGNED"),
            ("ASSIGNED", "ACTIVE"),
            ("ACTIVE", "COMPLETED"),
        ]
        released = event(dependent, "BLOCKED", "PENDING")
        assert released["reason"] == "dependencies completed"
        assert released["actor"] == "system"
        assert dependent["pending_dependencies"] == 0
        # Routed in the commit that released it (the agents had free slots), to the agent
        # that then claimed it.
        routed = event(dependent, "PENDING", "ASSIGNED")
        assert (routed["at"], routed["actor"]) == (released["at"], "system:router")
        assert routed["data"]["routing"]["winner"] == dependent["assigned_agent_id"]
        assert event(dependent, "ASSIGNED", "ACTIVE")["actor"] == (
            f"agent:{dependent['assigned_agent_id']}"
        )
    # Released by the transaction that completed C, the last of its dependencies.
    assert event(d, "BLOCKED", "PENDING")["at"] == c["completed_at"]
    assert event(d, None, "BLOCKED")["reason"] == "submitted: waiting for 2 dependencies"
    graph = api.get(f"/ains/tasks/{d_id}/dependencies")
    assert {(x["task_id"], x["status"], x["blocking"]) for x in graph["dependencies"]} == {
        (b_id, "COMPLETED", False),
        (c_id, "COMPLETED", False),
    }


def test_it_cancels_everything_downstream_of_a_failed_dependency(
    api: Api, agents: list[Process]
) -> None:
    items = [
        {
            "task_type": "doomed",
            "capability_required": CAPABILITY,
            "input_data": {"fail": "permanent"},
        },
        {"task_type": "after", "capability_required": CAPABILITY, "depends_on": ["@0"]},
        {"task_type": "after-after", "capability_required": CAPABILITY, "depends_on": ["@1"]},
        {"task_type": "unrelated", "capability_required": CAPABILITY},
    ]
    a_id, b_id, c_id, free_id = api.batch(items)

    tasks = wait_for_tasks(api, [a_id, b_id, c_id, free_id])

    a, b, c = tasks[a_id], tasks[b_id], tasks[c_id]
    assert a["status"] == "FAILED" and a["retry_count"] == 0
    assert tasks[free_id]["status"] == "COMPLETED"
    for task, dependency in ((b, a), (c, b)):
        assert task["status"] == "CANCELLED"
        assert task["cancellation_reason"] == f"dependency {dependency['task_id']} failed"
        assert task["cancelled_by"] == "system"
        assert task["claimed_at"] is None and task["assigned_agent_id"] is None
        assert transitions(task) == [(None, "BLOCKED"), ("BLOCKED", "CANCELLED")]
        assert task["events"][-1]["reason"] == f"dependency {dependency['task_id']} failed"
        # The cascade is written by the transaction that failed A.
        assert task["cancelled_at"] == a["completed_at"]


def test_it_releases_dependents_at_once_and_agents_claim_them_promptly(
    app: Flask, web: WebServer, personas: Personas, api: Api
) -> None:
    """The release gap and the claim gap of every dependent over a run of diamonds.

    Diamonds arrive one every SUBMIT_EVERY_SECONDS, so the claim gap measures the wake-up
    of an idle long-polling agent rather than a backlog; B and C race to release D.
    """
    rng = random.Random(20261201)
    running = start_agents(app, web.url, personas.fleet.key, 3, 8, "workflows-latency-agent")
    try:
        diamonds: list[list[str]] = []
        for n in range(DIAMONDS):
            sleeps = tuple(round(rng.uniform(0, high), 3) for high in (0.2, 0.3, 0.3))
            diamonds.append(api.batch(diamond(f"{n}.", sleeps)))
            time.sleep(SUBMIT_EVERY_SECONDS)
        tasks = wait_for_tasks(api, [i for ids in diamonds for i in ids], timeout=60)
    finally:
        stop_agents(running)

    assert {t["status"] for t in tasks.values()} == {"COMPLETED"}
    release_ms: list[float] = []
    route_ms: list[float] = []
    claim_ms: list[float] = []
    out_of_order: list[dict[str, Any]] = []
    for ids in diamonds:
        a, b, c, d = (tasks[task_id] for task_id in ids)
        for dependent, dependencies in ((b, [a]), (c, [a]), (d, [b, c])):
            last = max((x["completed_at"] for x in dependencies), key=at)
            released = event(dependent, "BLOCKED", "PENDING")["at"]
            routed = first_event(dependent, "PENDING", "ASSIGNED")["at"]
            claimed = event(dependent, "ASSIGNED", "ACTIVE")["at"]
            assert claimed == dependent["claimed_at"]
            assert released in {x["completed_at"] for x in dependencies}  # in that commit
            # A routing event carries its router's clock: a claim's pass reads it before it
            # waits for the routing row, so only released <= claimed is certain.
            assert at(released) <= at(claimed) and at(routed) <= at(claimed)
            release_ms.append(ms(released, last))
            route_ms.append(ms(routed, last))
            claim_ms.append(ms(claimed, last))
            if at(released) < at(last):
                out_of_order.append(
                    {
                        "task_id": dependent["task_id"],
                        "released_at": released,
                        "dependencies_completed_at": {
                            x["task_id"]: x["completed_at"] for x in dependencies
                        },
                    }
                )
    figures: dict[str, Any] = {
        "database": "postgresql" if IS_POSTGRES else "sqlite",
        "diamonds": DIAMONDS,
        "submitted_every_seconds": SUBMIT_EVERY_SECONDS,
        "agents": "3 sample agents x 8 slots, long-polling (--wait-seconds 2)",
        "dependents": len(release_ms),
        "release_gap": percentiles(release_ms),
        "route_gap": percentiles(route_ms),
        "claim_gap": percentiles(claim_ms),
        "released_before_last_dependency_completed": out_of_order,
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "workflow-latency.json").write_text(json.dumps(figures, indent=2) + "\n")
    for name in ("release_gap", "route_gap", "claim_gap"):
        f = figures[name]
        print(
            f"{name} ({figures['database']}, {f['n']} dependents): min {f['min_ms']:.1f} ms, "
            f"p50 {f['p50_ms']:.1f} ms, p95 {f['p95_ms']:.1f} ms, max {f['max_ms']:.1f} ms"
        )
    print(f"released before the last dependency's completed_at: {len(out_of_order)}")
    # Sane bounds only: the machine may be busy with other suites.
    assert figures["release_gap"]["p50_ms"] <= 100
    assert min(claim_ms) >= 0  # claims are stamped after the rows are locked
    assert figures["claim_gap"]["max_ms"] < 5000
    # When B and C complete together, the report that commits last may have stamped its
    # time first (it waited for D's row lock); D's release must still not predate either.
    assert out_of_order == [], out_of_order
