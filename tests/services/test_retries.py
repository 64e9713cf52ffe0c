"""Retry policies: the delay before a failed task can be claimed again, then FAILED."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.extensions import db
from app.lib.clock import utcnow
from app.models import Agent, TaskStatus
from app.services.attempts import retry_delay_seconds
from app.services.dispatch import claim_tasks
from app.services.reports import fail_task
from app.services.settings import settings
from tests.services.conftest import Actors
from tests.services.factories import make_agent, make_task

# Seed 004: exponential 2·2^n s, linear 5·(1+n) s, fixed 10 s, for retries n = 0, 1, 2.
POLICY_DELAYS = [
    ("exponential", [2, 4, 8]),
    ("linear", [5, 10, 15]),
    ("fixed", [10, 10, 10]),
]


@pytest.fixture
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "retry_jitter", "none")


@pytest.mark.parametrize(("policy", "delays"), POLICY_DELAYS)
def test_it_computes_the_policy_delays_without_jitter(policy: str, delays: list[int]) -> None:
    for n, base in enumerate(delays):
        assert retry_delay_seconds(policy, n, jitter="none") == base


@pytest.mark.parametrize(("policy", "delays"), POLICY_DELAYS)
def test_full_jitter_draws_between_zero_and_the_policy_delay(
    policy: str, delays: list[int]
) -> None:
    for n, base in enumerate(delays):
        draws = [retry_delay_seconds(policy, n, jitter="full") for _ in range(400)]
        assert all(0 <= d <= base for d in draws)
        # Spread over the whole range, not clustered at one end.
        assert min(draws) < base * 0.25 and max(draws) > base * 0.75


def test_the_cap_bounds_the_delay_before_jitter() -> None:
    assert retry_delay_seconds("exponential", 20, jitter="none", cap=300) == 300
    assert retry_delay_seconds("linear", 1000, jitter="none", cap=60) == 60
    assert all(
        0 <= retry_delay_seconds("exponential", 30, jitter="full", cap=7) <= 7 for _ in range(50)
    )
    # Huge retry numbers neither overflow nor escape the cap.
    assert retry_delay_seconds("exponential", 10_000, jitter="none", cap=3600) == 3600


@pytest.mark.parametrize(("policy", "delays"), POLICY_DELAYS)
def test_it_holds_a_failed_task_until_next_retry_at_then_fails_it_for_good(
    actors: Actors, policy: str, delays: list[int], no_jitter: None
) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    task = make_task(actors.client, t, retry_policy=policy, max_retries=len(delays))
    for n, base in enumerate(delays):
        [claimed] = claim_tasks(actors.fleet, agent.id, 1, now=t)
        assert claimed.id == task.id and claimed.attempt == n + 1
        failed = fail_task(actors.fleet, task.id, f"boom {n}", now=t)
        assert failed.status == TaskStatus.PENDING
        assert failed.retry_count == n + 1
        assert failed.assigned_agent_id is None
        assert failed.next_retry_at is not None
        delay = (failed.next_retry_at - t).total_seconds()
        assert delay == base, (n, delay)
        just_before = failed.next_retry_at - timedelta(milliseconds=1)
        assert claim_tasks(actors.fleet, agent.id, 1, now=just_before) == []
        t = failed.next_retry_at

    [claimed] = claim_tasks(actors.fleet, agent.id, 1, now=t)
    assert claimed.attempt == len(delays) + 1
    final = fail_task(actors.fleet, task.id, "boom for good", now=t)
    assert final.status == TaskStatus.FAILED
    assert final.retry_count == len(delays)
    assert final.error_message == "boom for good"
    assert final.completed_at == t
    assert claim_tasks(actors.fleet, agent.id, 1, now=t + timedelta(hours=1)) == []

    db.session.expire_all()
    stored = db.session.get(Agent, agent.id)
    assert stored is not None
    assert stored.active_tasks == 0
    assert stored.total_tasks_failed == len(delays) + 1
    assert stored.total_tasks_completed == 0


def test_it_fails_at_once_when_not_retryable(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    task = make_task(actors.client, t, max_retries=5)
    claim_tasks(actors.fleet, agent.id, 1, now=t)
    failed = fail_task(actors.fleet, task.id, "bad input", retryable=False, now=t)
    assert failed.status == TaskStatus.FAILED
    assert failed.retry_count == 0 and failed.next_retry_at is None


def test_it_lets_another_task_run_while_one_waits_for_its_retry(
    actors: Actors, no_jitter: None
) -> None:
    # Without jitter the retry waits its full 2 s, so at t + 1 s it is still waiting.
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    first = make_task(actors.client, t, priority=10)
    second = make_task(actors.client, t + timedelta(seconds=1), priority=1)
    claim_tasks(actors.fleet, agent.id, 1, now=t)
    fail_task(actors.fleet, first.id, "flaky", now=t)
    [claimed] = claim_tasks(actors.fleet, agent.id, 1, now=t + timedelta(seconds=1))
    assert claimed.id == second.id


def test_retry_after_seconds_from_the_agent_replaces_the_policy_delay(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    task = make_task(actors.client, t, retry_policy="fixed")
    claim_tasks(actors.fleet, agent.id, 1, now=t)
    failed = fail_task(actors.fleet, task.id, "rate limited", retry_after_seconds=42.5, now=t)
    assert failed.status == TaskStatus.PENDING
    assert failed.next_retry_at == t + timedelta(seconds=42.5)
