"""Figures for the operator dashboard: tasks by status, agents online, the last hour's work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, case, func

from app.extensions import db
from app.models import Agent, AgentStatus, Task, TaskEvent, TaskStatus
from app.services.settings import settings

THROUGHPUT_WINDOW = timedelta(hours=1)
THROUGHPUT_BUCKETS = 12  # five minutes each
RECENT_TASKS = 6


@dataclass(frozen=True)
class ThroughputBucket:
    """Tasks that ended in one slice of the window."""

    start: datetime
    completed: int
    failed: int

    @property
    def total(self) -> int:
        return self.completed + self.failed


@dataclass(frozen=True)
class PriorityQueue:
    """Tasks of one priority waiting to start (PENDING or ASSIGNED, not yet claimed) and
    how long the oldest has waited."""

    priority: int
    waiting: int
    oldest_enqueued_at: datetime | None


@dataclass(frozen=True)
class AgentFleet:
    """Agents registered, agents online and the task slots the online ones offer."""

    total: int
    online: int
    slots_in_use: int
    slots_online: int


@dataclass(frozen=True)
class DashboardSummary:
    generated_at: datetime
    tasks_by_status: dict[str, int]
    fleet: AgentFleet
    throughput: list[ThroughputBucket]
    queue_by_priority: list[PriorityQueue]
    recent_tasks: list[Task]

    @property
    def open_tasks(self) -> int:
        return sum(n for s, n in self.tasks_by_status.items() if s not in TaskStatus.TERMINAL)

    @property
    def completed_last_hour(self) -> int:
        return sum(b.completed for b in self.throughput)

    @property
    def failed_last_hour(self) -> int:
        return sum(b.failed for b in self.throughput)

    @property
    def busiest_bucket(self) -> int:
        return max((b.total for b in self.throughput), default=0)

    @property
    def queue_depth(self) -> int:
        return sum(q.waiting for q in self.queue_by_priority)


def heartbeat_silence() -> timedelta:
    """How long an agent may stay silent before it counts as gone (as the clock sweep does)."""
    return timedelta(
        seconds=settings.heartbeat_interval_seconds * settings.heartbeat_misses_allowed
    )


def is_online(agent: Agent, now: datetime) -> bool:
    """The rule of :func:`agent_fleet`, for one agent already loaded."""
    return (
        agent.status in (AgentStatus.AVAILABLE, AgentStatus.BUSY)
        and agent.last_heartbeat is not None
        and agent.last_heartbeat >= now - heartbeat_silence()
    )


def summarise(now: datetime) -> DashboardSummary:
    """Everything the dashboard shows, as of ``now``."""
    return DashboardSummary(
        generated_at=now,
        tasks_by_status=tasks_by_status(),
        fleet=agent_fleet(now),
        throughput=throughput(now),
        queue_by_priority=queue_by_priority(),
        recent_tasks=latest_tasks(RECENT_TASKS),
    )


def tasks_by_status() -> dict[str, int]:
    """Task count of every status, zero included, in lifecycle order."""
    counts = dict(
        db.session.execute(db.select(Task.status, func.count()).group_by(Task.status)).all()
    )
    return {status: counts.get(status, 0) for status in TaskStatus.ALL}


def agent_fleet(now: datetime) -> AgentFleet:
    """Online means AVAILABLE or BUSY with a heartbeat inside the allowed silence."""
    online = Agent.status.in_((AgentStatus.AVAILABLE, AgentStatus.BUSY)) & (
        Agent.last_heartbeat >= now - heartbeat_silence()
    )
    total, online_count, in_use, slots = db.session.execute(
        db.select(
            func.count(),
            func.coalesce(func.sum(case((online, 1), else_=0)), 0),
            func.coalesce(func.sum(case((online, Agent.active_tasks), else_=0)), 0),
            func.coalesce(func.sum(case((online, Agent.max_concurrent_tasks), else_=0)), 0),
        )
    ).one()
    return AgentFleet(
        total=int(total),
        online=int(online_count),
        slots_in_use=int(in_use),
        slots_online=int(slots),
    )


def throughput(now: datetime) -> list[ThroughputBucket]:
    """Tasks COMPLETED and FAILED in the hour before ``now``, in equal slices, oldest first.

    Counted from the event rows, which record each end once, rather than from tasks'
    current state. The slice of each event is a CASE over the boundaries, grouped in an
    outer query so PostgreSQL sees one expression rather than two sets of bound parameters.
    """
    start = now - THROUGHPUT_WINDOW
    step = THROUGHPUT_WINDOW / THROUGHPUT_BUCKETS
    bucket = case(
        *((TaskEvent.at < start + step * (i + 1), i) for i in range(THROUGHPUT_BUCKETS - 1)),
        else_=THROUGHPUT_BUCKETS - 1,
    ).cast(Integer)
    ended = (
        db.select(bucket.label("bucket"), TaskEvent.to_status.label("status"))
        .where(
            TaskEvent.at >= start,
            TaskEvent.at <= now,
            TaskEvent.to_status.in_((TaskStatus.COMPLETED, TaskStatus.FAILED)),
        )
        .subquery()
    )
    counts: dict[tuple[int, str], int] = {
        (int(b), s): int(n)
        for b, s, n in db.session.execute(
            db.select(ended.c.bucket, ended.c.status, func.count()).group_by(
                ended.c.bucket, ended.c.status
            )
        ).all()
    }
    return [
        ThroughputBucket(
            start=start + step * i,
            completed=counts.get((i, TaskStatus.COMPLETED), 0),
            failed=counts.get((i, TaskStatus.FAILED), 0),
        )
        for i in range(THROUGHPUT_BUCKETS)
    ]


def queue_by_priority() -> list[PriorityQueue]:
    """Tasks waiting to start per priority, highest priority first: PENDING ones and the
    ones routed to an agent that has not claimed them yet (ASSIGNED)."""
    rows = db.session.execute(
        db.select(Task.priority, func.count(), func.min(Task.enqueued_at))
        .where(Task.status.in_((TaskStatus.PENDING, TaskStatus.ASSIGNED)))
        .group_by(Task.priority)
        .order_by(Task.priority.desc())
    ).all()
    return [
        PriorityQueue(priority=p, waiting=int(n), oldest_enqueued_at=oldest)
        for p, n, oldest in rows
    ]


def latest_tasks(limit: int) -> list[Task]:
    """The newest tasks, for a glance at what is coming in."""
    query = db.select(Task).order_by(Task.created_at.desc(), Task.id.desc()).limit(limit)
    return list(db.session.scalars(query))
