"""Agents report on the tasks they hold: progress, the result, or a failure.

Fencing: a report names the attempt it belongs to (the claim gave it). A report from an
attempt that is no longer current (the task timed out, was taken back from a silent agent,
or runs again elsewhere) is a 409 and changes nothing, so a slow agent that wakes up late
cannot overwrite the new attempt's result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam

from app.extensions import db
from app.lib.clock import utcnow
from app.models import Agent, Role, Task, TaskAttempt, TaskStatus
from app.services.attempts import (
    record_cancellation,
    record_completion,
    record_completions,
    record_failure,
    record_timeout,
)
from app.services.dispatch import commit_keeping_state
from app.services.errors import (
    CancelRequested,
    Conflict,
    DomainError,
    NotFound,
    StaleAttempt,
    invalid,
)
from app.services.principal import Principal, require_agent
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


def acts_for_id(principal: Principal, agent_id: str | None) -> bool:
    """``principal.acts_for`` the agent with this id; a key bound to one agent is compared
    by id, without reading the agent row."""
    if agent_id is None:
        return False
    if not principal.is_admin and principal.role == Role.AGENT and principal.agent_id:
        return agent_id == principal.agent_id
    agent = db.session.get(Agent, agent_id)
    return agent is not None and principal.acts_for(agent)


def load_reportable(
    principal: Principal, task_id: str, attempt: int | None, now: datetime
) -> tuple[Task, str]:
    """The ACTIVE task the calling agent holds in this attempt, locked for the report, and
    the id of that agent."""
    principal.require_role(Role.AGENT)
    task = db.session.scalars(db.select(Task).where(Task.id == task_id).with_for_update()).first()
    if task is None:
        db.session.rollback()
        raise NotFound(f"task {task_id!r} not found")
    holds = acts_for_id(principal, task.assigned_agent_id)
    current = task.status == TaskStatus.ACTIVE and holds
    if current and (attempt is None or attempt == task.attempt):
        assert task.assigned_agent_id is not None
        if task.timeout_at is not None and now > task.timeout_at:
            # Past the deadline the attempt is over, whether or not the sweep has run yet.
            record_timeout(task, now)
            db.session.commit()
            raise timed_out(task)
        return task, task.assigned_agent_id
    # Not (or no longer) this caller's to report on: say why without leaking other tasks.
    status, number = task.status, task.attempt
    was_ours = holds or held_before(principal, task, attempt)
    db.session.rollback()
    raise refusal(task_id, status, number, attempt, was_ours=was_ours)


def refusal(
    task_id: str, status: str, number: int, attempt: int | None, *, was_ours: bool
) -> DomainError:
    """Why a report on a task the caller does not hold (in this attempt) is refused.

    ``was_ours``: an agent the caller acts for holds or held the task (in ``attempt``, when
    given); otherwise the task is "not found", so ids of others' tasks do not leak.
    """
    if not was_ours:
        return NotFound(f"task {task_id!r} not found")
    if attempt is not None and attempt != number:
        return StaleAttempt(
            f"attempt {attempt} of task {task_id!r} is no longer current (the task is "
            f"{status}, attempt {number}): the report was not applied"
        )
    if status != TaskStatus.ACTIVE:
        return Conflict(f"task {task_id!r} is {status}, not ACTIVE: the report was not applied")
    return StaleAttempt(f"task {task_id!r} now runs on another agent: the report was not applied")


def timed_out(task: Task) -> Conflict:
    return Conflict(
        f"task {task.id!r} timed out after {task.timeout_seconds} seconds: "
        "the report was not applied"
    )


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
    task, agent_id = load_reportable(principal, task_id, attempt, now)
    actor = f"agent:{agent_id}"
    if task.cancel_requested_at is not None:
        record_cancellation(
            task, actor=actor, now=now, reason=confirmed_reason(task, "result refused")
        )
        db.session.commit()
        raise cancelled_first(task_id)
    record_completion(task, result_data, actor=actor, now=now)
    # The task was read under lock and every change to it is made here: the answer shows
    # it as written, without reading it back (as a claim's answer does).
    commit_keeping_state()
    return task


def cancelled_first(task_id: str) -> CancelRequested:
    return CancelRequested(
        f"task {task_id!r} was cancelled before it completed: the result was refused"
    )


@dataclass
class ItemOutcome:
    """What became of one result of a batch completion: its task's status, or the error."""

    task_id: str
    status: str | None = None
    error: DomainError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# Built once (every batch completion runs it): the agent's running tasks among ``ids``,
# locked in (created_at, id) order.
RUNNING_FOR_AGENT_LOCKED = (
    db.select(Task)
    .where(
        Task.id.in_(bindparam("ids", expanding=True)),
        Task.status == TaskStatus.ACTIVE,
        Task.assigned_agent_id == bindparam("agent_id"),
    )
    .order_by(Task.created_at, Task.id)
    .with_for_update()
)


def complete_tasks(
    principal: Principal,
    agent_id: str,
    items: Sequence[dict[str, Any]],
    *,
    now: datetime | None = None,
) -> list[ItemOutcome]:
    """The agent finished several tasks: ``complete_task`` for each item, in one transaction.

    ``items``: ``{"task_id", "result", "attempt"?}`` each. Every item stands alone, with the
    single route's checks and effects: a task another agent holds (or that is not found),
    an attempt that is no longer current, a task past its deadline (its timeout is recorded)
    or one a client asked to cancel (it ends CANCELLED, the result refused) fails that item
    only; a task named twice is applied once, at its first item. The outcomes come back in
    item order. Tasks are locked at once, in (created_at, id) order as dependencies lock
    them, then the agent row once for the whole batch (attempts.record_completions).
    """
    now = now or utcnow()
    principal.require_role(Role.AGENT)
    # Not locked here: locks go task first, agent second (attempts.record_completions).
    agent = require_agent(principal, agent_id)
    actor = f"agent:{agent.id}"
    outcomes = [ItemOutcome(item["task_id"]) for item in items]
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        task_id = item["task_id"]
        if task_id in first:
            outcomes[index].error = invalid(
                f"results[{index}].task_id",
                f"task {task_id!r} is already at results[{first[task_id]}]: "
                "a task is reported once per batch",
            )
        else:
            first[task_id] = index
    # Only the tasks this agent can complete are locked: locking the others (a stale id,
    # another's task) would hold rows the batch then leaves alone, against other writers.
    locked = {
        task.id: task
        for task in db.session.scalars(
            RUNNING_FOR_AGENT_LOCKED, {"ids": list(first), "agent_id": agent.id}
        )
    }
    tasks = dict(locked)
    unlocked = [task_id for task_id in first if task_id not in locked]
    if unlocked:  # read only, to say why each is refused
        tasks.update(
            (task.id, task)
            for task in db.session.scalars(db.select(Task).where(Task.id.in_(unlocked)))
        )
    late: list[tuple[int, Task]] = []
    cancelled: list[tuple[int, Task]] = []
    done: list[tuple[int, Task, dict[str, Any]]] = []
    refused: list[tuple[int, Task]] = []
    for task_id, index in first.items():
        task = tasks.get(task_id)
        attempt = items[index].get("attempt")
        if task is None:
            outcomes[index].error = NotFound(f"task {task_id!r} not found")
        elif (
            task_id not in locked
            and task.status == TaskStatus.ACTIVE
            and task.assigned_agent_id == agent.id
        ):
            # Not ours when the locks were taken, ours now (a claim committed in between):
            # not applied unlocked; the agent reports it again.
            outcomes[index].error = Conflict(
                f"task {task_id!r} changed while the batch was applied: report it again"
            )
        elif (
            task.status != TaskStatus.ACTIVE
            or task.assigned_agent_id != agent.id
            or (attempt is not None and attempt != task.attempt)
        ):
            refused.append((index, task))
        elif task.timeout_at is not None and now > task.timeout_at:
            late.append((index, task))
        elif task.cancel_requested_at is not None:
            cancelled.append((index, task))
        else:
            done.append((index, task, items[index]["result"]))
    explain_refusals(principal, refused, items, outcomes)
    # Timeouts first: a poison verdict locks several agent rows in id order, which must
    # come before this agent's row is locked below.
    for index, task in late:
        record_timeout(task, now)
        outcomes[index].error = timed_out(task)
    for index, task in cancelled:
        record_cancellation(
            task, actor=actor, now=now, reason=confirmed_reason(task, "result refused")
        )
        outcomes[index].error = cancelled_first(task.id)
    record_completions([(task, result) for _, task, result in done], actor=actor, now=now)
    for index, _, _ in done:
        outcomes[index].status = TaskStatus.COMPLETED
    db.session.commit()
    return outcomes


def explain_refusals(
    principal: Principal,
    refused: Sequence[tuple[int, Task]],
    items: Sequence[dict[str, Any]],
    outcomes: list[ItemOutcome],
) -> None:
    """Set the error of each item whose task the batch's agent does not hold in its attempt.

    The same verdicts as the single route (``refusal``), with the tasks' attempt history
    and the agents involved read in two queries for all of them.
    """
    if not refused:
        return
    history: dict[str, list[tuple[int, str]]] = {}
    for task_id, number, holder in db.session.execute(
        db.select(TaskAttempt.task_id, TaskAttempt.number, TaskAttempt.agent_id).where(
            TaskAttempt.task_id.in_([task.id for _, task in refused])
        )
    ):
        history.setdefault(task_id, []).append((number, holder))
    involved = {a for runs in history.values() for _, a in runs}
    involved |= {task.assigned_agent_id for _, task in refused if task.assigned_agent_id}
    ours = {
        agent.id
        for agent in db.session.scalars(db.select(Agent).where(Agent.id.in_(involved)))
        if principal.acts_for(agent)
    }
    for index, task in refused:
        attempt = items[index].get("attempt")
        was_ours = task.assigned_agent_id in ours or any(
            holder in ours and (attempt is None or number == attempt)
            for number, holder in history.get(task.id, ())
        )
        outcomes[index].error = refusal(
            task.id, task.status, task.attempt, attempt, was_ours=was_ours
        )


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
    task, agent_id = load_reportable(principal, task_id, attempt, now)
    actor = f"agent:{agent_id}"
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
