"""Submit, claim and report: the dispatch loop."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.lib.clock import epoch_micros, utcnow
from app.lib.tokens import new_id
from app.models import Agent, AgentStatus, Role, Task, TaskStatus
from app.services.errors import Conflict, InvalidInput, NotFound, NotPermitted
from app.services.principal import Principal, require_agent
from app.services.settings import settings
from app.services.wakeups import wakeups

# With aging switched off, a priority level is worth ~4 months of waiting: priority rules.
NO_AGING_LEVEL_MICROS = 10**13
RETRY_BASE_SECONDS = {"exponential": 2.0, "linear": 5.0, "fixed": 10.0}


def queue_key(priority: int, enqueued_at: datetime, aging_seconds_per_level: int) -> int:
    """Claim order key: smaller is claimed first.

    effective priority = priority + waited / aging period, so ordering by it descending is
    ordering by (enqueued - priority x aging period) ascending: a static, indexable value.
    """
    level = aging_seconds_per_level * 1_000_000 or NO_AGING_LEVEL_MICROS
    return epoch_micros(enqueued_at) - priority * level


def retry_delay_seconds(policy: str, retry_number: int) -> float:
    """Seed 004 delays: exponential 2·2^n s, linear 5·(1+n) s, fixed 10 s (n from 0)."""
    base = RETRY_BASE_SECONDS[policy]
    if policy == "exponential":
        return base * 2**retry_number
    if policy == "linear":
        return base * (1 + retry_number)
    return base


def request_fingerprint(fields: dict[str, Any]) -> str:
    """Stable hash of a submit body, to tell a replay from a reused Idempotency-Key."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def resolve_client_id(principal: Principal, client_id: str | None) -> str:
    """Clients submit for themselves; admins must name the client."""
    principal.require_role(Role.CLIENT)
    if principal.role == Role.CLIENT:
        if client_id is not None and client_id != principal.client_id:
            raise NotPermitted(
                f"this key submits for client {principal.client_id!r}, not {client_id!r}"
            )
        assert principal.client_id is not None
        return principal.client_id
    if not client_id:
        raise InvalidInput(
            "client_id is required", [{"field": "client_id", "message": "Field required"}]
        )
    return client_id


def build_task(
    principal: Principal, fields: dict[str, Any], *, now: datetime, sequence: int = 0
) -> Task:
    """A new PENDING task and its creation event, added to the session."""
    client_id = resolve_client_id(principal, fields.get("client_id"))
    enqueued_at = now + timedelta(microseconds=sequence)
    task = Task(
        id=new_id("task"),
        client_id=client_id,
        task_type=fields["task_type"],
        capability_required=fields["capability_required"],
        input_data=fields.get("input_data") or {},
        priority=fields["priority"],
        queue_key=queue_key(fields["priority"], enqueued_at, settings.aging_seconds_per_level),
        enqueued_at=enqueued_at,
        max_retries=fields["max_retries"],
        retry_count=0,
        retry_policy=fields["retry_policy"],
        timeout_seconds=fields["timeout_seconds"],
        routing_strategy=fields.get("routing_strategy"),
        attempt=0,
        created_by=principal.actor,
        created_at=now,
        updated_at=now,
    )
    db.session.add(task)
    # status is still unset here, so the creation event reads None → PENDING.
    task.transition(TaskStatus.PENDING, actor=principal.actor, now=now, reason="submitted")
    return task


def submit_task(
    principal: Principal,
    fields: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> tuple[Task, bool]:
    """Create one task; return it and whether it was new (False: an idempotent replay)."""
    now = now or utcnow()
    # Fingerprint with the client resolved, so naming your own client_id or leaving it out
    # is the same request.
    fields = {**fields, "client_id": resolve_client_id(principal, fields.get("client_id"))}
    fingerprint = request_fingerprint(fields)
    if idempotency_key:
        existing = find_idempotent(fields["client_id"], idempotency_key, fingerprint)
        if existing is not None:
            return existing, False
    task = build_task(principal, fields, now=now)
    task.idempotency_key = idempotency_key
    task.request_hash = fingerprint if idempotency_key else None
    try:
        db.session.commit()
    except IntegrityError:
        # Two submits raced with the same Idempotency-Key: the other one won.
        db.session.rollback()
        if idempotency_key:
            existing = find_idempotent(task.client_id, idempotency_key, fingerprint)
            if existing is not None:
                return existing, False
        raise
    wakeups.notify([task.capability_required])
    return task, True


def find_idempotent(client_id: str, key: str, fingerprint: str) -> Task | None:
    """The task an earlier submit with this key created, if any."""
    task = db.session.scalars(
        db.select(Task).where(Task.client_id == client_id, Task.idempotency_key == key)
    ).first()
    if task is not None and task.request_hash != fingerprint:
        raise InvalidInput(
            "Idempotency-Key was already used with a different request body",
            [{"field": "Idempotency-Key", "message": "reused with a different body"}],
        )
    return task


@dataclass
class BatchOutcome:
    """Per-item results of a batch submit."""

    submitted: list[tuple[int, Task]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)


def submit_batch(
    principal: Principal,
    items: Sequence[dict[str, Any] | InvalidInput],
    *,
    atomic: bool,
    now: datetime | None = None,
) -> BatchOutcome:
    """Create the valid items; with ``atomic`` any invalid item creates nothing.

    ``items`` holds, per index, the validated fields or the InvalidInput that the API's
    validation raised for that item.
    """
    now = now or utcnow()
    outcome = BatchOutcome()
    for index, item in enumerate(items):
        if isinstance(item, InvalidInput):
            outcome.failed.append({"index": index, "error": item.message, "details": item.details})
            continue
        try:
            outcome.submitted.append((index, build_task(principal, item, now=now, sequence=index)))
        except (InvalidInput, NotPermitted) as exc:
            outcome.failed.append({"index": index, "error": exc.message, "details": exc.details})
    if atomic and outcome.failed:
        db.session.rollback()
        details = [{"field": f"tasks[{f['index']}]", "message": f["error"]} for f in outcome.failed]
        raise InvalidInput(
            f"{len(outcome.failed)} of {len(items)} tasks are invalid; nothing was created",
            details,
        )
    db.session.commit()
    wakeups.notify([task.capability_required for _, task in outcome.submitted])
    return outcome


def claim_tasks(
    principal: Principal, agent_id: str, max_tasks: int, *, now: datetime | None = None
) -> list[Task]:
    """Hand up to ``max_tasks`` PENDING tasks to this agent, within its free slots."""
    pinned = now is not None
    now = now or utcnow()
    # Locking the agent row serialises claims of one agent, so two concurrent polls cannot
    # both see the same free slot and exceed max_concurrent_tasks.
    agent = require_agent(principal, agent_id, lock=True)
    if agent.status == AgentStatus.INACTIVE:
        db.session.rollback()
        raise Conflict(f"agent {agent_id!r} is INACTIVE: send a heartbeat before claiming")
    slots = min(max_tasks, agent.max_concurrent_tasks - agent.active_tasks)
    capabilities = agent.capability_names
    if slots <= 0 or not capabilities:
        db.session.rollback()
        return []
    # SKIP LOCKED: concurrent claimers of other agents pass over rows being claimed instead
    # of waiting on them, and no row can be handed out twice (SQLite: one writer at a time).
    ids = list(
        db.session.scalars(
            db.select(Task.id)
            .where(
                Task.status == TaskStatus.PENDING,
                Task.capability_required.in_(capabilities),
                (Task.next_retry_at.is_(None)) | (Task.next_retry_at <= now),
            )
            .order_by(Task.queue_key)
            .limit(slots)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        db.session.rollback()
        return []
    tasks = list(
        db.session.scalars(db.select(Task).where(Task.id.in_(ids)).order_by(Task.queue_key))
    )
    actor = f"agent:{agent.id}"
    # Stamp the claim after the rows are locked: a task is visible only once its submit
    # committed, so claimed_at can never precede its created_at.
    now = now if pinned else utcnow()
    for task in tasks:
        task.assigned_agent_id = agent.id
        task.attempt += 1
        task.claimed_at = now
        task.lease_expires_at = now + timedelta(seconds=task.timeout_seconds)
        task.next_retry_at = None
        task.progress = None
        task.progress_message = None
        task.transition(
            TaskStatus.ACTIVE,
            actor=actor,
            now=now,
            reason="claimed",
            data={"attempt": task.attempt},
        )
    agent.active_tasks += len(tasks)
    db.session.commit()
    return tasks


def claim_tasks_waiting(
    principal: Principal,
    agent_id: str,
    max_tasks: int,
    wait_seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> list[Task]:
    """Long poll: return as soon as tasks are claimed, or empty after ``wait_seconds``."""
    deadline = clock() + wait_seconds
    tasks = claim_tasks(principal, agent_id, max_tasks)
    if tasks or wait_seconds <= 0:
        return tasks
    while True:
        agent = require_agent(principal, agent_id)
        capabilities = agent.capability_names
        full = agent.active_tasks >= agent.max_concurrent_tasks
        db.session.rollback()  # hold no transaction or lock while waiting
        if full:
            return []  # a full agent must not take wake-ups meant for agents with room
        # Drop tokens the database has just answered for, then look: a task committed
        # after this look pushes its token after the clear, so the wait below sees it.
        wakeups.clear(capabilities)
        tasks = claim_tasks(principal, agent_id, max_tasks)
        remaining = deadline - clock()
        if tasks or remaining <= 0:
            return tasks
        wakeups.wait(capabilities, remaining)


def load_reportable(principal: Principal, task_id: str, attempt: int | None) -> tuple[Task, Agent]:
    """The ACTIVE task the calling agent holds, locked for the report."""
    principal.require_role(Role.AGENT)
    task = db.session.scalars(db.select(Task).where(Task.id == task_id).with_for_update()).first()
    agent = (
        db.session.get(Agent, task.assigned_agent_id) if task and task.assigned_agent_id else None
    )
    if task is None or agent is None or not principal.acts_for(agent):
        db.session.rollback()
        raise NotFound(f"task {task_id!r} not found")
    if task.status != TaskStatus.ACTIVE:
        status = task.status
        db.session.rollback()
        raise Conflict(f"task {task_id!r} is {status}, not ACTIVE: the report was not applied")
    if attempt is not None and attempt != task.attempt:
        current = task.attempt
        db.session.rollback()
        raise Conflict(f"attempt {attempt} of task {task_id!r} is stale (current is {current})")
    return task, agent


def report_progress(
    principal: Principal,
    task_id: str,
    progress: int,
    message: str | None,
    *,
    attempt: int | None = None,
    now: datetime | None = None,
) -> Task:
    """Record how far the agent has got."""
    now = now or utcnow()
    task, _ = load_reportable(principal, task_id, attempt)
    task.progress = progress
    task.progress_message = message
    task.updated_at = now
    db.session.commit()
    return task


def release_slot(
    agent_id: str, *, completed: bool, failed: bool, run_seconds: float | None, now: datetime
) -> None:
    """Free the agent's slot and keep its outcome counters in step, in one UPDATE."""
    values: dict[str, Any] = {"active_tasks": Agent.active_tasks - 1, "updated_at": now}
    if completed:
        values["total_tasks_completed"] = Agent.total_tasks_completed + 1
        values["last_task_completed_at"] = now
        if run_seconds is not None:
            # Running mean over completed tasks, computed in SQL so concurrent reports add up.
            values["avg_completion_time_seconds"] = (
                db.func.coalesce(Agent.avg_completion_time_seconds, 0.0)
                * Agent.total_tasks_completed
                + run_seconds
            ) / (Agent.total_tasks_completed + 1)
    if failed:
        values["total_tasks_failed"] = Agent.total_tasks_failed + 1
    db.session.execute(update(Agent).where(Agent.id == agent_id).values(**values))


def complete_task(
    principal: Principal,
    task_id: str,
    result_data: dict[str, Any],
    *,
    attempt: int | None = None,
    now: datetime | None = None,
) -> Task:
    """The agent finished the task."""
    now = now or utcnow()
    task, agent = load_reportable(principal, task_id, attempt)
    task.result_data = result_data
    task.completed_at = now
    task.progress = 100
    task.lease_expires_at = None
    run_seconds = (now - task.claimed_at).total_seconds() if task.claimed_at else None
    task.transition(
        TaskStatus.COMPLETED,
        actor=f"agent:{agent.id}",
        now=now,
        reason="completed",
        data={"attempt": task.attempt, "run_seconds": run_seconds},
    )
    release_slot(agent.id, completed=True, failed=False, run_seconds=run_seconds, now=now)
    db.session.commit()
    return task


def fail_task(
    principal: Principal,
    task_id: str,
    error_message: str,
    *,
    retryable: bool = True,
    attempt: int | None = None,
    now: datetime | None = None,
) -> Task:
    """The agent gave up on the task: retry it per its policy, or end it FAILED."""
    now = now or utcnow()
    task, agent = load_reportable(principal, task_id, attempt)
    record_failure(task, error_message, retryable=retryable, actor=f"agent:{agent.id}", now=now)
    db.session.commit()
    return task


def record_failure(
    task: Task, error_message: str, *, retryable: bool, actor: str, now: datetime
) -> None:
    """End an ACTIVE attempt in failure: back to PENDING after a delay, or FAILED."""
    agent_id = task.assigned_agent_id
    task.error_message = error_message
    task.lease_expires_at = None
    if retryable and task.retry_count < task.max_retries:
        delay = retry_delay_seconds(task.retry_policy, task.retry_count)
        task.retry_count += 1
        task.next_retry_at = now + timedelta(seconds=delay)
        task.assigned_agent_id = None
        task.transition(
            TaskStatus.PENDING,
            actor=actor,
            now=now,
            reason=f"retry {task.retry_count} of {task.max_retries} in {delay:g}s: {error_message}",
            data={"attempt": task.attempt, "retry_in_seconds": delay, "agent_id": agent_id},
        )
    else:
        task.completed_at = now
        why = "not retryable" if not retryable else f"no retries left of {task.max_retries}"
        task.transition(
            TaskStatus.FAILED,
            actor=actor,
            now=now,
            reason=f"{error_message} ({why})",
            data={"attempt": task.attempt, "agent_id": agent_id},
        )
    if agent_id is not None:
        release_slot(agent_id, completed=False, failed=True, run_seconds=None, now=now)


def visible_task(principal: Principal, task_id: str, *, lock: bool = False) -> Task:
    """A task the principal may see; others are 404 so ids do not leak."""
    query = db.select(Task).where(Task.id == task_id)
    if lock:
        query = query.with_for_update()
    task = db.session.scalars(query).first()
    if task is None or not principal.can_see_task(task):
        db.session.rollback()
        raise NotFound(f"task {task_id!r} not found")
    return task


def cancel_task(
    principal: Principal, task_id: str, reason: str | None, *, now: datetime | None = None
) -> Task:
    """Cancel a task that has not started running."""
    now = now or utcnow()
    principal.require_role(Role.CLIENT)
    task = visible_task(principal, task_id, lock=True)
    if task.status not in TaskStatus.WAITING:
        status = task.status
        db.session.rollback()
        if status == TaskStatus.ACTIVE:
            raise Conflict(f"task {task_id!r} is ACTIVE: only waiting tasks can be cancelled")
        raise Conflict(f"task {task_id!r} is already {status}")
    task.cancelled_at = now
    task.cancelled_by = principal.actor
    task.cancellation_reason = reason
    task.completed_at = now
    task.transition(
        TaskStatus.CANCELLED, actor=principal.actor, now=now, reason=reason or "cancelled"
    )
    db.session.commit()
    return task


def update_priority(
    principal: Principal, task_id: str, priority: int, *, now: datetime | None = None
) -> Task:
    """Change a waiting task's priority; its place in the queue follows at once."""
    now = now or utcnow()
    principal.require_role(Role.CLIENT)
    task = visible_task(principal, task_id, lock=True)
    if task.is_terminal:
        status = task.status
        db.session.rollback()
        raise Conflict(f"task {task_id!r} is already {status}")
    old = task.priority
    task.priority = priority
    task.queue_key = queue_key(priority, task.enqueued_at, settings.aging_seconds_per_level)
    task.transition(
        task.status,
        actor=principal.actor,
        now=now,
        reason=f"priority {old} → {priority}",
        data={"priority_from": old, "priority_to": priority},
    )
    db.session.commit()
    return task
