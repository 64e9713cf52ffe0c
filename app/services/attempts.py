"""Attempts: how a claim of a task ends, what happens next, and what an agent must stop.

Every claim opens one attempt row; every way an ACTIVE task can stop running (completed,
failed, timed out, agent lost, cancelled) closes it here, frees the agent's slot and
decides the task's next status, so the API, the sweeps and the UI all share one path.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, null, tuple_, union_all, update
from sqlalchemy.orm.util import identity_key

from app.extensions import db
from app.lib.clock import isoformat
from app.models import Agent, AttemptOutcome, Task, TaskAttempt, TaskStatus
from app.services import trust
from app.services.settings import settings

RETRY_BASE_SECONDS = {"exponential": 2.0, "linear": 5.0, "fixed": 10.0}


def policy_delay_seconds(policy: str, retry_number: int) -> float:
    """Seed 004 delays: exponential 2·2^n s, linear 5·(1+n) s, fixed 10 s (n from 0)."""
    base = RETRY_BASE_SECONDS[policy]
    if policy == "exponential":
        return base * 2 ** min(retry_number, 40)
    if policy == "linear":
        return base * (1 + retry_number)
    return base


def retry_delay_seconds(
    policy: str,
    retry_number: int,
    *,
    jitter: str | None = None,
    cap: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """The wait before retry ``retry_number``: the policy's delay, capped, then jittered.

    Full jitter (the default) draws uniformly from [0, delay], which spreads a burst of
    failures out instead of retrying them all in the same second.
    """
    jitter = settings.retry_jitter if jitter is None else jitter
    cap = settings.retry_max_delay_seconds if cap is None else cap
    delay = min(policy_delay_seconds(policy, retry_number), cap)
    if jitter == "full":
        return (rng or random).uniform(0.0, delay)
    return delay


def open_attempt(task: Task, agent_id: str, now: datetime) -> None:
    """A claim: the next attempt number, its deadline and lease, and its row."""
    task.attempt += 1
    task.assigned_agent_id = agent_id
    task.claimed_at = now
    task.timeout_at = now + timedelta(seconds=task.timeout_seconds)
    task.lease_expires_at = now + timedelta(seconds=settings.lease_seconds)
    task.next_retry_at = None
    task.progress = None
    task.progress_message = None
    db.session.add(
        TaskAttempt(task_id=task.id, number=task.attempt, agent_id=agent_id, started_at=now)
    )


def close_attempt(
    task: Task, outcome: str, *, actor: str, now: datetime, error: str | None = None
) -> None:
    """End the task's current attempt row (if it is still open)."""
    close_attempts([task], outcome, actor=actor, now=now, error=error)


def close_attempts(
    tasks: Sequence[Task], outcome: str, *, actor: str, now: datetime, error: str | None = None
) -> None:
    """End the current attempt rows of these tasks (those still open) in one UPDATE."""
    if not tasks:
        return
    # Values in the statement (not bound later): the ORM's evaluation of the WHERE clause
    # then updates attempt rows this session holds, as the database does.
    if len(tasks) == 1:
        current = (TaskAttempt.task_id == tasks[0].id) & (TaskAttempt.number == tasks[0].attempt)
    else:
        pairs = [(task.id, task.attempt) for task in tasks]
        current = tuple_(TaskAttempt.task_id, TaskAttempt.number).in_(pairs)
    db.session.execute(
        update(TaskAttempt)
        .where(current, TaskAttempt.outcome == AttemptOutcome.RUNNING)
        .values(outcome=outcome, ended_at=now, error=error, ended_by=actor)
    )


def release_slot(
    agent_id: str, *, completed: bool, failed: bool, run_seconds: float | None, now: datetime
) -> None:
    """Free the agent's slot and keep its outcome counters in step, in one UPDATE."""
    release_slots(
        agent_id,
        1,
        run_seconds=[run_seconds] if completed else [],
        failed=1 if failed else 0,
        now=now,
    )


def release_slots(
    agent_id: str,
    slots: int,
    *,
    now: datetime,
    run_seconds: Sequence[float | None] = (),
    failed: int = 0,
    trust_score: float | None = None,
) -> None:
    """Free ``slots`` of the agent's slots and keep its counters in step, in one UPDATE.

    ``run_seconds`` has one entry per completed attempt among them (None: not timed),
    ``failed`` counts the failed ones; ``trust_score`` is written too when given (the
    caller computed it under the row lock, see trust.on_attempts_completed).
    """
    values: dict[str, Any] = {"active_tasks": Agent.active_tasks - slots, "updated_at": now}
    completed = len(run_seconds)
    if completed:
        values["total_tasks_completed"] = Agent.total_tasks_completed + completed
        values["last_task_completed_at"] = now
        timed = [r for r in run_seconds if r is not None]
        if timed:
            # Running mean over completed tasks, computed in SQL so concurrent reports add up.
            values["avg_completion_time_seconds"] = (
                db.func.coalesce(Agent.avg_completion_time_seconds, 0.0)
                * Agent.total_tasks_completed
                + sum(timed)
            ) / (Agent.total_tasks_completed + completed)
    if failed:
        values["total_tasks_failed"] = Agent.total_tasks_failed + failed
    if trust_score is not None:
        values["trust_score"] = trust_score
    # No synchronising of the session (the ORM's costliest part of this statement): the
    # agent row, if loaded, has these attributes expired instead, to be read again if used.
    db.session.execute(
        update(Agent)
        .where(Agent.id == agent_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    held = db.session.identity_map.get(identity_key(Agent, agent_id))
    if held is not None:
        db.session.expire(held, list(values))


def stop_running(task: Task) -> str | None:
    """Clear the running state of an ACTIVE task; return the agent that held it."""
    agent_id = task.assigned_agent_id
    task.lease_expires_at = None
    task.timeout_at = None
    return agent_id


def record_completion(
    task: Task, result_data: dict[str, Any], *, actor: str, now: datetime
) -> None:
    """An ACTIVE task's attempt succeeded."""
    record_completions([(task, result_data)], actor=actor, now=now)


def record_completions(
    done: Sequence[tuple[Task, dict[str, Any]]], *, actor: str, now: datetime
) -> None:
    """ACTIVE tasks' attempts succeeded, each with its result: what record_completion does
    for one, in a constant number of statements for many.

    The attempt rows close in one UPDATE; per agent (in id order), its trust row is locked
    and read once (trust.on_attempts_completed) and one UPDATE frees its slots and writes
    its counters and score. The task rows go out in one flush, their events in one
    INSERT after it, the trust records in one INSERT before it.
    """
    if not done:
        return
    # Before any task attribute changes: the UPDATE's autoflush then has nothing to write,
    # and the task rows go out in one flush below.
    close_attempts([task for task, _ in done], AttemptOutcome.COMPLETED, actor=actor, now=now)
    by_agent: dict[str, list[tuple[Task, float | None]]] = {}
    for task, result_data in done:
        agent_id = stop_running(task)
        task.result_data = result_data
        task.completed_at = now
        task.progress = 100
        run_seconds = (now - task.claimed_at).total_seconds() if task.claimed_at else None
        task.transition(
            TaskStatus.COMPLETED,
            actor=actor,
            now=now,
            reason="completed",
            data={"attempt": task.attempt, "run_seconds": run_seconds},
        )
        if agent_id is not None:
            by_agent.setdefault(agent_id, []).append((task, run_seconds))
    for agent_id, finished in sorted(by_agent.items()):
        score = trust.on_attempts_completed(
            [task for task, _ in finished], agent_id, actor=actor, now=now
        )
        release_slots(
            agent_id,
            len(finished),
            run_seconds=[run for _, run in finished],
            trust_score=score,
            now=now,
        )


def record_failure(
    task: Task,
    error_message: str,
    *,
    retryable: bool,
    actor: str,
    now: datetime,
    outcome: str = AttemptOutcome.FAILED,
    retry_after_seconds: float | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """End an ACTIVE attempt in failure: back to PENDING after a delay, or FAILED.

    ``retry_after_seconds`` (an agent's hint) replaces the policy's delay.
    """
    # The attempt row first: its UPDATE's autoflush finds the task unchanged yet.
    close_attempt(task, outcome, actor=actor, now=now, error=error_message)
    agent_id = stop_running(task)
    task.error_message = error_message
    # Before release_slot: a poison task locks all the agents it failed on, in id order.
    poison = trust.on_attempt_failed(task, agent_id, outcome, error_message, actor=actor, now=now)
    event_data = {"attempt": task.attempt, "agent_id": agent_id, "outcome": outcome, **(data or {})}
    if poison is None and retryable and task.retry_count < task.max_retries:
        if retry_after_seconds is not None:
            delay = float(retry_after_seconds)
        else:
            delay = retry_delay_seconds(task.retry_policy, task.retry_count)
        task.retry_count += 1
        task.next_retry_at = now + timedelta(seconds=delay)
        task.assigned_agent_id = None
        task.transition(
            TaskStatus.PENDING,
            actor=actor,
            now=now,
            reason=f"retry {task.retry_count} of {task.max_retries} in {delay:.1f}s: "
            f"{error_message}",
            data={**event_data, "retry_in_seconds": round(delay, 3)},
        )
    else:
        task.completed_at = now
        why = poison or (
            "not retryable" if not retryable else f"no retries left of {task.max_retries}"
        )
        if poison is not None:
            task.error_message = f"{error_message} ({why})"
            event_data["poison"] = True
        task.transition(
            TaskStatus.FAILED,
            actor=actor,
            now=now,
            reason=f"{error_message} ({why})",
            data=event_data,
        )
    if agent_id is not None:
        release_slot(agent_id, completed=False, failed=True, run_seconds=None, now=now)


def lateness(deadline: datetime | None, now: datetime) -> dict[str, Any]:
    """Event data recording when something was due and how late it was caught."""
    if deadline is None:
        return {}
    return {
        "deadline": isoformat(deadline),
        "late_ms": round((now - deadline) / timedelta(milliseconds=1)),
    }


def record_timeout(task: Task, now: datetime, *, actor: str = "system:timeout") -> None:
    """An ACTIVE task ran past its execution deadline: it fails, retried only if it asked.

    A task that was also asked to cancel just ends CANCELLED.
    """
    if task.cancel_requested_at is not None:
        record_cancellation(task, actor=actor, now=now, reason="cancelled (timed out meanwhile)")
        return
    record_failure(
        task,
        f"Task timed out after {task.timeout_seconds} seconds",
        retryable=task.retry_on_timeout,
        actor=actor,
        now=now,
        outcome=AttemptOutcome.TIMED_OUT,
        data=lateness(task.timeout_at, now),
    )


def record_cancellation(task: Task, *, actor: str, now: datetime, reason: str) -> None:
    """End a task CANCELLED; a running attempt is closed and its slot freed."""
    agent_id = None
    if task.status == TaskStatus.ACTIVE:
        close_attempt(task, AttemptOutcome.CANCELLED, actor=actor, now=now, error=reason)
        agent_id = stop_running(task)
    task.completed_at = now
    task.cancelled_at = now
    task.next_retry_at = None
    task.transition(
        TaskStatus.CANCELLED,
        actor=actor,
        now=now,
        reason=reason,
        data={"attempt": task.attempt} if agent_id else None,
    )
    if agent_id is not None:
        release_slot(agent_id, completed=False, failed=False, run_seconds=None, now=now)


# Built once (every heartbeat runs one): the agent's running tasks, locked, skipping those
# a report holds; and the same among the ids the agent names.
_RUNNING = db.select(Task.id).where(
    Task.assigned_agent_id == bindparam("agent_id"), Task.status == TaskStatus.ACTIVE
)
RUNNING_LOCKED = _RUNNING.with_for_update(skip_locked=True)
RUNNING_AMONG_LOCKED = _RUNNING.where(
    Task.id.in_(bindparam("ids", expanding=True))
).with_for_update(skip_locked=True)


def renew_leases(agent_id: str, now: datetime, task_ids: Sequence[str] | None = None) -> None:
    """A sign of life: push back the lease of the agent's running tasks.

    With ``task_ids`` (what the agent says it is working on) only those are renewed: a task
    the agent does not know it holds (its claim response was lost) runs out its lease and
    is taken back. Rows locked by a report in flight are skipped (that report ends them),
    so this never waits on a task lock: locks are taken task first, agent second.
    """
    if task_ids is None:
        ids = list(db.session.scalars(RUNNING_LOCKED, {"agent_id": agent_id}))
    elif not task_ids:
        return
    else:
        params = {"agent_id": agent_id, "ids": list(task_ids)}
        ids = list(db.session.scalars(RUNNING_AMONG_LOCKED, params))
    if ids:
        db.session.execute(
            update(Task)
            .where(Task.id.in_(ids))
            .values(lease_expires_at=now + timedelta(seconds=settings.lease_seconds))
        )


# One statement, built once (every claim answer and heartbeat runs it): the agent's
# running tasks a client asked to cancel, then the attempts the server ended lately (with
# their outcome) whose task it does not hold again. Both parts are usually empty, and read
# small indexes: ix_tasks_cancel_requested holds only tasks with a cancel asked, and the
# running tasks are looked up by id, only for the attempts found. (Listing the agent's
# running tasks instead cost a scan of its index entries, dead row versions included, on
# every claim.)
_HOLDS_AGAIN = (
    db.select(Task.id)
    .where(
        Task.id == TaskAttempt.task_id,
        Task.assigned_agent_id == bindparam("agent_id"),
        Task.status == TaskStatus.ACTIVE,
    )
    .exists()
)
STOP_NOTICES = union_all(
    db.select(Task.id.label("task_id"), null().label("outcome")).where(
        Task.assigned_agent_id == bindparam("agent_id"),
        Task.status == TaskStatus.ACTIVE,
        Task.cancel_requested_at.is_not(None),
    ),
    db.select(TaskAttempt.task_id, TaskAttempt.outcome).where(
        TaskAttempt.agent_id == bindparam("agent_id"),
        TaskAttempt.ended_at > bindparam("since"),
        TaskAttempt.outcome.in_(AttemptOutcome.SERVER_ENDED),
        ~_HOLDS_AGAIN,
    ),
)


def stop_notices(agent_id: str, now: datetime) -> dict[str, list[str]]:
    """The tasks this agent must stop working on, for heartbeat and claim responses.

    ``cancelled_task_ids``: running tasks a client asked to cancel, and tasks cancelled
    lately while the agent held them. ``stop_task_ids``: those plus the tasks the server
    took back lately (timed out, agent lost). Repeated for a while so a lost response
    does not lose the notice; an agent ignores ids it is not running. A task taken back
    and claimed again by this same agent runs under a new attempt: the old attempt's
    notice does not stop it.
    """
    since = now - timedelta(seconds=settings.stop_notice_seconds)
    rows = db.session.execute(STOP_NOTICES, {"agent_id": agent_id, "since": since}).all()
    requested = {tid for tid, outcome in rows if outcome is None}
    ended = [(tid, outcome) for tid, outcome in rows if outcome is not None]
    cancelled = requested | {tid for tid, outcome in ended if outcome == AttemptOutcome.CANCELLED}
    stop = cancelled | {tid for tid, _ in ended}
    return {"cancelled_task_ids": sorted(cancelled), "stop_task_ids": sorted(stop)}
