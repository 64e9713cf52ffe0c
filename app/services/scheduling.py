"""Schedules: cron math in the schedule's zone, CRUD, and firing each due time exactly once.

A schedule's next due time is computed in its own zone and stored in UTC in an indexed
column. Firing locks the schedule row, re-checks that it is still due, inserts one execution
per due time (unique on schedule and due time, so a second clock that got past the lock
anyway fails on the insert), creates the run's task and moves ``next_run_at`` on, all in one
transaction. Any number of clock processes may call ``fire_due``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, text
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.lib.clock import as_utc, isoformat, utcnow
from app.lib.cron import CronError, describe, load_zone, next_after, next_runs, parse_cron
from app.lib.tokens import new_id
from app.models import (
    ExecutionStatus,
    ExecutionTrigger,
    MisfirePolicy,
    OverlapPolicy,
    Role,
    Schedule,
    ScheduleExecution,
    ScheduleStatus,
    Task,
    TaskStatus,
    WebhookEvents,
)
from app.models.task import SCHEDULE_RUN
from app.services import audit, metrics, webhooks
from app.services.dispatch import build_task, resolve_client_id
from app.services.errors import Conflict, DomainError, InvalidInput, NotFound, invalid
from app.services.principal import Principal, schedule_runner
from app.services.settings import settings
from app.services.templates import DEFAULTS, task_fields_from_template, visible_template

log = logging.getLogger(__name__)

# How far ahead a one-time run or a preview may be: beyond, zone math overflows year 9999.
MAX_AHEAD = timedelta(days=36525)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Due schedules one firing transaction locks and fires: one commit for a burst of them.
FIRE_BATCH = 20
# fire_all catches up on at most this many missed runs (the latest ones).
FIRE_ALL_LIMIT = 100
# Due times looked at in one pass for one schedule, so a every-second cron after a long
# downtime cannot stall the clock.
MAX_SCAN = 100_000
TIMING_FIELDS = ("cron_expression", "interval_seconds", "run_at", "timezone")
TASK_FIELDS = (
    "task_type",
    "capability_required",
    "input_data",
    "priority",
    "max_retries",
    "retry_policy",
    "timeout_seconds",
    "retry_on_timeout",
    "expires_in_seconds",
)
NULLABLE_FIELDS = (*TIMING_FIELDS, "description", "expires_in_seconds", "template_id")
EDITABLE_FIELDS = (
    *TIMING_FIELDS,
    *TASK_FIELDS,
    "template_id",
    "description",
    "misfire_policy",
    "overlap_policy",
)


# ---------------------------------------------------------------------------------------
# Time math
# ---------------------------------------------------------------------------------------


def next_due(schedule: Schedule, after: datetime) -> datetime | None:
    """The schedule's first due time strictly after ``after`` (UTC), None if there is none."""
    if schedule.cron_expression:
        return next_after(parse_cron(schedule.cron_expression), load_zone(schedule.timezone), after)
    if schedule.interval_seconds:
        anchor = as_utc(schedule.anchor_at)
        assert anchor is not None
        if after < anchor:
            return anchor
        step = timedelta(seconds=schedule.interval_seconds)
        return anchor + step * ((after - anchor) // step + 1)
    run_at = as_utc(schedule.run_at)
    return run_at if run_at is not None and run_at > after else None


def due_times(
    schedule: Schedule, first: datetime, until: datetime, keep: int | None = None
) -> list[datetime]:
    """Due times from ``first`` (itself due) up to ``until`` inclusive; the last ``keep``."""
    if schedule.interval_seconds and not schedule.cron_expression:
        step = timedelta(seconds=schedule.interval_seconds)
        count = (until - first) // step + 1
        skip = max(0, count - keep) if keep is not None else 0
        return [first + step * k for k in range(skip, count)]
    if keep is None or schedule.kind == "once":
        return scan(schedule, first, until)
    # The latest ``keep``: scan a window that ends at ``until`` and doubles back towards
    # ``first`` until it holds enough, so a long outage does not walk every missed time.
    assert schedule.cron_expression
    width = parse_cron(schedule.cron_expression).resolution * keep
    while True:
        start = max(first, until - width)
        begin = first if start == first else next_due(schedule, start - timedelta(microseconds=1))
        found = scan(schedule, begin, until)
        if len(found) >= keep or start == first:
            return found[-keep:]
        width *= 2


def scan(schedule: Schedule, start: datetime | None, until: datetime) -> list[datetime]:
    """Due times from ``start`` (itself due) up to ``until``, at most MAX_SCAN of them."""
    found: list[datetime] = []
    when = start
    while when is not None and when <= until and len(found) < MAX_SCAN:
        found.append(when)
        when = next_due(schedule, when)
    return found


@dataclass(frozen=True)
class Run:
    scheduled_for: datetime
    trigger: str


def plan_runs(schedule: Schedule, now: datetime) -> list[Run]:
    """The runs one firing pass owes: on-time due times, and missed ones per misfire policy.

    A due time later than the misfire grace means nothing fired for a while (the clocks
    were down): ``fire_once`` makes one catch-up run for the latest of them, ``skip``
    drops them, ``fire_all`` runs each of the latest 100.
    """
    first = as_utc(schedule.next_run_at)
    assert first is not None
    grace = timedelta(seconds=settings.schedule_misfire_grace_seconds)
    if now - first <= grace:
        on_time = due_times(schedule, first, now, keep=FIRE_ALL_LIMIT)
        return [Run(t, ExecutionTrigger.SCHEDULE) for t in on_time]
    policy = schedule.misfire_policy
    if policy == MisfirePolicy.FIRE_ONCE:
        latest = due_times(schedule, first, now, keep=1)
        return [Run(latest[-1], ExecutionTrigger.CATCH_UP)]
    if policy == MisfirePolicy.FIRE_ALL:
        times = due_times(schedule, first, now, keep=FIRE_ALL_LIMIT)
        return [
            Run(t, ExecutionTrigger.CATCH_UP if now - t > grace else ExecutionTrigger.SCHEDULE)
            for t in times
        ]
    # skip: only what is due within the grace runs.
    on_time = next_due(schedule, now - grace - timedelta(microseconds=1))
    if on_time is None or on_time > now:
        return []
    return [
        Run(t, ExecutionTrigger.SCHEDULE)
        for t in due_times(schedule, on_time, now, keep=FIRE_ALL_LIMIT)
    ]


# ---------------------------------------------------------------------------------------
# Firing
# ---------------------------------------------------------------------------------------


@dataclass
class FireResult:
    schedules: int = 0
    fired: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"schedules": self.schedules, "fired": self.fired, "skipped": self.skipped}


def fire_due(now: datetime | None = None, limit: int = 1000) -> FireResult:
    """Fire every ACTIVE schedule due by ``now``: each due time once.

    Due rows are locked a batch at a time with SKIP LOCKED, so two clocks split a burst
    (many schedules due on the same minute) instead of queueing behind each other, and a
    batch costs one commit. Each schedule fires inside a savepoint: one that fails rolls
    back alone.
    """
    # A clock's pass stamps each run with the moment it is made; a caller naming ``now``
    # (a replay, a test) gets exactly that.
    live = now is None
    now = now or utcnow()
    result = FireResult()
    retry_later: set[str] = set()
    for _ in range(max(1, limit // FIRE_BATCH)):
        limit_idle_transaction()
        query = (
            db.select(Schedule)
            .where(Schedule.status == ScheduleStatus.ACTIVE, Schedule.next_run_at <= now)
            .order_by(Schedule.next_run_at)
            .limit(FIRE_BATCH)
            .with_for_update(skip_locked=True)
        )
        if retry_later:
            query = query.where(Schedule.id.not_in(retry_later))
        batch = list(db.session.scalars(query))
        if not batch:
            db.session.rollback()
            break
        tasks: list[Task] = []
        for schedule in batch:
            stamp = max(now, utcnow()) if live else now
            try:
                with db.session.begin_nested():
                    made, skipped = fire_locked(schedule, now, stamp)
            except (DomainError, CronError) as exc:
                # The schedule itself cannot make its task (a stored field no longer
                # valid): it fails alone, visibly, instead of blocking the others.
                fail_locked(schedule, f"could not fire: {exc}", now)
                continue
            except Exception:
                # Anything else (a clash, a bug) may pass: retried on the next pass.
                log.exception("firing schedule %s failed; it will be retried", schedule.id)
                retry_later.add(schedule.id)
                continue
            tasks.extend(made)
            result.schedules += 1
            result.fired += len(made)
            result.skipped += skipped
        db.session.commit()
    return result


def limit_idle_transaction() -> None:
    """PostgreSQL: a clock frozen mid-batch (stopped, partitioned) loses its row locks soon.

    Other clocks skip locked rows, so without this a hung clock would hold those schedules
    back until TCP gave up on it.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SET LOCAL idle_in_transaction_session_timeout = '5s'"))


def fail_locked(schedule: Schedule, error: str, now: datetime) -> None:
    """Stop a locked schedule that cannot fire, keeping the reason."""
    schedule.status = ScheduleStatus.FAILED
    schedule.last_error = error
    schedule.next_run_at = None
    schedule.updated_at = now


def mark_failed(schedule_id: str, error: str, now: datetime) -> None:
    """Stop a schedule that cannot fire, unless it was deleted, paused or edited meanwhile."""
    schedule = db.session.scalars(
        db.select(Schedule)
        .where(Schedule.id == schedule_id, Schedule.status == ScheduleStatus.ACTIVE)
        .with_for_update()
    ).first()
    if schedule is None:
        db.session.rollback()
        return
    fail_locked(schedule, error, now)
    db.session.commit()


def fire_schedule(schedule_id: str, now: datetime) -> tuple[int, int]:
    """Fire one schedule's due runs in its own transaction; (runs fired, runs skipped)."""
    schedule = db.session.scalars(
        db.select(Schedule)
        .where(
            Schedule.id == schedule_id,
            Schedule.status == ScheduleStatus.ACTIVE,
            Schedule.next_run_at <= now,
        )
        .with_for_update(skip_locked=True)
    ).first()
    if schedule is None:
        db.session.rollback()
        return 0, 0
    made, skipped = fire_locked(schedule, now, now)
    db.session.commit()
    return len(made), skipped


def fire_locked(schedule: Schedule, now: datetime, stamp: datetime) -> tuple[list[Task], int]:
    """Fire a locked, due schedule's runs and move it on; (tasks made, runs skipped)."""
    runs = plan_runs(schedule, now)
    # A due time that already has an execution (a run-now at that very instant, or a row
    # written by another clock) has had its run: leave it out rather than fail on the
    # unique constraint, so the schedule still moves past it.
    taken = fired_already(schedule.id, runs)
    skipped = 0
    tasks: list[Task] = []
    for run in runs:
        if run.scheduled_for in taken:
            continue
        task = start_run(schedule, run.scheduled_for, run.trigger, stamp, sequence=len(tasks))
        if task is None:
            skipped += 1
        else:
            tasks.append(task)
    advance(schedule, now, fired=bool(tasks), missed=not runs, stamp=stamp)
    return tasks, skipped


def fired_already(schedule_id: str, runs: Sequence[Run]) -> set[datetime]:
    """The due times among ``runs`` that already have an execution row."""
    if not runs:
        return set()
    found = db.session.scalars(
        db.select(ScheduleExecution.scheduled_for).where(
            ScheduleExecution.schedule_id == schedule_id,
            ScheduleExecution.scheduled_for.between(runs[0].scheduled_for, runs[-1].scheduled_for),
        )
    )
    return set(found)  # aware UTC, as UTCDateTime reads it


def start_run(
    schedule: Schedule, scheduled_for: datetime, trigger: str, now: datetime, sequence: int = 0
) -> Task | None:
    """Record one execution and create its task; None when overlap_policy skips it."""
    execution = ScheduleExecution(
        id=new_id("exec"),
        schedule_id=schedule.id,
        scheduled_for=scheduled_for,
        fired_at=now,
        trigger=trigger,
    )
    busy = unfinished_run(schedule.id) if schedule.overlap_policy == OverlapPolicy.SKIP else None
    if busy is not None and trigger != ExecutionTrigger.RUN_NOW:
        execution.note = f"skipped: the previous run's task {busy.id} is still {busy.status}"
        db.session.add(execution)
        db.session.flush()
        return None
    fields = run_fields(schedule)
    task = build_task(schedule_runner(schedule.id), fields, now=now, sequence=sequence)
    # The task row first: no relationship tells the unit of work that the execution's
    # foreign key points at it, so one flush may insert them in either order.
    db.session.flush()
    execution.task_id = task.id
    db.session.add(execution)
    db.session.flush()  # the next run's overlap check must see this one
    metrics.count("ains_schedules_fired_total")
    if trigger != ExecutionTrigger.RUN_NOW:
        lateness = (now - scheduled_for).total_seconds()
        metrics.observe("ains_schedule_fire_lateness_seconds", lateness)
    webhooks.emit(
        WebhookEvents.SCHEDULE_FIRED,
        at=now,
        task_id=task.id,
        schedule_id=schedule.id,
        client_id=schedule.client_id,
        data={
            "schedule_id": schedule.id,
            "description": schedule.description,
            "execution_id": execution.id,
            "scheduled_for": isoformat(scheduled_for),
            "fired_at": isoformat(now),
            "trigger": trigger,
            "late_ms": round((now - scheduled_for).total_seconds() * 1000),
        },
    )
    return task


def run_fields(schedule: Schedule) -> dict[str, Any]:
    """A run's task fields: the schedule's own, or its template's with the schedule's on top."""
    fields = schedule.task_fields()
    if schedule.template_id is None:
        return fields
    runner = schedule_runner(schedule.id)
    try:
        fields = task_fields_from_template(runner, schedule.template_id, fields)
    except NotFound:
        raise Conflict(f"its template {schedule.template_id} was deleted") from None
    # The copy the schedule shows follows the template.
    schedule.task_type = fields["task_type"]
    schedule.capability_required = fields["capability_required"]
    return fields


def unfinished_run(schedule_id: str) -> Task | None:
    """The task of the schedule's latest run that made one, if it has not finished."""
    task = db.session.scalars(
        db.select(Task)
        .join(ScheduleExecution, ScheduleExecution.task_id == Task.id)
        .where(
            ScheduleExecution.schedule_id == schedule_id,
            ScheduleExecution.task_id.is_not(None),  # lets the partial index skip SKIPPED rows
        )
        .order_by(ScheduleExecution.fired_at.desc())
        .limit(1)
    ).first()
    return task if task is not None and task.status not in TaskStatus.TERMINAL else None


def advance(
    schedule: Schedule, now: datetime, *, fired: bool, missed: bool, stamp: datetime | None = None
) -> None:
    """Move the schedule past ``now``; a one-time schedule is done (or failed, if skipped)."""
    if fired:
        schedule.last_run_at = stamp or now
    schedule.updated_at = stamp or now
    if schedule.kind == "once":
        schedule.next_run_at = None
        if missed:
            schedule.status = ScheduleStatus.FAILED
            schedule.last_error = (
                "run_at was missed by more than the misfire grace and misfire_policy is skip"
            )
        else:
            schedule.status = ScheduleStatus.COMPLETED
        return
    schedule.next_run_at = next_due(schedule, now)
    if schedule.next_run_at is None:
        schedule.status = ScheduleStatus.COMPLETED


def next_fire_at() -> datetime | None:
    """When the earliest ACTIVE schedule is due: how long a clock may sleep."""
    return as_utc(
        db.session.scalar(
            db.select(func.min(Schedule.next_run_at)).where(
                Schedule.status == ScheduleStatus.ACTIVE
            )
        )
    )


# ---------------------------------------------------------------------------------------
# CRUD
# ---------------------------------------------------------------------------------------


def utc_or_invalid(value: datetime, field: str) -> datetime:
    """``value`` in UTC; a time whose offset takes it past year 1 or 9999 is refused."""
    try:
        converted = as_utc(value)
    except OverflowError:
        raise invalid(field, f"{value.isoformat()} is out of range") from None
    assert converted is not None
    return converted


def check_timing(fields: dict[str, Any], now: datetime) -> None:
    """Exactly one of cron_expression / interval_seconds / run_at, each valid."""
    given = [f for f in ("cron_expression", "interval_seconds", "run_at") if fields.get(f)]
    if len(given) != 1:
        raise InvalidInput(
            "give exactly one of cron_expression, interval_seconds or run_at"
            + (f" (got {', '.join(given)})" if given else ""),
            [
                {"field": f, "message": "exactly one of these is required"}
                for f in given or ("cron_expression", "interval_seconds", "run_at")
            ],
        )
    try:
        load_zone(fields.get("timezone") or "UTC")
        if fields.get("cron_expression"):
            expression = parse_cron(fields["cron_expression"])
            fields["cron_expression"] = expression.text
    except CronError as exc:
        raise invalid(exc.field, str(exc)) from exc
    run_at = fields.get("run_at")
    if run_at is not None:
        run_at = utc_or_invalid(run_at, "run_at")
        if run_at <= now:
            raise invalid("run_at", f"{run_at.isoformat()} is in the past")
        if run_at > now + MAX_AHEAD:
            raise invalid("run_at", f"{run_at.isoformat()} is more than 100 years ahead")
        fields["run_at"] = run_at


def take_template(
    principal: Principal, client_id: str, fields: dict[str, Any], *, new: bool
) -> None:
    """Check ``fields["template_id"]`` and take task_type and capability_required from it.

    A new schedule also takes the template's default priority, retries, retry policy and
    timeout for those not given. Its input_data holds overrides, merged onto the template's
    defaults at each run.
    """
    template = visible_template(principal, fields["template_id"])
    if template.client_id != client_id:
        raise invalid(
            "template_id",
            f"template {template.id} belongs to client {template.client_id!r}, not {client_id!r}",
        )
    for key in ("task_type", "capability_required"):
        value = getattr(template, key)
        if fields.get(key) not in (None, value):
            raise invalid(key, f"comes from template {template.id} ({value!r}); leave it out")
        fields[key] = value
    if new:
        for default, key in DEFAULTS.items():
            fields.setdefault(key, getattr(template, default))


def require_task_fields(fields: dict[str, Any]) -> None:
    missing = [k for k in ("task_type", "capability_required") if not fields.get(k)]
    if missing:
        raise InvalidInput(
            f"{', '.join(missing)} required (or give template_id)",
            [{"field": k, "message": "Field required (or give template_id)"} for k in missing],
        )


def visible_schedule(principal: Principal, schedule_id: str, *, lock: bool = False) -> Schedule:
    """A schedule the principal may see: clients their own; DELETED ones are gone."""
    principal.require_role(Role.CLIENT)
    query = db.select(Schedule).where(Schedule.id == schedule_id)
    if lock:
        query = query.with_for_update()
    schedule = db.session.scalars(query).first()
    if (
        schedule is None
        or schedule.status == ScheduleStatus.DELETED
        or (not principal.is_admin and schedule.client_id != principal.client_id)
    ):
        raise NotFound(f"schedule {schedule_id!r} not found")
    return schedule


def create_schedule(
    principal: Principal, fields: dict[str, Any], now: datetime | None = None
) -> Schedule:
    """A new ACTIVE schedule; its first run is the first due time after now."""
    now = now or utcnow()
    fields = dict(fields)
    client_id = resolve_client_id(principal, fields.pop("client_id", None))
    check_timing(fields, now)
    if fields.get("template_id"):
        take_template(principal, client_id, fields, new=True)
    else:
        require_task_fields(fields)
    schedule = Schedule(
        id=new_id("sched"),
        client_id=client_id,
        timezone=fields.pop("timezone", None) or "UTC",
        status=ScheduleStatus.ACTIVE,
        created_by=principal.actor,
        created_at=now,
        updated_at=now,
        **{k: v for k, v in fields.items() if k in EDITABLE_FIELDS},
    )
    if schedule.interval_seconds:
        schedule.anchor_at = now
    schedule.next_run_at = first_run(schedule, now)
    audit.track(schedule, "schedule")
    db.session.add(schedule)
    db.session.commit()
    return schedule


def first_run(schedule: Schedule, now: datetime) -> datetime | None:
    """From ``now`` on (creation, resume, edit): the next due time; none missed is owed."""
    if schedule.kind == "once":
        return as_utc(schedule.run_at)
    return next_due(schedule, now)


def update_schedule(
    principal: Principal, schedule_id: str, fields: dict[str, Any], now: datetime | None = None
) -> Schedule:
    """Change fields (PUT: the given ones); a new timing takes effect from now."""
    now = now or utcnow()
    schedule = visible_schedule(principal, schedule_id, lock=True)
    audit.track(schedule, "schedule")
    status = fields.pop("status", None)
    changes = {k: v for k, v in fields.items() if k in EDITABLE_FIELDS}
    required = [k for k, v in changes.items() if v is None and k not in NULLABLE_FIELDS]
    if required:
        raise InvalidInput(
            f"{', '.join(required)} cannot be null",
            [{"field": k, "message": "cannot be null"} for k in required],
        )
    template_id = changes.get("template_id", schedule.template_id)
    if template_id:
        for key in ("task_type", "capability_required"):
            if key in changes and changes[key] == getattr(schedule, key):
                del changes[key]  # sent back unchanged (a form resubmitted)
        if {"template_id", "task_type", "capability_required"} & changes.keys():
            changes["template_id"] = template_id
            take_template(principal, schedule.client_id, changes, new=False)
    # A timing sent back unchanged (a form resubmitted) must not re-anchor or skip a run.
    for key in [k for k in TIMING_FIELDS if k in changes and same_timing(schedule, k, changes[k])]:
        del changes[key]
    timing = {k for k in TIMING_FIELDS if k in changes}
    if timing:
        merged = {f: getattr(schedule, f) for f in TIMING_FIELDS}
        kinds = ("cron_expression", "interval_seconds", "run_at")
        if any(changes.get(f) for f in kinds):
            # The kind given replaces the schedule's kind: the other two are cleared.
            merged |= {f: changes.get(f) for f in kinds}
        else:
            # Only nulls: clearing the schedule's own kind leaves it none, which is refused.
            merged |= {f: changes[f] for f in kinds if f in changes}
        if "timezone" in changes:
            merged["timezone"] = changes["timezone"] or "UTC"
        check_timing(merged, now)
        changes |= merged
    for key, value in changes.items():
        setattr(schedule, key, value)
    if timing:
        if schedule.interval_seconds and "interval_seconds" in timing:
            schedule.anchor_at = now
        if schedule.status in (ScheduleStatus.COMPLETED, ScheduleStatus.FAILED):
            schedule.status = ScheduleStatus.ACTIVE
            schedule.last_error = None
        schedule.next_run_at = first_run(schedule, now)
    if status is not None and status != schedule.status:
        set_paused(schedule, status == ScheduleStatus.PAUSED, now)
    schedule.updated_at = now
    db.session.commit()
    return schedule


def same_timing(schedule: Schedule, key: str, value: Any) -> bool:
    """Whether a timing field's new value is the one the schedule has."""
    if key == "cron_expression" and value:
        try:
            value = parse_cron(value).text
        except CronError:
            return False  # check_timing reports it
    elif key == "run_at" and value is not None:
        value = as_utc(value)
    elif key == "timezone":
        value = value or "UTC"
    return bool(value == getattr(schedule, key))


def set_paused(schedule: Schedule, paused: bool, now: datetime) -> None:
    """Pause an ACTIVE schedule or resume a PAUSED one (runs due meanwhile are not owed)."""
    wanted = ScheduleStatus.PAUSED if paused else ScheduleStatus.ACTIVE
    if schedule.status == wanted:
        return
    if schedule.status not in (ScheduleStatus.ACTIVE, ScheduleStatus.PAUSED):
        raise Conflict(
            f"schedule {schedule.id} is {schedule.status}; only ACTIVE and PAUSED schedules "
            "can be paused or resumed"
        )
    if not paused and schedule.kind == "once" and as_utc(schedule.run_at) <= now:  # type: ignore[operator]
        raise Conflict(
            f"schedule {schedule.id}'s run_at passed while it was paused; "
            "set a new run_at to run it"
        )
    schedule.status = wanted
    if not paused:
        schedule.next_run_at = first_run(schedule, now)
        if schedule.next_run_at is None:
            schedule.status = ScheduleStatus.COMPLETED


def pause_schedule(
    principal: Principal, schedule_id: str, paused: bool, now: datetime | None = None
) -> Schedule:
    """Pause or resume; takes effect on the next tick."""
    now = now or utcnow()
    schedule = visible_schedule(principal, schedule_id, lock=True)
    audit.track(schedule, "schedule")
    set_paused(schedule, paused, now)
    schedule.updated_at = now
    db.session.commit()
    return schedule


def delete_schedule(
    principal: Principal, schedule_id: str, now: datetime | None = None
) -> Schedule:
    """Mark DELETED: it never fires again; its executions and tasks stay."""
    now = now or utcnow()
    schedule = visible_schedule(principal, schedule_id, lock=True)
    audit.track(schedule, "schedule")
    schedule.status = ScheduleStatus.DELETED
    schedule.next_run_at = None
    schedule.deleted_at = now
    schedule.updated_at = now
    db.session.commit()
    return schedule


def run_now(
    principal: Principal, schedule_id: str, now: datetime | None = None
) -> tuple[ScheduleExecution, Task]:
    """Fire one extra run at once (whatever the status and overlap); next_run_at stays."""
    now = now or utcnow()
    schedule = visible_schedule(principal, schedule_id, lock=True)
    try:
        task = start_run(schedule, now, ExecutionTrigger.RUN_NOW, now)
    except IntegrityError:
        # An execution is already recorded for this very instant (the unique due time).
        db.session.rollback()
        raise Conflict(
            f"schedule {schedule_id} already has a run at {now.isoformat()}; try again"
        ) from None
    assert task is not None
    schedule.last_run_at = now
    schedule.updated_at = now
    db.session.commit()
    execution = db.session.scalars(
        db.select(ScheduleExecution).where(ScheduleExecution.task_id == task.id)
    ).one()
    return execution, task


# ---------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunCounts:
    total: int = 0
    failed: int = 0


def run_counts(schedule_ids: Sequence[str]) -> dict[str, RunCounts]:
    """Runs that made a task, and how many of those failed, per schedule (always current)."""
    if not schedule_ids:
        return {}
    # Every run that made a task made it as "schedule:<id>" (skipped runs made none), so
    # the tasks alone answer, from ix_tasks_schedule_runs; joining each execution to its
    # task was a random read per run, 0.6 s for 20 schedules at 1M tasks (bench/console.py).
    failed = case((Task.status.in_(ExecutionStatus.FAILED_TASK), 1), else_=0)
    by_actor = {schedule_runner(sid).actor: sid for sid in schedule_ids}
    rows = db.session.execute(
        db.select(Task.created_by, func.count(), func.sum(failed))
        .where(text(f"tasks.{SCHEDULE_RUN}"), Task.created_by.in_(by_actor))
        .group_by(Task.created_by)
    )
    return {by_actor[actor]: RunCounts(int(total), int(bad or 0)) for actor, total, bad in rows}


def schedule_dict(schedule: Schedule, counts: RunCounts | None = None) -> dict[str, Any]:
    """The API shape of a schedule, with its run counts."""
    counts = counts or run_counts([schedule.id]).get(schedule.id) or RunCounts()
    data = schedule.to_dict(total_runs=counts.total, failed_runs=counts.failed)
    if schedule.cron_expression:
        try:
            data["schedule_description"] = describe(parse_cron(schedule.cron_expression))
        except CronError:  # stored before a stricter parser: the schedule is FAILED
            data["schedule_description"] = f"cron: {schedule.cron_expression} (invalid)"
    elif schedule.interval_seconds:
        data["schedule_description"] = f"every {schedule.interval_seconds} s"
    else:
        data["schedule_description"] = "once"
    data["next_run_local"] = local_iso(schedule.next_run_at, schedule.timezone)
    return data


def local_iso(when: datetime | None, zone: str) -> str | None:
    """``when`` in the schedule's zone, ISO 8601 with that offset."""
    if when is None:
        return None
    try:
        return as_utc(when).astimezone(load_zone(zone)).isoformat()  # type: ignore[union-attr]
    except (CronError, OverflowError):  # a stored zone this machine's tzdata lacks
        return None


@dataclass(frozen=True)
class SchedulePage:
    schedules: list[tuple[Schedule, RunCounts]]
    total: int


def list_schedules(
    principal: Principal,
    *,
    client_id: str | None = None,
    status: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> SchedulePage:
    """Schedules the principal may see, newest first, with their run counts."""
    principal.require_role(Role.CLIENT)
    query = db.select(Schedule).where(Schedule.status != ScheduleStatus.DELETED)
    if not principal.is_admin:
        query = query.where(Schedule.client_id == principal.client_id)
    if client_id:
        query = query.where(Schedule.client_id == client_id)
    if status:
        query = query.where(Schedule.status == status)
    total = db.session.scalar(db.select(func.count()).select_from(query.subquery())) or 0
    found = list(
        db.session.scalars(
            query.order_by(Schedule.created_at.desc(), Schedule.id.desc())
            .limit(limit)
            .offset(offset)
        )
    )
    counts = run_counts([s.id for s in found])
    return SchedulePage([(s, counts.get(s.id, RunCounts())) for s in found], total)


@dataclass(frozen=True)
class ExecutionPage:
    executions: list[tuple[ScheduleExecution, Task | None]]
    total: int


def list_executions(
    principal: Principal, schedule_id: str, *, limit: int = 20, offset: int = 0
) -> ExecutionPage:
    """A schedule's executions, newest first, each with its task."""
    visible_schedule(principal, schedule_id)
    base = db.select(ScheduleExecution).where(ScheduleExecution.schedule_id == schedule_id)
    total = db.session.scalar(db.select(func.count()).select_from(base.subquery())) or 0
    rows = db.session.execute(
        db.select(ScheduleExecution, Task)
        .outerjoin(Task, Task.id == ScheduleExecution.task_id)
        .where(ScheduleExecution.schedule_id == schedule_id)
        .order_by(ScheduleExecution.fired_at.desc(), ScheduleExecution.scheduled_for.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return ExecutionPage([(e, t) for e, t in rows], total)


def preview(
    *,
    cron_expression: str | None = None,
    interval_seconds: int | None = None,
    timezone: str = "UTC",
    count: int = 10,
    start_at: datetime | None = None,
) -> dict[str, Any]:
    """Validate an expression and zone and list its next runs, each with the zone's offset.

    Raises InvalidInput naming the field and the reason.
    """
    now = utcnow()
    start = utc_or_invalid(start_at, "start_at") if start_at is not None else now
    if not EPOCH <= start <= now + MAX_AHEAD:
        raise invalid("start_at", "must be between 1970 and 100 years from now")
    if cron_expression and interval_seconds:
        raise InvalidInput(
            "give cron_expression or interval_seconds, not both",
            [
                {"field": f, "message": "only one of these"}
                for f in ("cron_expression", "interval_seconds")
            ],
        )
    try:
        zone = load_zone(timezone)
        if cron_expression:
            expression = parse_cron(cron_expression)
            runs = next_runs(expression, zone, start, count)
            text = describe(expression)
        elif interval_seconds:
            step = timedelta(seconds=interval_seconds)
            runs = [start + step * (k + 1) for k in range(count)]
            text = f"every {interval_seconds} s"
        else:
            raise invalid("cron_expression", "give cron_expression or interval_seconds")
    except CronError as exc:
        raise invalid(exc.field, str(exc)) from exc
    return {
        "valid": True,
        "error": None,
        "description": text,
        "timezone": timezone,
        "next_runs": [r.astimezone(zone).isoformat() for r in runs],
        "next_runs_utc": [r.astimezone(UTC).isoformat() for r in runs],
    }
