"""Figures for the operator dashboard: tasks by status, agents online, the last hour's and
the last day's work, the schedules due next and the latest failures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, case, func, literal, text

from app.extensions import db
from app.models import Agent, AgentStatus, Task, TaskEvent, TaskStatus
from app.models.schedule import Schedule, ScheduleStatus
from app.services.settings import settings

THROUGHPUT_WINDOW = timedelta(hours=1)
THROUGHPUT_BUCKETS = 12  # five minutes each
DAY_WINDOW = timedelta(days=1)
DAY_BUCKETS = 24  # an hour each
RECENT_TASKS = 6
# Past this many tasks of one status the dashboard shows PostgreSQL's estimate instead.
EXACT_COUNT_LIMIT = 20_000
SCHEDULES_DUE = 5
RECENT_FAILURES = 6


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
class Failure:
    """A task that ended FAILED: when, and the reason its event recorded."""

    task_id: str
    task_type: str
    at: datetime
    reason: str | None
    status: str  # its status now: FAILED, or another if it was requeued since


def failure_rate(buckets: list[ThroughputBucket]) -> float | None:
    """Percent of the tasks that ended in ``buckets`` that failed; None if none ended."""
    ended = sum(b.total for b in buckets)
    return 100 * sum(b.failed for b in buckets) / ended if ended else None


@dataclass(frozen=True)
class DashboardSummary:
    generated_at: datetime
    tasks_by_status: dict[str, int]
    fleet: AgentFleet
    throughput: list[ThroughputBucket]
    queue_by_priority: list[PriorityQueue]
    recent_tasks: list[Task]
    throughput_day: list[ThroughputBucket]
    schedules_due: list[Schedule]
    recent_failures: list[Failure]
    # Statuses whose count in tasks_by_status is the planner's estimate (see status_counts).
    approximate_statuses: frozenset[str] = frozenset()

    @property
    def open_tasks(self) -> int:
        return sum(n for s, n in self.tasks_by_status.items() if s not in TaskStatus.TERMINAL)

    @property
    def open_tasks_approximate(self) -> bool:
        return any(s not in TaskStatus.TERMINAL for s in self.approximate_statuses)

    @property
    def exact_count_limit(self) -> int:
        return EXACT_COUNT_LIMIT

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
    def failure_rate_hour(self) -> float | None:
        return failure_rate(self.throughput)

    @property
    def failure_rate_day(self) -> float | None:
        return failure_rate(self.throughput_day)

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
    counts, approximate = status_counts()
    return DashboardSummary(
        generated_at=now,
        tasks_by_status=counts,
        approximate_statuses=approximate,
        fleet=agent_fleet(now),
        throughput=throughput(now),
        queue_by_priority=queue_by_priority(),
        recent_tasks=latest_tasks(RECENT_TASKS),
        throughput_day=throughput(now, DAY_WINDOW, DAY_BUCKETS),
        schedules_due=schedules_due(SCHEDULES_DUE),
        recent_failures=recent_failures(now, RECENT_FAILURES),
    )


def tasks_by_status() -> dict[str, int]:
    """Task count of every status, zero included, in lifecycle order (see status_counts)."""
    return status_counts()[0]


def status_counts() -> tuple[dict[str, int], frozenset[str]]:
    """Task count of every status, zero included, in lifecycle order, and the statuses
    whose count is an estimate.

    Counting a million ended tasks at every refresh costs a scan of that many index
    entries, so on PostgreSQL each status is counted exactly up to EXACT_COUNT_LIMIT (a
    short walk of ix_tasks_status_created); past it the count is the planner's estimate
    from the table statistics, which autovacuum keeps current, and the status is returned
    as approximate. Small counts, the open statuses in particular, stay exact. SQLite
    keeps no such statistics and serves small installations: it counts exactly.
    """
    if db.session.get_bind().dialect.name != "postgresql":
        counts = dict(
            db.session.execute(db.select(Task.status, func.count()).group_by(Task.status)).all()
        )
        return {status: counts.get(status, 0) for status in TaskStatus.ALL}, frozenset()
    capped = [
        db.select(func.count())
        .select_from(
            db.select(literal(1))
            .where(Task.status == status)
            .limit(EXACT_COUNT_LIMIT + 1)
            .subquery()
        )
        .scalar_subquery()
        for status in TaskStatus.ALL
    ]
    counted = db.session.execute(db.select(*capped)).one()  # one round trip for all
    counts: dict[str, int] = {}
    approximate: set[str] = set()
    for status, count in zip(TaskStatus.ALL, counted, strict=True):
        if count > EXACT_COUNT_LIMIT:
            approximate.add(status)
            count = max(planner_estimate(status), count)
        counts[status] = int(count)
    return counts, frozenset(approximate)


def planner_estimate(status: str) -> int:
    """PostgreSQL's estimate of the tasks in ``status``, from EXPLAIN (no rows are read).

    The status is one of TaskStatus.ALL, never input, so it is written into the statement
    as a literal: EXPLAIN takes no bound parameters.
    """
    assert status in TaskStatus.ALL
    query = db.select(literal(1)).select_from(Task).where(Task.status == status)
    sql = query.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True})
    (plan,) = db.session.execute(text(f"EXPLAIN (FORMAT JSON) {sql}")).scalar_one()
    return int(plan["Plan"]["Plan Rows"])


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


def throughput(
    now: datetime, window: timedelta = THROUGHPUT_WINDOW, buckets: int = THROUGHPUT_BUCKETS
) -> list[ThroughputBucket]:
    """Tasks COMPLETED and FAILED in the ``window`` before ``now`` (an hour unless told), in
    ``buckets`` equal slices, oldest first.

    Counted from the event rows, which record each end once, rather than from tasks'
    current state. The slice of each event is a CASE over the boundaries, grouped in an
    outer query so PostgreSQL sees one expression rather than two sets of bound parameters.
    """
    start = now - window
    step = window / buckets
    bucket = case(
        *((TaskEvent.at < start + step * (i + 1), i) for i in range(buckets - 1)),
        else_=buckets - 1,
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
        for i in range(buckets)
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


def schedules_due(limit: int) -> list[Schedule]:
    """The active schedules that fire next, soonest first (the clock's own index:
    status, next_run_at)."""
    query = (
        db.select(Schedule)
        .where(Schedule.status == ScheduleStatus.ACTIVE, Schedule.next_run_at.is_not(None))
        .order_by(Schedule.next_run_at, Schedule.id)
        .limit(limit)
    )
    return list(db.session.scalars(query))


def recent_failures(now: datetime, limit: int) -> list[Failure]:
    """The latest tasks to end FAILED within the last day, newest first.

    Read from the events (walked backwards on their ``at`` index, bounded by the day) so a
    failure shows when it happened, even for a task created long before.
    """
    rows = db.session.execute(
        db.select(TaskEvent.task_id, TaskEvent.at, TaskEvent.reason, Task.task_type, Task.status)
        .join(Task, Task.id == TaskEvent.task_id)
        .where(
            TaskEvent.at >= now - DAY_WINDOW,
            TaskEvent.at <= now,
            TaskEvent.to_status == TaskStatus.FAILED,
        )
        .order_by(TaskEvent.at.desc(), TaskEvent.id.desc())
        .limit(limit)
    ).all()
    return [
        Failure(task_id=t, task_type=tt, at=at, reason=reason, status=st)
        for t, at, reason, tt, st in rows
    ]
