"""Domain metrics: counted in Redis after the commit, read by GET /metrics (app/api/metrics).

The web processes, the RQ worker and the clock all change state, possibly on several hosts,
so their counters and histograms cannot live in one process's memory: each committed
transaction adds what it did to Redis hashes in one pipelined round trip, and the /metrics
collector reads them back at scrape time. A Redis flush resets them, which Prometheus
treats as a counter reset.

What a transaction did is noted in its session as it happens (``count``, ``observe``, and
``note_task_events`` for the task transitions ``Task.transition`` recorded) and written only
after its commit: a rolled-back transaction counts nothing, nor does a rolled-back
savepoint, and a released one is written with its transaction. Metrics fail open: Redis down
or slow never fails a request or a job, it loses the increments (one warning per outage).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import redis
from sqlalchemy import event as orm_events
from sqlalchemy.orm import Session, SessionTransaction

from app.extensions import db
from app.models import TASK_EVENTS, TaskStatus

log = logging.getLogger(__name__)

# Session.info key: what the open transaction will add once it commits.
PENDING = "ains_metrics_pending"
# Session.info key: {open savepoint: a copy of what was noted when it began}.
SAVEPOINTS = "ains_metrics_savepoints"
COUNTERS_KEY = "ains:metrics:counters"
HISTOGRAM_KEY = "ains:metrics:histogram:"

# name: (help, label names). Every name is part of the contract monitoring/ relies on.
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ains_tasks_created_total": ("Tasks submitted", ("capability",)),
    "ains_tasks_completed_total": ("Tasks that ended COMPLETED", ("capability",)),
    "ains_tasks_failed_total": ("Tasks that ended FAILED", ("capability",)),
    "ains_tasks_cancelled_total": ("Tasks that ended CANCELLED", ("capability",)),
    "ains_tasks_expired_total": (
        "Tasks that ended EXPIRED (waited past expires_in_seconds)",
        ("capability",),
    ),
    "ains_tasks_timed_out_total": (
        "Attempts that ran past the task's timeout_seconds (retried or not)",
        ("capability",),
    ),
    "ains_task_retries_total": (
        "Failed attempts put back in the queue for another try",
        ("capability",),
    ),
    "ains_agent_registrations_total": ("Agents registered", ()),
    "ains_agent_heartbeats_total": ("Agent heartbeats received", ()),
    "ains_schedules_fired_total": ("Schedule runs that made a task", ()),
    "ains_webhook_deliveries_total": (
        "Webhook delivery attempts by outcome: delivered, failed (permanent answer), "
        "retrying, given_up (out of attempts), disabled (410 Gone)",
        ("outcome",),
    ),
}
WEBHOOK_OUTCOMES = ("delivered", "failed", "retrying", "given_up", "disabled")
# webhooks.record's outcomes → the metric's; "superseded" and "gone" are not counted.
WEBHOOK_OUTCOME_NAMES = {
    "delivered": "delivered",
    "permanent": "failed",
    "retry": "retrying",
    "gave_up": "given_up",
    "disabled": "disabled",
}


@dataclass(frozen=True)
class HistogramSpec:
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...]  # upper bounds, ascending; +Inf is implied


HISTOGRAMS: dict[str, HistogramSpec] = {
    "ains_task_dispatch_latency_seconds": HistogramSpec(
        "Time from entering the queue (submission, or release by its dependencies) to the "
        "first claim",
        ("capability",),
        (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    ),
    "ains_task_run_seconds": HistogramSpec(
        "Time from claim to the end of the attempt, by how it ended: completed, failed, "
        "timed_out, agent_lost, cancelled",
        ("capability", "status"),
        (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 14400),
    ),
    "ains_schedule_fire_lateness_seconds": HistogramSpec(
        "Time from a schedule's due time to its run (run-now excluded)",
        (),
        (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 15, 60, 300, 3600),
    ),
}

# After Redis failed, metrics skip it this long, so an outage costs one connection attempt
# per interval instead of one per commit.
OUTAGE_RECHECK_SECONDS = 5.0
# A metrics write must never hold a request up for long.
REDIS_TIMEOUT_SECONDS = 0.5


# The fields are built per task event, from few distinct label sets: kept once built.
@lru_cache(maxsize=4096)
def counter_field(name: str, labels: tuple[str, ...]) -> str:
    return json.dumps([name, *labels], separators=(",", ":"))


@lru_cache(maxsize=4096)
def bucket_field(labels: tuple[str, ...], bucket: int | str) -> str:
    """A histogram hash field: the label values and a bucket index (or "sum")."""
    return json.dumps([*labels, bucket], separators=(",", ":"))


def bucket_index(spec: HistogramSpec, value: float) -> int:
    """The first bucket whose upper bound holds ``value`` (len(buckets): only +Inf)."""
    return bisect_left(spec.buckets, value)


@dataclass
class Pending:
    """Increments noted in a transaction, summed so each field is written once."""

    counters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    buckets: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    sums: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))

    def __bool__(self) -> bool:
        return bool(self.counters or self.buckets)

    def copy(self) -> Pending:
        copied = Pending()
        copied.counters.update(self.counters)
        copied.buckets.update(self.buckets)
        copied.sums.update(self.sums)
        return copied


class Store:
    """The Redis the metrics live in, with the outage guard. One per process."""

    def __init__(self) -> None:
        self.client: redis.Redis | None = None
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down = False  # between a failure and the next success: one warning per outage

    def configure(self, redis_url: str) -> None:
        # Its own client: short timeouts (the app's waits up to 40 s for long polls).
        self.client = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
        with self._lock:
            self._down_until = 0.0
            self._down = False

    def available(self) -> redis.Redis | None:
        """The client, or None while an outage is being waited out (or unconfigured)."""
        if self.client is None or time.monotonic() < self._down_until:
            return None
        return self.client

    def failed(self, exc: Exception, doing: str) -> None:
        with self._lock:
            first = not self._down  # a retry failing again is the same outage
            self._down = True
            self._down_until = time.monotonic() + OUTAGE_RECHECK_SECONDS
        if first:
            log.warning(
                "metrics: Redis unavailable while %s (%s: %s); retrying in %.0fs",
                doing,
                type(exc).__name__,
                exc,
                OUTAGE_RECHECK_SECONDS,
            )

    def recovered(self) -> None:
        if not self._down:  # the usual case: no lock taken
            return
        with self._lock:
            was_down, self._down, self._down_until = self._down, False, 0.0
        if was_down:
            log.info("metrics: Redis answers again")


store = Store()


def pending(session: Session | None = None) -> Pending:
    info = (session or db.session).info
    noted = info.get(PENDING)
    if noted is None:
        noted = info[PENDING] = Pending()
    return noted


def count(name: str, amount: int = 1, *labels: str, session: Session | None = None) -> None:
    """Add ``amount`` to counter ``name`` (label values in order) when the session commits."""
    spec = COUNTERS[name]
    if len(labels) != len(spec[1]):
        raise ValueError(f"{name} takes labels {spec[1]}, got {labels}")
    pending(session).counters[counter_field(name, labels)] += amount


def observe(name: str, value: float, *labels: str, session: Session | None = None) -> None:
    """Record one observation of histogram ``name`` when the session commits."""
    spec = HISTOGRAMS[name]
    if len(labels) != len(spec.labels):
        raise ValueError(f"{name} takes labels {spec.labels}, got {labels}")
    value = max(0.0, float(value))
    noted = pending(session)
    noted.buckets[(name, bucket_field(labels, bucket_index(spec, value)))] += 1
    noted.sums[(name, bucket_field(labels, "sum"))] += value


def webhook_delivery(outcome: str) -> None:
    """Count a delivery attempt by ``webhooks.record``'s outcome (some are not counted)."""
    name = WEBHOOK_OUTCOME_NAMES.get(outcome)
    if name is not None:
        count("ains_webhook_deliveries_total", 1, name)


# Task transitions.

ENDED = {
    TaskStatus.COMPLETED: "ains_tasks_completed_total",
    TaskStatus.FAILED: "ains_tasks_failed_total",
    TaskStatus.CANCELLED: "ains_tasks_cancelled_total",
    TaskStatus.EXPIRED: "ains_tasks_expired_total",
}
CLAIMABLE = frozenset({TaskStatus.PENDING, TaskStatus.ASSIGNED})


def note_task_events(session: Session) -> None:
    """Turn the transitions recorded in the session into metric increments.

    Called before the commit (services/workflows), while the tasks' columns are loaded:
    webhooks.write_outbox consumes the same list right after.
    """
    for task, event in session.info.get(TASK_EVENTS) or ():
        before, after = event.from_status, event.to_status
        capability = task.capability_required
        if before is None:
            count("ains_tasks_created_total", 1, capability, session=session)
        if before == after:
            continue  # a priority change
        data = event.data or {}
        if after in ENDED:
            count(ENDED[after], 1, capability, session=session)
        if data.get("outcome") == "timed_out":
            count("ains_tasks_timed_out_total", 1, capability, session=session)
        if before == TaskStatus.ACTIVE and after == TaskStatus.PENDING:
            count("ains_task_retries_total", 1, capability, session=session)
        if after == TaskStatus.ACTIVE and before in CLAIMABLE:
            if data.get("attempt") == 1 and task.enqueued_at is not None:
                wait = (event.at - task.enqueued_at).total_seconds()
                observe("ains_task_dispatch_latency_seconds", wait, capability, session=session)
        elif before == TaskStatus.ACTIVE and task.claimed_at is not None:
            if after == TaskStatus.COMPLETED:
                outcome = "completed"
            elif after == TaskStatus.CANCELLED:
                outcome = "cancelled"
            else:
                outcome = str(data.get("outcome") or "failed")
            run = (event.at - task.claimed_at).total_seconds()
            observe("ains_task_run_seconds", run, capability, outcome, session=session)


def write_committed(session: Session) -> None:
    """After the commit: add what the transaction noted to Redis, in one round trip.

    SQLAlchemy runs the commit hooks when a savepoint is released too: the transaction
    around it may still roll back, so nothing is written then.
    """
    if session.in_nested_transaction():
        saved = session.info.get(SAVEPOINTS)
        if saved:  # released: it can no longer roll back on its own
            saved.pop(session.get_nested_transaction(), None)
        return
    session.info.pop(SAVEPOINTS, None)
    noted: Pending | None = session.info.pop(PENDING, None)
    if not noted:
        return
    client = store.available()
    if client is None:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for key, amount in noted.counters.items():
            pipe.hincrby(COUNTERS_KEY, key, amount)
        for (name, key), amount in noted.buckets.items():
            pipe.hincrby(HISTOGRAM_KEY + name, key, amount)
        for (name, key), total in noted.sums.items():
            pipe.hincrbyfloat(HISTOGRAM_KEY + name, key, total)
        pipe.execute()
    except Exception as exc:
        store.failed(exc, "recording")
    else:
        store.recovered()


@orm_events.listens_for(Session, "after_transaction_create")
def remember(session: Session, transaction: SessionTransaction) -> None:
    """A savepoint begins: keep what was noted so far, for its rollback."""
    if transaction.nested:
        noted = session.info.get(PENDING)
        saved = session.info.setdefault(SAVEPOINTS, {})
        saved[transaction] = noted.copy() if noted is not None else None


@orm_events.listens_for(Session, "after_soft_rollback")
def forget(session: Session, previous_transaction: SessionTransaction) -> None:
    """A rolled-back transaction counts nothing; a rolled-back savepoint takes back what
    was noted since it began.

    The soft rollback, not after_rollback: that one fires only when the database had a
    transaction open, and increments may be noted before any statement ran.
    """
    if not previous_transaction.nested:
        session.info.pop(PENDING, None)
        session.info.pop(SAVEPOINTS, None)
        return
    saved = session.info.get(SAVEPOINTS) or {}
    if previous_transaction not in saved:
        return
    before = saved.pop(previous_transaction)
    if before is None:
        session.info.pop(PENDING, None)
    else:
        session.info[PENDING] = before


# Reading, for the collector.


@dataclass
class Snapshot:
    """The counters and histograms as stored: {name: {label values: value}}."""

    counters: dict[str, dict[tuple[str, ...], float]]
    histograms: dict[str, dict[tuple[str, ...], tuple[list[int], float]]]


def decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_counters(raw: dict[Any, Any]) -> dict[str, dict[tuple[str, ...], float]]:
    result: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in COUNTERS}
    for key, value in raw.items():
        try:
            name, *labels = json.loads(decode(key))
            spec = COUNTERS[name]
            if len(labels) != len(spec[1]):
                continue
            result[name][tuple(str(v) for v in labels)] = float(decode(value))
        except (ValueError, KeyError, TypeError):
            continue  # not ours (a field from an older version): ignored
    return result


def parse_histogram(
    spec: HistogramSpec, raw: dict[Any, Any]
) -> dict[tuple[str, ...], tuple[list[int], float]]:
    """{label values: (per-bucket counts, +Inf last; sum)}."""
    width = len(spec.buckets) + 1
    counts: dict[tuple[str, ...], list[int]] = {}
    sums: dict[tuple[str, ...], float] = defaultdict(float)
    for key, value in raw.items():
        try:
            *labels, bucket = json.loads(decode(key))
            if len(labels) != len(spec.labels):
                continue
            labels_t = tuple(str(v) for v in labels)
            if bucket == "sum":
                sums[labels_t] = float(decode(value))
            elif isinstance(bucket, int) and 0 <= bucket < width:
                counts.setdefault(labels_t, [0] * width)[bucket] += int(decode(value))
        except (ValueError, TypeError):
            continue
    return {labels: (buckets, sums.get(labels, 0.0)) for labels, buckets in counts.items()}
