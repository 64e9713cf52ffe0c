"""Client-side task API: submit, inspect, cancel, reprioritise and wait for tasks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TypedDict

from agent_client.http import HttpSession

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "EXPIRED"})


class TaskEvent(TypedDict, total=False):
    """One transition in a task's history, as `GET /ains/tasks/{id}` returns it."""

    event_id: int
    at: str
    from_status: str | None
    to_status: str
    actor: str | None
    reason: str | None
    data: dict[str, Any] | None


class TaskAttempt(TypedDict, total=False):
    """One claim of a task and how it ended, as `GET /ains/tasks/{id}` returns it."""

    attempt: int
    agent_id: str
    started_at: str
    ended_at: str | None
    outcome: str  # running, completed, failed, timed_out, agent_lost, cancelled
    error: str | None
    ended_by: str | None


class Task(TypedDict, total=False):
    """A task as the API returns it; `events` and `attempts` only with `GET /ains/tasks/{id}`.

    `attempt` numbers the current claim: send it back with every report on the task.
    """

    task_id: str
    client_id: str
    task_type: str
    capability_required: str
    input_data: dict[str, Any]
    priority: int
    status: str
    assigned_agent_id: str | None
    attempt: int
    lease_expires_at: str | None
    progress: int | None
    progress_message: str | None
    result_data: dict[str, Any] | None
    error_message: str | None
    last_error: str | None
    max_retries: int
    retry_count: int
    retry_policy: str
    next_retry_at: str | None
    timeout_seconds: int
    retry_on_timeout: bool
    timeout_at: str | None
    expires_at: str | None
    routing_strategy: str | None
    created_at: str
    updated_at: str
    claimed_at: str | None
    completed_at: str | None
    cancel_requested_at: str | None
    cancelled_at: str | None
    cancelled_by: str | None
    cancellation_reason: str | None
    events: list[TaskEvent]
    attempts: list[TaskAttempt]


class TasksClient:
    """Submits and manages tasks with a client (or admin) API key."""

    def __init__(self, api_url: str, api_key: str, *, session: HttpSession | None = None) -> None:
        """Talk to the API at `api_url` with `api_key`, or through a ready `session`."""
        self.session = session or HttpSession(api_url, api_key)

    def submit(self, *, idempotency_key: str | None = None, **fields: Any) -> Task:
        """Submit one task with the fields of `POST /ains/tasks`.

        Among them: `task_type`, `capability_required`, `input_data`, `priority`,
        `timeout_seconds`, `retry_on_timeout`, `expires_in_seconds`. Fields given as None are
        left out, so the server's defaults apply. Without an `idempotency_key` a fresh one is
        generated, so that a retry after a lost answer cannot create the task twice.
        """
        body = {key: value for key, value in fields.items() if value is not None}
        headers = {"Idempotency-Key": idempotency_key or f"sdk-{uuid.uuid4().hex}"}
        return self.session.post("/ains/tasks", body, headers=headers)

    def submit_batch(
        self,
        tasks: list[dict[str, Any]],
        atomic: bool = False,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit up to 100 tasks; returns `{"submitted": [...], "failed": [...]}`.

        Like `submit`, a fresh `idempotency_key` is generated unless one is given.
        """
        headers = {"Idempotency-Key": idempotency_key or f"sdk-{uuid.uuid4().hex}"}
        return self.session.post(
            "/ains/tasks/batch", {"tasks": tasks, "atomic": atomic}, headers=headers
        )

    def get(self, task_id: str) -> Task:
        """Fetch one task with its event history."""
        return self.session.get(f"/ains/tasks/{task_id}")

    def list(self, **filters: Any) -> dict[str, Any]:
        """One page of tasks, newest first: `{"tasks", "next_cursor", "limit"}`.

        Filters: status, client_id, capability, agent_id, priority, created_after,
        created_before (datetime or ISO string), limit, cursor. None values are left out.
        """
        return self.session.get("/ains/tasks", params=_query(filters))

    def iter_tasks(self, **filters: Any) -> Iterator[Task]:
        """Every task matching `filters`, following `next_cursor` page after page."""
        params = dict(filters)
        while True:
            page = self.list(**params)
            yield from page.get("tasks", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return
            params["cursor"] = cursor

    def cancel(self, task_id: str, reason: str | None = None) -> Task:
        """Cancel a task that has not finished yet.

        A waiting task ends CANCELLED at once. A running one is marked cancel-requested: it
        ends CANCELLED when its agent confirms that it stopped, or after the grace period.
        """
        body = {"reason": reason} if reason is not None else {}
        return self.session.post(f"/ains/tasks/{task_id}/cancel", body, idempotent=True)

    def set_priority(self, task_id: str, priority: int) -> Task:
        """Change a waiting task's priority (1..10)."""
        return self.session.patch(
            f"/ains/tasks/{task_id}/priority", {"priority": priority}, idempotent=True
        )

    def queue_metrics(self) -> dict[str, Any]:
        """Queue depth, counts and average waits by priority and status."""
        return self.session.get("/ains/queue/metrics")

    def wait(self, task_id: str, timeout: float = 60, poll: float = 0.2) -> Task:
        """Poll until the task has finished (`TERMINAL_STATUSES`); raise TimeoutError if not."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.get(task_id)
            if task.get("status") in TERMINAL_STATUSES:
                return task
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"task {task_id} still {task.get('status')} after {timeout} seconds"
                )
            time.sleep(min(poll, remaining))


def _query(filters: dict[str, Any]) -> dict[str, Any]:
    """Query parameters from filters: drop None, send datetimes as ISO 8601."""
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in filters.items()
        if value is not None
    }
