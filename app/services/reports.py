"""Agents report on the tasks they hold: progress, the result, or a failure.

Fencing: a report names the attempt it belongs to (the claim gave it). A report from an
attempt that is no longer current (the task timed out, was taken back from a silent agent,
or runs again elsewhere) is a 409 and changes nothing, so a slow agent that wakes up late
cannot overwrite the new attempt's result.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.extensions import db
from app.lib.clock import utcnow
from app.models import Agent, Role, Task, TaskAttempt, TaskStatus
from app.services.attempts import (
    record_cancellation,
    record_completion,
    record_failure,
    record_timeout,
)
from app.services.errors import CancelRequested, Conflict, NotFound, StaleAttempt
from app.services.principal import Principal
from app.services.settings import settings


def held_before(principal: Principal, task: Task, attempt: int | None) -> bool:
    """Did an agent this principal acts for run an earlier attempt of the task?"""
    query = db.select(TaskAttempt.agent_id).where(TaskAttempt.task_id == task.id)
    if attempt is not None:
        query = query.where(TaskAttempt.number == attempt)
    for agent_id in set(db.session.scalars(query)):
        agent = db.session.get(Agent, agent_id)
        if agent is not None and principal.acts_for(agent):
            return True
    return False


def load_reportable(
    principal: Principal, task_id: str, attempt: int | None, now: datetime
) -> tuple[Task, Agent]:
    """The ACTIVE task the calling agent holds in this attempt, locked for the report."""
    principal.require_role(Role.AGENT)
    task = db.session.scalars(db.select(Task).where(Task.id == task_id).with_for_update()).first()
    if task is None:
        db.session.rollback()
        raise NotFound(f"task {task_id!r} not found")
    agent = db.session.get(Agent, task.assigned_agent_id) if task.assigned_agent_id else None
    holds = agent is not None and principal.acts_for(agent)
    current = task.status == TaskStatus.ACTIVE and holds
    if current and (attempt is None or attempt == task.attempt):
        assert agent is not None
        if task.timeout_at is not None and now > task.timeout_at:
            # Past the deadline the attempt is over, whether or not the sweep has run yet.
            record_timeout(task, now)
            db.session.commit()
            raise Conflict(
                f"task {task_id!r} timed out after {task.timeout_seconds} seconds: "
                "the report was not applied"
            )
        return task, agent
    # Not (or no longer) this caller's to report on: say why without leaking other tasks.
    status, number = task.status, task.attempt
    was_ours = holds or held_before(principal, task, attempt)
    db.session.rollback()
    if not was_ours:
        raise NotFound(f"task {task_id!r} not found")
    if attempt is not None and attempt != number:
        raise StaleAttempt(
            f"attempt {attempt} of task {task_id!r} is no longer current (the task is "
            f"{status}, attempt {number}): the report was not applied"
        )
    if status != TaskStatus.ACTIVE:
        raise Conflict(f"task {task_id!r} is {status}, not ACTIVE: the report was not applied")
    raise StaleAttempt(f"task {task_id!r} now runs on another agent: the report was not applied")


def report_progress(
    principal: Principal,
    task_id: str,
    progress: int,
    message: str | None,
    *,
    attempt: int | None = None,
    now: datetime | None = None,
) -> Task:
    """Record how far the agent has got; this renews the task's lease."""
    now = now or utcnow()
    task, _ = load_reportable(principal, task_id, attempt, now)
    if task.cancel_requested_at is not None:
        db.session.rollback()
        raise CancelRequested(
            f"task {task_id!r} was cancelled: stop working on it and report a failure to confirm"
        )
    task.progress = progress
    task.progress_message = message
    task.updated_at = now
    task.lease_expires_at = now + timedelta(seconds=settings.lease_seconds)
    db.session.commit()
    return task


def complete_task(
    principal: Principal,
    task_id: str,
    result_data: dict[str, Any],
    *,
    attempt: int | None = None,
    now: datetime | None = None,
) -> Task:
    """The agent finished the task.

    A task a client asked to cancel does not complete: the report confirms that the agent
    has stopped, the task ends CANCELLED and the result is refused with a 409.
    """
    now = now or utcnow()
    task, agent = load_reportable(principal, task_id, attempt, now)
    actor = f"agent:{agent.id}"
    if task.cancel_requested_at is not None:
        record_cancellation(
            task, actor=actor, now=now, reason=confirmed_reason(task, "result refused")
        )
        db.session.commit()
        raise CancelRequested(
            f"task {task_id!r} was cancelled before it completed: the result was refused"
        )
    record_completion(task, result_data, actor=actor, now=now)
    db.session.commit()
    return task


def fail_task(
    principal: Principal,
    task_id: str,
    error_message: str,
    *,
    retryable: bool = True,
    retry_after_seconds: float | None = None,
    attempt: int | None = None,
    now: datetime | None = None,
) -> Task:
    """The agent gave up on the task: retry it per its policy, or end it FAILED.

    On a task a client asked to cancel, this is the agent's confirmation: it ends CANCELLED.
    """
    now = now or utcnow()
    task, agent = load_reportable(principal, task_id, attempt, now)
    actor = f"agent:{agent.id}"
    if task.cancel_requested_at is not None:
        record_cancellation(
            task, actor=actor, now=now, reason=confirmed_reason(task, error_message)
        )
    else:
        record_failure(
            task,
            error_message,
            retryable=retryable,
            actor=actor,
            now=now,
            retry_after_seconds=retry_after_seconds,
        )
    db.session.commit()
    return task


def confirmed_reason(task: Task, agent_said: str) -> str:
    why = task.cancellation_reason or "cancel requested"
    return f"cancelled ({why}); the agent stopped: {agent_said}"
