"""Reading GET /metrics in tests: the exposition text parsed into samples."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

# Every name of the metrics contract (issue 10): monitoring/ relies on each of them.
CONTRACT_NAMES = (
    "flask_http_request_duration_seconds",
    "flask_http_request_total",
    "flask_http_request_exceptions_total",
    "ains_tasks_created_total",
    "ains_tasks_completed_total",
    "ains_tasks_failed_total",
    "ains_tasks_cancelled_total",
    "ains_tasks_timed_out_total",
    "ains_task_retries_total",
    "ains_task_dispatch_latency_seconds",
    "ains_task_run_seconds",
    "ains_queue_tasks",
    "ains_queue_oldest_pending_age_seconds",
    "ains_capability_pending_tasks",
    "ains_capability_agents_online",
    "ains_agents",
    "ains_agents_active",
    "ains_agent_trust_score",
    "ains_agent_registrations_total",
    "ains_agent_heartbeats_total",
    "ains_schedules_fired_total",
    "ains_schedule_fire_lateness_seconds",
    "ains_webhook_deliveries_total",
    "ains_rq_queue_jobs",
    "ains_rq_workers",
)


class Scrape:
    """One /metrics answer: its text, declared families and samples."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.types: dict[str, str] = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                name, kind = line[len("# TYPE ") :].rsplit(" ", 1)
                self.types[name] = kind
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        """The sample with exactly these labels, or None."""
        return self.samples.get((name, frozenset(labels.items())))

    def get(self, name: str, **labels: str) -> float:
        """The sample's value, 0 when absent (a counter not yet incremented)."""
        return self.value(name, **labels) or 0.0

    def total(self, name: str, **labels: str) -> float:
        """The sum over every sample of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.samples)
