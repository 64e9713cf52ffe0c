"""Background upkeep of the task lifecycle: timeouts, leases, silent agents, forced
cancels, expiry, unclaimed assignments and the routing of waiting work. The clock runs
``sweep`` every second through RQ."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update

from app.extensions import db
from app.lib.clock import isoformat, utcnow
from app.models import (
    Agent,
    AgentStatus,
    AttemptOutcome,
    ProcessBeat,
    Task,
    TaskStatus,
    WebhookEvents,
)
from app.services import audit, retention, routing, webhooks
from app.services.attempts import (
    lateness,
    record_cancellation,
    record_failure,
    record_timeout,
)
from app.services.settings import settings

SWEEP_BATCH = 500


def sweep(now: datetime | None = None) -> dict[str, int]:
    """One maintenance pass; safe to run concurrently and repeatedly.

    Every step reads the database only, so a flushed Redis or a restarted worker or clock
    loses nothing: the next pass finds whatever is overdue.
    """
    now = now or utcnow()
    return {
        "timed_out": time_out_tasks(now),
        # Silent agents first, so their tasks say "no heartbeat" and the agent goes
        # INACTIVE; the lease check then catches any running task left without a sign.
        "agents_lost": retire_silent_agents(now),
        "leases_expired": expire_leases(now),
        "cancels_forced": force_cancellations(now),
        "expired": expire_waiting_tasks(now),
        "reassigned": reassign_unclaimed(now),
        # Work no agent had room for, and retries whose delay is over.
        "routed": route_backlog(now),
        # Webhook deliveries due (retries) or whose job went missing (Redis flushed).
        "webhooks_queued": webhooks.queue_due(now),
        "webhook_events_pruned": webhooks.prune(now),
        # Audit rows past AUDIT_RETENTION_DAYS, a batch per pass.
        "audit_events_pruned": audit.prune(now=now),
        # Finished tasks past TASK_RETENTION_DAYS (FAILED: FAILED_TASK_RETENTION_DAYS)
        # with their events, attempts and other rows, a batch per pass.
        "tasks_pruned": retention.sweep_step(now),
    }


def locked_overdue(*conditions: Any) -> list[Task]:
    """Tasks matching ``conditions``, locked; SKIP LOCKED leaves one being reported on to
    that report."""
    return list(
        db.session.scalars(
            db.select(Task).where(*conditions).limit(SWEEP_BATCH).with_for_update(skip_locked=True)
        )
    )


def time_out_tasks(now: datetime) -> int:
    """ACTIVE tasks past their execution deadline fail; retried only with retry_on_timeout."""
    tasks = locked_overdue(Task.status == TaskStatus.ACTIVE, Task.timeout_at < now)
    for task in tasks:
        record_timeout(task, now)
    db.session.commit()
    return len(tasks)


def expire_leases(now: datetime) -> int:
    """ACTIVE tasks whose lease ran out (no heartbeat or progress) count a lost attempt."""
    tasks = locked_overdue(Task.status == TaskStatus.ACTIVE, Task.lease_expires_at < now)
    for task in tasks:
        lose_attempt(task, f"agent lost: lease expired after {settings.lease_seconds}s", now)
    db.session.commit()
    return len(tasks)


def lose_attempt(task: Task, why: str, now: datetime, deadline: datetime | None = None) -> None:
    """The agent running ``task`` is gone: fail the attempt and follow the retry policy."""
    if task.cancel_requested_at is not None:
        record_cancellation(task, actor="system:heartbeat", now=now, reason=f"cancelled ({why})")
        return
    record_failure(
        task,
        why,
        retryable=True,
        actor="system:heartbeat",
        now=now,
        outcome=AttemptOutcome.AGENT_LOST,
        data=lateness(deadline or task.lease_expires_at, now),
    )


def retire_silent_agents(now: datetime) -> int:
    """Agents that missed their heartbeats go INACTIVE; their tasks come back to the queue.

    ASSIGNED tasks (routed, not started) return to PENDING at once; ACTIVE ones count a
    failed attempt ("agent lost") and follow their retry policy.
    """
    silence = timedelta(seconds=settings.lease_seconds)
    # An agent that said OFFLINE is INACTIVE already, but its tasks must come back too.
    holding = (
        db.select(Task.id)
        .where(
            Task.assigned_agent_id == Agent.id,
            Task.status.in_((TaskStatus.ACTIVE, TaskStatus.ASSIGNED)),
        )
        .exists()
    )
    stale = (Agent.last_heartbeat < now - silence) & (
        (Agent.status != AgentStatus.INACTIVE) | holding
    )
    stale_agents = db.session.execute(
        db.select(Agent.id, Agent.last_heartbeat, Agent.status).where(stale)
    ).all()
    db.session.rollback()
    retired = 0
    for agent_id, last_heartbeat, was in stale_agents:
        # Task rows first, then the agent row: the lock order every writer follows. A task
        # locked by a report in flight is left to that report (or to the lease check).
        tasks = list(
            db.session.scalars(
                db.select(Task)
                .where(
                    Task.assigned_agent_id == agent_id,
                    Task.status.in_((TaskStatus.ACTIVE, TaskStatus.ASSIGNED)),
                )
                .with_for_update(skip_locked=True)
            )
        )
        # Conditional update: a heartbeat that lands meanwhile keeps the agent alive.
        changed = db.session.execute(
            update(Agent)
            .where(Agent.id == agent_id, stale)
            .values(status=AgentStatus.INACTIVE, updated_at=now)
        ).rowcount
        if changed != 1:
            db.session.rollback()
            continue
        deadline = last_heartbeat + silence if last_heartbeat else None
        if was != AgentStatus.INACTIVE:  # one that said OFFLINE was announced then
            webhooks.emit(
                WebhookEvents.AGENT_OFFLINE,
                at=now,
                agent_id=agent_id,
                data={
                    "reason": f"no heartbeat for {settings.lease_seconds}s",
                    "last_heartbeat": isoformat(last_heartbeat),
                    "tasks_returned": len(tasks),
                },
            )
        for task in tasks:
            if task.status == TaskStatus.ASSIGNED:
                routing.unassign(
                    task,
                    actor="system:heartbeat",
                    now=now,
                    reason="agent lost before it started: routed again",
                    data={"agent_id": agent_id, **lateness(deadline, now)},
                )
            else:
                lose_attempt(task, "agent lost: no heartbeat", now, deadline)
        db.session.commit()
        retired += 1
    return retired


def force_cancellations(now: datetime) -> int:
    """Cancel requests the agent did not confirm within the grace period take effect."""
    grace = timedelta(seconds=settings.cancel_grace_seconds)
    tasks = locked_overdue(Task.status == TaskStatus.ACTIVE, Task.cancel_requested_at < now - grace)
    for task in tasks:
        record_cancellation(
            task,
            actor="system:cancel",
            now=now,
            reason=f"cancelled: the agent did not confirm within {settings.cancel_grace_seconds}s"
            + (f" ({task.cancellation_reason})" if task.cancellation_reason else ""),
        )
    db.session.commit()
    return len(tasks)


def expire_waiting_tasks(now: datetime) -> int:
    """Tasks not claimed before their expires_at end EXPIRED."""
    tasks = locked_overdue(Task.status.in_(TaskStatus.WAITING), Task.expires_at < now)
    for task in tasks:
        task.completed_at = now
        task.next_retry_at = None
        task.error_message = "expired before an agent claimed it"
        task.transition(
            TaskStatus.EXPIRED,
            actor="system:expiry",
            now=now,
            reason="not claimed before expires_at",
            data=lateness(task.expires_at, now),
        )
    db.session.commit()
    return len(tasks)


def reassign_unclaimed(now: datetime) -> int:
    """Tasks routed to an agent that has not claimed them in time are routed again (to
    another agent when one can take them)."""
    timeout = settings.routing_claim_timeout_seconds
    tasks = locked_overdue(
        Task.status == TaskStatus.ASSIGNED,
        Task.assigned_at < now - timedelta(seconds=timeout),
    )
    for task in tasks:
        routing.unassign(
            task,
            actor="system:router",
            now=now,
            reason=f"not claimed within {timeout}s: routed again",
            data={
                "agent_id": task.assigned_agent_id,
                **lateness(task.assigned_at + timedelta(seconds=timeout), now),
            },
        )
    db.session.commit()
    return len(tasks)


def route_backlog(now: datetime) -> int:
    """Route the claimable tasks still unassigned, one capability per transaction; returns
    how many were assigned."""
    capabilities = routing.backlog_capabilities(now)
    db.session.rollback()
    assigned = 0
    for capability in capabilities:
        assigned += len(routing.route([capability], now))
        db.session.commit()
    return assigned


def record_process_beat(name: str, info: dict[str, Any], now: datetime | None = None) -> None:
    """Note that a background process is alive (read by /health/ready and the UI)."""
    now = now or utcnow()
    beat = db.session.get(ProcessBeat, name)
    if beat is None:
        db.session.add(ProcessBeat(name=name, last_seen=now, info=info))
    else:
        beat.last_seen = now
        beat.info = info
    db.session.commit()
