"""GET /metrics: the HTTP metrics of every web process, and the domain metrics.

HTTP metrics (``flask_http_request_*``) come from prometheus-flask-exporter. Under gunicorn
the workers are separate processes, so prometheus_client runs in multiprocess mode: each
worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR (set by gunicorn.conf.py
before the workers import prometheus_client) and a scrape, whichever worker answers it,
sums them all. Without that variable (the Flask dev server, the test suite) one process
keeps them in a plain registry.

Domain metrics (``ains_*``) are read at scrape time by ``DomainCollector``: counters and
histograms from Redis (app/services/metrics), gauges from a few indexed queries, cached
METRICS_CACHE_SECONDS. A dependency that is down leaves its families empty and sets
``ains_metrics_source_up`` to 0: the scrape itself still answers 200.

The endpoint is registered on the app, outside the API blueprint: no API key, no rate
limit, and a GET is never audited.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from prometheus_client import CollectorRegistry, values
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_flask_exporter import PrometheusMetrics
from rq import Queue
from rq.worker_registration import REDIS_WORKER_KEYS
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.config import prometheus_multiproc_dir
from app.extensions import db
from app.lib.clock import utcnow
from app.models import Agent, AgentStatus, Capability, Task, TaskStatus
from app.services import metrics
from app.services.settings import settings

log = logging.getLogger(__name__)

OPEN_STATUSES = (TaskStatus.PENDING, TaskStatus.ASSIGNED, TaskStatus.ACTIVE, TaskStatus.BLOCKED)
WAITING_STATUSES = frozenset({TaskStatus.PENDING, TaskStatus.ASSIGNED})
PRIORITIES = range(1, 11)
ONLINE_STATUSES = (AgentStatus.AVAILABLE, AgentStatus.BUSY)
EXTENSION = "ains_metrics"  # the app's AinsMetrics, in app.extensions
# The methods the HTTP metrics (and the request log) name as they are; any other becomes
# OTHER. The method is the caller's choice and no route takes a made-up one (405 either
# way): kept as sent, each would be a series of its own, so anyone could grow /metrics.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
OTHER_METHOD = "OTHER"


class BoundedMethods:
    """WSGI middleware: a request with a method outside KNOWN_METHODS arrives as OTHER."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD", "GET").upper() not in KNOWN_METHODS:
            environ["REQUEST_METHOD"] = OTHER_METHOD
        return self.wsgi_app(environ, start_response)


def database_gauges(now: Any) -> list[Metric]:
    """The gauges read from the database: one grouped query on the open tasks (index
    ix_tasks_claim: status first), and the agents with their capabilities."""
    queue = GaugeMetricFamily(
        "ains_queue_tasks",
        "Open tasks (PENDING, ASSIGNED, ACTIVE, BLOCKED) by status and priority",
        labels=["status", "priority"],
    )
    oldest = GaugeMetricFamily(
        "ains_queue_oldest_pending_age_seconds",
        "Age of the oldest PENDING or ASSIGNED task per capability, since it entered the queue",
        labels=["capability"],
    )
    waiting = GaugeMetricFamily(
        "ains_capability_pending_tasks",
        "PENDING and ASSIGNED tasks per capability",
        labels=["capability"],
    )
    online = GaugeMetricFamily(
        "ains_capability_agents_online",
        "AVAILABLE or BUSY agents whose heartbeat is within the lease, per capability",
        labels=["capability"],
    )
    agents = GaugeMetricFamily("ains_agents", "Agents by status", labels=["status"])
    active = GaugeMetricFamily("ains_agents_active", "AVAILABLE agents")
    trust = GaugeMetricFamily(
        "ains_agent_trust_score", "Trust score of each agent", labels=["agent_id", "display_name"]
    )

    by_status_priority: dict[tuple[str, int], int] = defaultdict(int)
    waiting_count: dict[str, int] = defaultdict(int)
    oldest_at: dict[str, Any] = {}
    rows = db.session.execute(
        select(
            Task.status,
            Task.capability_required,
            Task.priority,
            func.count(),
            func.min(Task.enqueued_at),
        )
        .where(Task.status.in_(OPEN_STATUSES))
        .group_by(Task.status, Task.capability_required, Task.priority)
    ).all()
    for status, capability, priority, n, first in rows:
        by_status_priority[(status, priority)] += n
        if status in WAITING_STATUSES:
            waiting_count[capability] += n
            if first is not None and (capability not in oldest_at or first < oldest_at[capability]):
                oldest_at[capability] = first

    agent_rows = db.session.execute(
        select(Agent.id, Agent.display_name, Agent.status, Agent.trust_score, Agent.last_heartbeat)
    ).all()
    cutoff = now - timedelta(seconds=settings.lease_seconds)
    live = {
        row.id
        for row in agent_rows
        if row.status in ONLINE_STATUSES
        and row.last_heartbeat is not None
        and row.last_heartbeat >= cutoff
    }
    online_count: dict[str, int] = defaultdict(int)
    for agent_id, name in db.session.execute(select(Capability.agent_id, Capability.name)).all():
        online_count[name] += agent_id in live
    db.session.rollback()

    for status in OPEN_STATUSES:
        for priority in PRIORITIES:
            queue.add_metric([status, str(priority)], by_status_priority.pop((status, priority), 0))
    for (status, priority), n in by_status_priority.items():  # outside 1-10: still shown
        queue.add_metric([status, str(priority)], n)
    capabilities = sorted(set(waiting_count) | set(online_count))
    for capability in capabilities:
        waiting.add_metric([capability], waiting_count.get(capability, 0))
        online.add_metric([capability], online_count.get(capability, 0))
        first = oldest_at.get(capability)
        oldest.add_metric(
            [capability], max(0.0, (now - first).total_seconds()) if first is not None else 0
        )
    status_count: dict[str, int] = defaultdict(int)
    for row in agent_rows:
        status_count[row.status] += 1
        trust.add_metric([row.id, row.display_name], row.trust_score or 0.0)
    for status in sorted(set(AgentStatus.ALL) | set(status_count)):
        agents.add_metric([status], status_count.get(status, 0))
    active.add_metric([], status_count.get(AgentStatus.AVAILABLE, 0))
    return [queue, oldest, waiting, online, agents, active, trust]


def redis_families(queue_names: list[str]) -> list[Metric] | None:
    """Counters, histograms and RQ gauges, in one pipelined round trip (None: Redis down)."""
    client = metrics.store.available()
    if client is None:
        return None
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(metrics.COUNTERS_KEY)
        for name in metrics.HISTOGRAMS:
            pipe.hgetall(metrics.HISTOGRAM_KEY + name)
        for name in queue_names:
            pipe.llen(Queue.redis_queue_namespace_prefix + name)
        pipe.scard(REDIS_WORKER_KEYS)
        replies = pipe.execute()
    except Exception as exc:  # a scrape never fails on Redis
        metrics.store.failed(exc, "scraping")
        return None
    metrics.store.recovered()
    families: list[Metric] = []
    counters = metrics.parse_counters(replies[0])
    for name, (help_text, labels) in metrics.COUNTERS.items():
        family = CounterMetricFamily(name, help_text, labels=list(labels))
        values = counters[name]
        if not labels:
            values.setdefault((), 0.0)
        if name == "ains_webhook_deliveries_total":
            for outcome in metrics.WEBHOOK_OUTCOMES:
                values.setdefault((outcome,), 0.0)
        for label_values, value in sorted(values.items()):
            family.add_metric(list(label_values), value)
        families.append(family)
    for i, (name, spec) in enumerate(metrics.HISTOGRAMS.items(), start=1):
        family = HistogramMetricFamily(name, spec.help, labels=list(spec.labels))
        for label_values, (counts, total) in sorted(
            metrics.parse_histogram(spec, replies[i]).items()
        ):
            cumulative, running = [], 0
            for bound, n in zip([*spec.buckets, float("inf")], counts, strict=True):
                running += n
                cumulative.append((format_bound(bound), running))
            family.add_metric(list(label_values), cumulative, total)
        families.append(family)
    offset = 1 + len(metrics.HISTOGRAMS)
    jobs = GaugeMetricFamily(
        "ains_rq_queue_jobs", "Jobs waiting in each RQ queue", labels=["queue"]
    )
    for j, name in enumerate(queue_names):
        jobs.add_metric([name], replies[offset + j])
    workers = GaugeMetricFamily("ains_rq_workers", "RQ workers registered")
    workers.add_metric([], replies[offset + len(queue_names)])
    return [*families, jobs, workers]


def format_bound(bound: float) -> str:
    if bound == float("inf"):
        return "+Inf"
    return repr(float(bound))


class DomainCollector:
    """The ``ains_*`` families, computed at scrape time (inside the request's app context)."""

    def __init__(self, queue_names: list[str], cache_seconds: int) -> None:
        self.queue_names = queue_names
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._gauges: list[Metric] | None = None
        self._gauges_at = 0.0

    def describe(self) -> list[Metric]:
        return []  # no names up front: registering must not query anything

    def gauges(self) -> list[Metric] | None:
        """The database gauges, shared by concurrent scrapes for cache_seconds."""
        with self._lock:
            fresh = time.monotonic() - self._gauges_at < self.cache_seconds
            if self._gauges is not None and fresh:
                return self._gauges
            try:
                gauges = database_gauges(utcnow())
            except SQLAlchemyError as exc:
                db.session.rollback()
                log.warning("metrics: database unavailable (%s: %s)", type(exc).__name__, exc)
                self._gauges = None
                return None
            self._gauges, self._gauges_at = gauges, time.monotonic()
            return gauges

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "ains_metrics_source_up",
            "1 when the source of the ains_* metrics answered this scrape",
            labels=["source"],
        )
        from_redis = redis_families(self.queue_names)
        gauges = self.gauges()
        up.add_metric(["redis"], from_redis is not None)
        up.add_metric(["database"], gauges is not None)
        yield up
        yield from from_redis or ()
        yield from gauges or ()


class AinsMetrics(PrometheusMetrics):
    """prometheus-flask-exporter, with the domain collector in every scrape.

    In multiprocess mode the library builds a fresh registry per scrape holding only the
    files' samples; this one adds the domain collector to it.
    """

    def __init__(self, app: Flask, domain: DomainCollector, multiproc_dir: str | None) -> None:
        self.domain = domain
        self.multiproc_dir = multiproc_dir
        # Collectors without names (ours, the multiprocess one) still answer ?name[]=.
        registry = CollectorRegistry(auto_describe=True, support_collectors_without_names=True)
        if multiproc_dir is None:
            registry.register(domain)
        super().__init__(app, registry=registry, group_by="endpoint")

    def generate_metrics(
        self, accept_header: str | None = None, names: Iterable[str] | None = None
    ) -> tuple[str, str]:
        registry = self.registry
        if self.multiproc_dir is not None:
            registry = CollectorRegistry(support_collectors_without_names=True)
            MultiProcessCollector(registry, path=self.multiproc_dir)
            registry.register(self.domain)
        if names:
            registry = registry.restricted_registry(list(names))
        encode, content_type = choose_encoder(accept_header)
        return encode(registry).decode("utf-8"), content_type


def install(app: Flask) -> AinsMetrics:
    """Record domain metrics in the app's Redis and serve GET /metrics."""
    from app import webhook_queue_name

    metrics.store.configure(app.config["REDIS_URL"])
    multiproc_dir = prometheus_multiproc_dir()
    if multiproc_dir is not None:
        if values.ValueClass is values.MutexValue:
            # prometheus_client was imported before the variable was set: its samples stay
            # in this process, so read them from here rather than from empty files.
            log.warning(
                "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported; "
                "/metrics shows this process's HTTP metrics only"
            )
            multiproc_dir = None
        else:
            Path(multiproc_dir).mkdir(parents=True, exist_ok=True)
    domain = DomainCollector(
        [app.config["RQ_QUEUE"], webhook_queue_name(app.config)],
        app.config["METRICS_CACHE_SECONDS"],
    )
    exporter = AinsMetrics(app, domain, multiproc_dir)
    app.wsgi_app = BoundedMethods(app.wsgi_app)  # type: ignore[method-assign]
    app.extensions[EXTENSION] = exporter
    return exporter
