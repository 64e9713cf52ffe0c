"""Trust: scores moved by attempt outcomes, clamped and recorded; levels; poison tasks;
manual adjustments; history, leaderboard and sparkline reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from app.extensions import db
from app.lib.clock import utcnow
from app.models import Agent, Task, TaskEvent, TaskStatus, TrustRecord
from app.services import trust
from app.services.agents import record_heartbeat
from app.services.cancellation import cancel_task
from app.services.dispatch import claim_tasks
from app.services.errors import InvalidInput, NotFound, NotPermitted
from app.services.lifecycle import sweep
from app.services.reports import complete_task, fail_task
from app.services.settings import settings
from tests.services.conftest import Actors
from tests.services.factories import make_agent, make_task


@pytest.fixture(autouse=True)
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "retry_jitter", "none")


def claim_one(actors: Actors, agents: Sequence[Agent], now: datetime) -> tuple[Agent, Task]:
    """The first of ``agents`` that gets a task from a claim, and that task."""
    for agent in agents:
        claimed = claim_tasks(actors.fleet, agent.id, 1, now=now)
        if claimed:
            return agent, claimed[0]
    raise AssertionError("no agent could claim a task")


def records(agent_id: str) -> list[TrustRecord]:
    """The agent's trust records, oldest first."""
    return list(reversed(trust.trust_history(agent_id, limit=500)))


def score(agent_id: str) -> float:
    db.session.expire_all()
    agent = db.session.get(Agent, agent_id)
    assert agent is not None
    return agent.trust_score


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (1.0, "excellent"),
        (0.9, "excellent"),
        (0.8999, "high"),
        (0.7, "high"),
        (0.7000000001, "high"),
        (0.6999999999, "high"),  # float noise around 0.7 is 0.7
        (0.6999, "medium"),
        (0.5, "medium"),
        (0.4999, "low"),
        (0.3, "low"),
        (0.2999, "very_low"),
        (0.0, "very_low"),
    ],
)
def test_it_maps_scores_to_the_seed_levels_at_the_boundaries(value: float, level: str) -> None:
    assert trust.trust_level(value) == level


def test_the_levels_table_is_ordered_best_first() -> None:
    assert [name for _, name, _ in trust.LEVELS] == [
        "excellent",
        "high",
        "medium",
        "low",
        "very_low",
    ]
    assert [minimum for minimum, _, _ in trust.LEVELS] == [0.9, 0.7, 0.5, 0.3, 0.0]


def test_a_completed_attempt_adds_002_and_records_it(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    task = make_task(actors.client, t)
    _, claimed = claim_one(actors, [agent], t)
    complete_task(actors.fleet, claimed.id, {"ok": True}, now=t + timedelta(seconds=4))
    assert score(agent.id) == 0.52
    [record] = records(agent.id)
    assert record.event_type == "task_completed"
    assert record.task_id == task.id
    assert (record.trust_score_before, record.trust_score_after, record.trust_delta) == (
        0.5,
        0.52,
        0.02,
    )
    assert record.reason == f"task {task.id} completed (attempt 1)"
    assert record.actor == f"agent:{agent.id}"


def test_a_failed_attempt_takes_005_and_a_retry_changes_nothing_more(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    task = make_task(actors.client, t, max_retries=2)
    claim_one(actors, [agent], t)
    failed = fail_task(actors.fleet, task.id, "disk full", now=t)
    assert failed.status == TaskStatus.PENDING  # retried: trust is about the attempt
    assert score(agent.id) == 0.45
    [record] = records(agent.id)
    assert (record.event_type, record.trust_delta, record.task_id) == (
        "task_failed",
        -0.05,
        task.id,
    )
    assert "disk full" in (record.reason or "") and "attempt 1" in (record.reason or "")


def test_a_timeout_and_a_lost_agent_each_take_005(actors: Actors) -> None:
    t = utcnow()
    slow = make_agent(actors.fleet, t)
    timed = make_task(actors.client, t, timeout_seconds=5, max_retries=0)
    claim_one(actors, [slow], t)
    sweep(now=t + timedelta(seconds=6))
    assert db.session.get(Task, timed.id).status == TaskStatus.FAILED
    assert [(r.event_type, r.trust_delta) for r in records(slow.id)] == [("task_timed_out", -0.05)]

    later = t + timedelta(hours=1)
    silent = make_agent(actors.fleet, later, capabilities=("lost-v1",))
    lost = make_task(actors.client, later, capability_required="lost-v1", max_retries=0)
    claim_one(actors, [silent], later)
    sweep(now=later + timedelta(seconds=settings.lease_seconds + 1))
    assert db.session.get(Task, lost.id).status == TaskStatus.FAILED
    assert [(r.event_type, r.trust_delta, r.task_id) for r in records(silent.id)] == [
        ("agent_lost", -0.05, lost.id)
    ]
    assert score(silent.id) == 0.45


def test_a_cancellation_changes_no_trust(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t, slots=2)
    running = make_task(actors.client, t)
    waiting = make_task(actors.client, t, capability_required="idle-v1")
    claim_one(actors, [agent], t)
    cancel_task(actors.client, running.id, "no longer needed", now=t)
    cancel_task(actors.client, waiting.id, None, now=t)
    # The agent confirms the stop with a fail report: still a cancellation.
    confirmed = fail_task(actors.fleet, running.id, "stopped", now=t + timedelta(seconds=1))
    assert confirmed.status == TaskStatus.CANCELLED
    assert score(agent.id) == 0.5
    assert records(agent.id) == []


def test_it_clamps_at_1_and_at_0_and_records_the_applied_delta(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t, slots=2)
    agent.trust_score = 0.99
    db.session.commit()
    make_task(actors.client, t)
    _, claimed = claim_one(actors, [agent], t)
    complete_task(actors.fleet, claimed.id, {}, now=t)
    assert score(agent.id) == 1.0
    top = records(agent.id)[-1]
    assert (top.trust_score_before, top.trust_score_after, top.trust_delta) == (0.99, 1.0, 0.01)

    again = make_task(actors.client, t)
    claim_one(actors, [agent], t)
    complete_task(actors.fleet, again.id, {}, now=t)
    capped = records(agent.id)[-1]
    assert (capped.trust_score_before, capped.trust_score_after, capped.trust_delta) == (
        1.0,
        1.0,
        0.0,
    )

    agent = db.session.get(Agent, agent.id)
    agent.trust_score = 0.03
    db.session.commit()
    failing = make_task(actors.client, t, max_retries=0)
    claim_one(actors, [agent], t)
    fail_task(actors.fleet, failing.id, "boom", now=t)
    assert score(agent.id) == 0.0
    floor = records(agent.id)[-1]
    assert (floor.trust_score_before, floor.trust_score_after, floor.trust_delta) == (
        0.03,
        0.0,
        -0.03,
    )


def test_scores_do_not_drift_over_many_steps(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    for _ in range(10):
        trust.apply(agent.id, 0.02, event_type="task_completed", actor="test", now=t)
    db.session.commit()
    assert score(agent.id) == 0.7
    assert trust.trust_level(score(agent.id)) == "high"


def test_metrics_stay_in_step_with_a_mix_of_outcomes(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    timeouts = [60, 60, 60, 5, 60]
    tasks = [make_task(actors.client, t, max_retries=0, timeout_seconds=n) for n in timeouts]
    # Completed in 4 s, completed in 20 s, failed, timed out, cancelled.
    claim_one(actors, [agent], t)
    complete_task(actors.fleet, tasks[0].id, {}, now=t + timedelta(seconds=4))
    claim_one(actors, [agent], t + timedelta(seconds=4))
    second_done = t + timedelta(seconds=24)
    record_heartbeat(
        actors.fleet,
        agent.id,
        health_status="ACTIVE",
        uptime_ms=1,
        metrics={},
        interval_seconds=10,
        now=t + timedelta(seconds=20),
    )
    complete_task(actors.fleet, tasks[1].id, {}, now=second_done)
    claim_one(actors, [agent], second_done)
    fail_task(actors.fleet, tasks[2].id, "boom", now=second_done)
    claim_one(actors, [agent], second_done)
    sweep(now=second_done + timedelta(seconds=6))
    claim_one(actors, [agent], second_done + timedelta(seconds=6))
    cancel_task(actors.client, tasks[4].id, "stop", now=second_done + timedelta(seconds=7))
    fail_task(actors.fleet, tasks[4].id, "stopped", now=second_done + timedelta(seconds=8))

    statuses = [db.session.get(Task, task.id).status for task in tasks]
    assert statuses == ["COMPLETED", "COMPLETED", "FAILED", "FAILED", "CANCELLED"]
    db.session.expire_all()
    agent = db.session.get(Agent, agent.id)
    summary = trust.trust_summary(agent)
    assert summary["metrics"] == {
        "total_tasks_completed": 2,
        "total_tasks_failed": 2,
        "success_rate": 0.5,
        "avg_completion_time_seconds": 12.0,
        "last_task_completed_at": second_done.isoformat(),
    }
    assert summary["trust_score"] == 0.44 and summary["trust_level"] == "low"
    assert agent.active_tasks == 0
    events = [r.event_type for r in records(agent.id)]
    assert events == ["task_completed", "task_completed", "task_failed", "task_timed_out"]


def test_success_rate_is_none_before_any_outcome(actors: Actors) -> None:
    agent = make_agent(actors.fleet, utcnow())
    assert trust.success_rate(agent) is None
    assert trust.trust_summary(agent)["metrics"]["success_rate"] is None
    assert trust.trust_summary(agent)["trust_level"] == "medium"


def test_a_task_failing_on_three_different_agents_is_poison_and_refunded(
    actors: Actors,
) -> None:
    t = utcnow()
    agents = [make_agent(actors.fleet, t) for _ in range(3)]
    bystander_task = make_task(actors.client, t, capability_required="other-v1")
    task = make_task(actors.client, t, max_retries=10)
    failed_on: list[str] = []
    for n in range(10):
        agent, claimed = claim_one(actors, agents, t + timedelta(seconds=n))
        assert claimed.id == task.id
        failed_on.append(agent.id)
        result = fail_task(
            actors.fleet, task.id, f"boom {n}", retry_after_seconds=0, now=t + timedelta(seconds=n)
        )
        if result.is_terminal:
            break
    assert len(set(failed_on)) == 3
    task = db.session.get(Task, task.id)
    assert task.status == TaskStatus.FAILED and task.poison is True
    assert "failed on 3 different agents" in (task.error_message or "")
    assert "poison" in (task.error_message or "")
    assert task.retry_count < task.max_retries
    last = db.session.scalars(
        db.select(TaskEvent).where(TaskEvent.task_id == task.id).order_by(TaskEvent.id.desc())
    ).first()
    assert last is not None and last.to_status == "FAILED" and last.data["poison"] is True
    for agent in agents:
        assert score(agent.id) == 0.5  # back where it was
        history = records(agent.id)
        losses = [r for r in history if r.trust_delta < 0]
        [refund] = [r for r in history if r.event_type == "poison_refund"]
        assert refund.task_id == task.id
        assert refund.trust_delta == pytest.approx(-sum(r.trust_delta for r in losses))
        assert "poison" in (refund.reason or "")
    # Metrics count attempt outcomes; the refund does not erase them.
    assert sum(db.session.get(Agent, a.id).total_tasks_failed for a in agents) == len(failed_on)
    assert db.session.get(Task, bystander_task.id).poison is False


def test_a_task_failing_three_times_on_one_agent_is_not_poison(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    task = make_task(actors.client, t, max_retries=3)
    for n in range(4):
        claim_one(actors, [agent], t)
        result = fail_task(actors.fleet, task.id, "boom", retry_after_seconds=0, now=t)
        # Retried (waiting, or routed back to the only agent) until the retries run out.
        assert result.is_terminal == (n == 3)
        assert result.poison is False
    assert result.status == TaskStatus.FAILED and result.error_message == "boom"
    assert score(agent.id) == 0.3
    assert [r.event_type for r in records(agent.id)] == ["task_failed"] * 4


def test_a_poison_refund_is_clamped_and_not_paid_twice(
    actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "poison_agent_count", 2)
    t = utcnow()
    first, second = make_agent(actors.fleet, t), make_agent(actors.fleet, t)
    task = make_task(actors.client, t, max_retries=5)
    agent, _ = claim_one(actors, [first, second], t)
    fail_task(actors.fleet, task.id, "boom", retry_after_seconds=0, now=t)
    # Meanwhile an admin lifts the first agent to the top: its refund is clamped.
    trust.adjust_trust(actors.admin, agent.id, 1.0, "trusted partner", now=t)
    other = second if agent.id == first.id else first
    assert claim_one(actors, [other], t)[0].id == other.id
    result = fail_task(actors.fleet, task.id, "boom", retry_after_seconds=0, now=t)
    assert result.status == TaskStatus.FAILED and result.poison is True
    assert score(agent.id) == 1.0 and score(other.id) == 0.5
    capped = records(agent.id)[-1]
    assert (capped.event_type, capped.trust_delta) == ("poison_refund", 0.0)
    # Already refunded losses are settled: a second pass finds nothing owed.
    assert trust.unrefunded_losses(task.id) == {}


def test_adjust_trust_is_admin_only_validated_and_audited(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    for who in (actors.client, actors.fleet):
        with pytest.raises(NotPermitted):
            trust.adjust_trust(who, agent.id, 0.1, "why not")
    for bad in (0, 0.0, 1.5, -1.01, float("nan"), float("inf"), True):
        with pytest.raises(InvalidInput) as err:
            trust.adjust_trust(actors.admin, agent.id, bad, "reason")
        assert err.value.details[0]["field"] == "delta"
    for reason in ("", "   ", "x" * 501):
        with pytest.raises(InvalidInput) as err:
            trust.adjust_trust(actors.admin, agent.id, 0.1, reason)
        assert err.value.details[0]["field"] == "reason"
    with pytest.raises(NotFound):
        trust.adjust_trust(actors.admin, "agent_nope", 0.1, "reason")
    assert records(agent.id) == []

    record = trust.adjust_trust(actors.admin, agent.id, -0.25, "  flaky results  ", now=t)
    assert record.event_type == "manual_adjustment"
    assert record.actor == actors.admin.actor == "admin:admin"
    assert record.reason == "flaky results"
    assert (record.trust_score_before, record.trust_score_after, record.trust_delta) == (
        0.5,
        0.25,
        -0.25,
    )
    assert record.task_id is None
    assert score(agent.id) == 0.25
    floor = trust.adjust_trust(actors.admin, agent.id, -1, "banned", now=t)
    assert (floor.trust_score_after, floor.trust_delta) == (0.0, -0.25)


def test_history_leaderboard_and_sparkline(actors: Actors) -> None:
    t = utcnow()
    low, top, mid, tied = (make_agent(actors.fleet, t) for _ in range(4))
    trust.adjust_trust(actors.admin, low.id, -0.3, "bad", now=t)
    trust.adjust_trust(actors.admin, top.id, 0.45, "great", now=t)
    for n in range(3):
        trust.adjust_trust(actors.admin, mid.id, 0.05, f"step {n}", now=t + timedelta(seconds=n))
    db.session.execute(
        update(Agent).where(Agent.id == tied.id).values(trust_score=0.65, total_tasks_completed=4)
    )
    db.session.commit()

    history = trust.trust_history(mid.id, limit=2)
    assert [r.reason for r in history] == ["step 2", "step 1"]

    board = trust.leaderboard(actors.client)
    assert [e["agent_id"] for e in board] == [top.id, tied.id, mid.id, low.id]
    assert [e["rank"] for e in board] == [1, 2, 3, 4]
    assert board[0]["trust_level"] == "excellent" and board[0]["trust_score"] == 0.95
    assert board[2]["trust_score"] == 0.65 and board[2]["total_tasks_completed"] == 0
    assert set(board[0]) == {
        "rank",
        "agent_id",
        "display_name",
        "trust_score",
        "trust_level",
        "total_tasks_completed",
        "total_tasks_failed",
        "success_rate",
        "avg_completion_time_seconds",
        "status",
    }
    assert len(trust.leaderboard(actors.admin, limit=2)) == 2

    lines = trust.sparkline_points([mid.id, low.id, tied.id, "agent_nope"])
    assert lines[mid.id] == [0.5, 0.55, 0.6, 0.65]
    assert lines[low.id] == [0.5, 0.2]
    assert lines[tied.id] == [] and lines["agent_nope"] == []
    assert trust.sparkline_points([mid.id], limit=2)[mid.id] == [0.55, 0.6, 0.65]
    assert trust.sparkline_points([]) == {}


def test_get_trust_follows_agent_visibility(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    trust.adjust_trust(actors.admin, agent.id, 0.1, "good", now=t)
    shown = trust.get_trust(actors.client, agent.id, limit=1)
    assert shown["trust_score"] == 0.6 and shown["trust_level"] == "medium"
    assert [r["reason"] for r in shown["records"]] == ["good"]
    with pytest.raises(NotFound):
        trust.get_trust(actors.client, "agent_nope")
