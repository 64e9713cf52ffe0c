"""Retries through the API: each policy's delays, jitter, the cap, the agent's hints, and
exhaustion with the whole attempt and error history visible on the task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask

from app.models import Agent
from app.services.settings import settings
from tests.api.lifecycle_support import beat, detail, fail, report, running
from tests.api.support import T0, assert_error, load, parse_time, unchanged
from tests.conftest import Api, Personas

# Seed 004: exponential 2·2^n s, linear 5·(1+n) s, fixed 10 s, for retries n = 0, 1, 2, 3.
POLICY_DELAYS = [
    ("exponential", [2, 4, 8, 16]),
    ("linear", [5, 10, 15, 20]),
    ("fixed", [10, 10, 10, 10]),
]


@pytest.fixture
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "retry_jitter", "none")


@pytest.fixture
def full_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "retry_jitter", "full")


def now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.parametrize(("policy", "delays"), POLICY_DELAYS)
def test_it_waits_each_policy_delay_then_fails_for_good_with_the_whole_history(
    app: Flask, api: Api, personas: Personas, no_jitter: None, policy: str, delays: list[int]
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        agent_id, agent = api.register_agent(personas.fleet)
        task_id = api.submit(personas.client, retry_policy=policy, max_retries=len(delays))[
            "task_id"
        ]
        for n, delay in enumerate(delays):
            [claimed] = api.claim(agent_id, agent)
            assert (claimed["task_id"], claimed["attempt"]) == (task_id, n + 1)
            failed_at = now()
            body = fail(api, agent, task_id, error_message=f"boom {n}", attempt=n + 1)
            assert body["status"] == "PENDING"
            assert body["retry_count"] == n + 1
            assert body["last_error"] == f"boom {n}"
            assert parse_time(body["next_retry_at"]) == failed_at + timedelta(seconds=delay)
            clock.shift(timedelta(seconds=delay) - timedelta(milliseconds=1))
            # Kept fresh (routing skips agents silent for a lease): only the delay holds it.
            beat(api, agent_id, agent)
            assert api.claim(agent_id, agent) == [], f"claimable before retry {n + 1} is due"
            clock.shift(timedelta(milliseconds=1))
        [claimed] = api.claim(agent_id, agent)
        assert claimed["attempt"] == len(delays) + 1
        final = fail(api, agent, task_id, error_message="boom for good")
        assert final["status"] == "FAILED"
        assert final["retry_count"] == len(delays)
        assert final["next_retry_at"] is None and final["completed_at"] is not None
        clock.shift(timedelta(hours=1))
        beat(api, agent_id, agent)
        assert api.claim(agent_id, agent) == []

    shown = detail(api, personas.client, task_id)
    assert shown["last_error"] == "boom for good"
    attempts = shown["attempts"]
    assert [a["attempt"] for a in attempts] == list(range(1, len(delays) + 2))
    assert {a["outcome"] for a in attempts} == {"failed"}
    assert [a["error"] for a in attempts] == [f"boom {n}" for n in range(len(delays))] + [
        "boom for good"
    ]
    assert {a["agent_id"] for a in attempts} == {agent_id}
    assert all(parse_time(a["ended_at"]) >= parse_time(a["started_at"]) for a in attempts)
    retries = [
        e for e in shown["events"] if (e["from_status"], e["to_status"]) == ("ACTIVE", "PENDING")
    ]
    assert [e["data"]["retry_in_seconds"] for e in retries] == delays
    assert [e["reason"] for e in retries] == [
        f"retry {n + 1} of {len(delays)} in {d:.1f}s: boom {n}" for n, d in enumerate(delays)
    ]
    assert shown["events"][-1]["to_status"] == "FAILED"
    assert f"no retries left of {len(delays)}" in shown["events"][-1]["reason"]
    stored = load(app, Agent, agent_id)
    assert stored.total_tasks_failed == len(delays) + 1 and stored.active_tasks == 0
    dead = api.get("/ains/dead-letter", personas.client).get_json()["tasks"]
    assert [t["task_id"] for t in dead] == [task_id]


def fail_many(api: Api, personas: Personas, count: int, **fields: Any) -> tuple[str, Any, list]:
    """``count`` tasks claimed by one agent and failed at the same instant."""
    agent_id, agent = api.register_agent(personas.fleet, slots=count)
    for n in range(count):
        api.submit(personas.client, input_data={"n": n}, **fields)
    claimed = api.claim(agent_id, agent, max_tasks=count)
    assert len(claimed) == count
    bodies = [fail(api, agent, t["task_id"]) for t in claimed]
    return agent_id, agent, bodies


def test_full_jitter_spreads_retries_over_zero_to_the_delay_and_claims_follow_it(
    api: Api, personas: Personas, full_jitter: None
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        agent_id, agent, bodies = fail_many(api, personas, 24, retry_policy="fixed")
        waits = {
            b["task_id"]: (parse_time(b["next_retry_at"]) - T0).total_seconds() for b in bodies
        }
        assert all(0 <= w <= 10 for w in waits.values()), waits
        # Uniform over [0, 10]: 24 draws all on one side of 5 s has odds of 2^-23.
        assert min(waits.values()) < 5 < max(waits.values())
        assert len(set(waits.values())) > 1
        clock.shift(timedelta(seconds=5))
        due = {tid for tid, w in waits.items() if w <= 5}
        assert {t["task_id"] for t in api.claim(agent_id, agent, max_tasks=24)} == due
    for body in bodies:
        events = detail(api, personas.client, body["task_id"])["events"]
        [retry] = [e for e in events if (e["from_status"], e["to_status"]) == ("ACTIVE", "PENDING")]
        assert retry["data"]["retry_in_seconds"] == pytest.approx(waits[body["task_id"]], abs=1e-3)


@pytest.mark.parametrize(("policy", "delays"), [("exponential", [2, 3, 3]), ("linear", [3, 3, 3])])
def test_the_cap_bounds_each_policy_delay(
    api: Api,
    personas: Personas,
    no_jitter: None,
    monkeypatch: pytest.MonkeyPatch,
    policy: str,
    delays: list[int],
) -> None:
    monkeypatch.setattr(settings, "retry_max_delay_seconds", 3)
    with time_machine.travel(T0, tick=False) as clock:
        agent_id, agent = api.register_agent(personas.fleet)
        task_id = api.submit(personas.client, retry_policy=policy, max_retries=3)["task_id"]
        for delay in delays:
            api.claim(agent_id, agent)
            body = fail(api, agent, task_id)
            assert parse_time(body["next_retry_at"]) - now() == timedelta(seconds=delay)
            clock.shift(timedelta(seconds=delay))


def test_the_cap_also_bounds_the_jittered_delay(
    api: Api, personas: Personas, full_jitter: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "retry_max_delay_seconds", 1)
    with time_machine.travel(T0, tick=False):
        _, _, bodies = fail_many(api, personas, 12, retry_policy="fixed")
    assert all(0 <= (parse_time(b["next_retry_at"]) - T0).total_seconds() <= 1 for b in bodies)


def test_retry_after_seconds_replaces_the_policy_delay_without_jitter(
    api: Api, personas: Personas, full_jitter: None
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(api, personas, retry_policy="exponential")
        body = fail(api, agent, task_id, error_message="429", retry_after_seconds=42.5)
        assert body["status"] == "PENDING" and body["retry_count"] == 1
        assert parse_time(body["next_retry_at"]) == T0 + timedelta(seconds=42.5)
        clock.shift(timedelta(seconds=42.4))
        # Kept fresh (routing skips agents silent for a lease): only the delay holds it.
        beat(api, agent_id, agent)
        assert api.claim(agent_id, agent) == []
        clock.shift(timedelta(seconds=0.1))
        assert [t["attempt"] for t in api.claim(agent_id, agent)] == [2]
    event = [
        e for e in detail(api, personas.client, task_id)["events"] if e["to_status"] == "PENDING"
    ]
    assert event[-1]["data"]["retry_in_seconds"] == 42.5


def test_retry_after_zero_makes_the_task_claimable_at_once(
    api: Api, personas: Personas, full_jitter: None
) -> None:
    with time_machine.travel(T0, tick=False):
        task_id, agent_id, agent = running(api, personas, retry_policy="fixed")
        fail(api, agent, task_id, retry_after_seconds=0)
        assert [t["task_id"] for t in api.claim(agent_id, agent)] == [task_id]


def test_an_agents_retry_after_is_honoured_beyond_the_cap(
    api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cap bounds the policy's own delays; an explicit hint (a rate limit's Retry-After)
    # is the agent's knowledge and is kept.
    monkeypatch.setattr(settings, "retry_max_delay_seconds", 5)
    with time_machine.travel(T0, tick=False):
        task_id, _, agent = running(api, personas)
        body = fail(api, agent, task_id, retry_after_seconds=600)
    assert parse_time(body["next_retry_at"]) == T0 + timedelta(seconds=600)


def test_retryable_false_fails_at_once_even_with_retries_and_a_hint(
    app: Flask, api: Api, personas: Personas
) -> None:
    task_id, agent_id, agent = running(api, personas, max_retries=5)
    body = fail(
        api, agent, task_id, error_message="bad input", retryable=False, retry_after_seconds=5
    )
    assert body["status"] == "FAILED"
    assert body["retry_count"] == 0 and body["next_retry_at"] is None
    assert body["assigned_agent_id"] == agent_id
    shown = detail(api, personas.client, task_id)
    assert [(a["outcome"], a["error"]) for a in shown["attempts"]] == [("failed", "bad input")]
    assert shown["events"][-1]["reason"] == "bad input (not retryable)"
    assert api.claim(agent_id, agent) == []


def test_max_retries_zero_fails_on_the_first_failure(api: Api, personas: Personas) -> None:
    task_id, _, agent = running(api, personas, max_retries=0)
    body = fail(api, agent, task_id)
    assert body["status"] == "FAILED" and body["retry_count"] == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"retry_after_seconds": -1},
        {"retry_after_seconds": 86401},
        {"retry_after_seconds": "5"},
        {"retry_after_seconds": True},
        {"retryable": "no"},
        {"retryable": 0},
        {"error_message": ""},
        {"error_message": None},
        {"attempt": 0},
        {"attempt": "1"},
        {"attempt": True},
        {"retry_in": 5},
    ],
)
def test_it_refuses_a_malformed_fail_report_and_changes_nothing(
    app: Flask, api: Api, personas: Personas, bad: dict[str, Any]
) -> None:
    task_id, _, agent = running(api, personas)
    field = next(iter(bad))
    with unchanged(app):
        response = report(api, agent, task_id, "fail", **{"error_message": "x", **bad})
        assert_error(response, 422, "validation_error", field)


def test_a_retry_goes_to_another_agent_with_a_free_slot(
    app: Flask, api: Api, personas: Personas, no_jitter: None
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, first_id, first = running(api, personas, name="first", retry_policy="fixed")
        second_id, second = api.register_agent(personas.fleet, name="second")
        fail(api, first, task_id)
        clock.shift(timedelta(seconds=10))
        # A task the first agent never failed is still its to take.
        fresh = api.submit(personas.client)["task_id"]
        assert [t["task_id"] for t in api.claim(first_id, first)] == [fresh]
        report(api, first, fresh, "complete")
        assert api.claim(first_id, first) == [], "the failed task waits for the other agent"
        [taken] = api.claim(second_id, second)
        assert (taken["task_id"], taken["attempt"]) == (task_id, 2)
    agents = [a["agent_id"] for a in detail(api, personas.client, task_id)["attempts"]]
    assert agents == [first_id, second_id]


@pytest.mark.parametrize("other", ["full", "inactive", "incapable"])
def test_a_retry_returns_to_the_agent_that_failed_it_when_no_other_can_take_it(
    api: Api, personas: Personas, no_jitter: None, other: str
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, first_id, first = running(api, personas, name="first", retry_policy="fixed")
        capabilities = ("translate-v1",) if other == "incapable" else ("report-v1",)
        second_id, second = api.register_agent(
            personas.fleet, name="second", capabilities=capabilities
        )
        if other == "full":
            busy = api.submit(personas.client)["task_id"]
            assert [t["task_id"] for t in api.claim(second_id, second)] == [busy]
        elif other == "inactive":
            beat(api, second_id, second, status="OFFLINE")
        fail(api, first, task_id)
        clock.shift(timedelta(seconds=10))
        [taken] = api.claim(first_id, first)
        assert (taken["task_id"], taken["attempt"]) == (task_id, 2)
