"""Agent-side API: register, heartbeat, claim tasks and report on them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TypedDict

from agent_client.http import HttpSession
from agent_client.tasks import Task

MAX_WAIT_SECONDS = 30
LONG_POLL_MARGIN_SECONDS = 10


class HeartbeatResult(TypedDict):
    """The answer to a heartbeat.

    `cancelled_task_ids`: tasks a client cancelled; stop them and confirm with `fail`.
    `stop_task_ids`: every task to stop now, the cancelled ones and those the server took
    back (timed out, or the agent was considered lost); report nothing on the latter. Ids
    repeat for about a minute; ignore those you are not running.
    """

    acknowledged: bool
    next_heartbeat_in: int
    agent_health_status: str
    agent_status: str
    last_heartbeat: str
    cancelled_task_ids: list[str]
    stop_task_ids: list[str]


class ClaimResult(TypedDict):
    """The answer to a claim: the tasks now ACTIVE for the agent, and the tasks to stop.

    The stop lists mean what they mean in `HeartbeatResult`.
    """

    tasks: list[Task]
    cancelled_task_ids: list[str]
    stop_task_ids: list[str]


class CompletionItem(TypedDict, total=False):
    """One result for `complete_many`: the task, its result and the claim's attempt."""

    task_id: str
    result: dict[str, Any]
    attempt: int


class CompletionOutcome(TypedDict, total=False):
    """What became of one result of `complete_many`.

    `ok` true: the task is now `status` (COMPLETED). Otherwise `error` says why the result
    was not applied: `{"code", "message"}`, the code one a single `complete` would raise
    (`stale_attempt`, `cancel_requested`, `conflict`, `not_found`, or `validation_error`
    for a task named twice in one batch).
    """

    task_id: str
    ok: bool
    status: str
    error: dict[str, str]


MAX_BATCH_RESULTS = 100


class AgentClient:
    """Acts as an agent: registers it, then heartbeats, claims and reports with its key."""

    def __init__(self, api_url: str, api_key: str, *, session: HttpSession | None = None) -> None:
        """Talk to the API at `api_url` with `api_key`, or through a ready `session`."""
        self.session = session or HttpSession(api_url, api_key)
        self.agent_id: str | None = None

    def register(
        self,
        display_name: str,
        public_key: str,
        capabilities: Sequence[dict[str, Any] | str] | None = None,
        max_concurrent_tasks: int = 1,
    ) -> dict[str, Any]:
        """Register an agent and switch this client to the agent's own key.

        Capabilities may be given as dicts or as bare names (`"report-v1"`). Returns
        `{"agent_id", "api_key", "agent"}`; the key is shown only this once.
        """
        body = {
            "display_name": display_name,
            "public_key": public_key,
            "capabilities": [{"name": c} if isinstance(c, str) else c for c in capabilities or []],
            "max_concurrent_tasks": max_concurrent_tasks,
        }
        # Repeating it after a lost answer at worst leaves an unused agent record behind.
        registered = self.session.post("/ains/agents", body, idempotent=True)
        self.agent_id = registered["agent_id"]
        self.session.api_key = registered["api_key"]
        return registered

    def add_capability(self, agent_id: str, name: str, **fields: Any) -> dict[str, Any]:
        """Add a capability (or replace the one with the same name) on an agent."""
        return self.session.post(
            f"/ains/agents/{agent_id}/capabilities", {"name": name, **fields}, idempotent=True
        )

    def get_agent(self, agent_id: str) -> dict[str, Any]:
        """Fetch one agent with its capabilities, status and counters."""
        return self.session.get(f"/ains/agents/{agent_id}")

    def heartbeat(
        self,
        agent_id: str,
        status: str = "ACTIVE",
        uptime_ms: int = 0,
        metrics: dict[str, Any] | None = None,
        running_task_ids: Sequence[str] | None = None,
    ) -> HeartbeatResult:
        """Report liveness (ACTIVE, DEGRADED or OFFLINE); this renews the agent's leases.

        `running_task_ids` (at most 100): the tasks the agent is working on. Only their
        leases are renewed, so a task whose claim answer never arrived is taken back and
        retried once its lease runs out. Left out, every task the agent holds is renewed.
        The answer names the tasks to stop: see `HeartbeatResult`.
        """
        body: dict[str, Any] = {
            "timestamp": int(time.time()),
            "status": status,
            "uptime_ms": max(0, int(uptime_ms)),
            "metrics": metrics or {},
        }
        if running_task_ids is not None:
            body["running_task_ids"] = list(running_task_ids)
        answer = self.session.post(f"/ains/agents/{agent_id}/heartbeat", body, idempotent=True)
        return with_stop_notices(answer)

    def claim_with_cancellations(
        self, agent_id: str, max_tasks: int = 1, wait_seconds: int = 0
    ) -> ClaimResult:
        """Claim up to `max_tasks`, long-polling up to `wait_seconds` (0..30).

        Every returned task is now ACTIVE for this agent; the answer also names the tasks to
        stop (see `ClaimResult`). A claim is not repeated once it may have reached the server:
        its tasks would be lost with the answer. After an `ApiError` with status 0, look for
        them with `active_tasks`.
        """
        answer = self.session.post(
            f"/ains/agents/{agent_id}/tasks/claim",
            {"max_tasks": max_tasks, "wait_seconds": wait_seconds},
            read_timeout=min(wait_seconds, MAX_WAIT_SECONDS) + LONG_POLL_MARGIN_SECONDS,
            idempotent=False,
        )
        answer.setdefault("tasks", [])
        return with_stop_notices(answer)

    def claim(self, agent_id: str, max_tasks: int = 1, wait_seconds: int = 0) -> list[Task]:
        """Claim up to `max_tasks`, long-polling up to `wait_seconds`; returns the tasks."""
        return self.claim_with_cancellations(agent_id, max_tasks, wait_seconds)["tasks"]

    def active_tasks(self, agent_id: str) -> list[Task]:
        """The tasks the server counts as running on this agent (ACTIVE, assigned to it)."""
        params: dict[str, Any] = {"agent_id": agent_id, "status": "ACTIVE", "limit": 100}
        found: list[Task] = []
        while True:
            page = self.session.get("/ains/tasks", params=params)
            found.extend(page.get("tasks") or [])
            if not page.get("next_cursor"):
                return found
            params["cursor"] = page["next_cursor"]

    def progress(
        self,
        task_id: str,
        progress: int,
        message: str | None = None,
        *,
        attempt: int | None = None,
    ) -> Task:
        """Report progress (0..100) on a task this agent holds; this renews its lease.

        Pass the claimed task's `attempt` so that a report from an attempt the server has
        taken back is refused (`StaleAttemptError`). Raises `CancelRequestedError` when a
        client cancelled the task: stop, then confirm with `fail`.
        """
        body: dict[str, Any] = {"progress": progress}
        if message is not None:
            body["message"] = message
        if attempt is not None:
            body["attempt"] = attempt
        return self.session.post(f"/ains/tasks/{task_id}/progress", body, idempotent=True)

    def complete(
        self, task_id: str, result_data: dict[str, Any], *, attempt: int | None = None
    ) -> Task:
        """Report a task done with its result.

        Raises `CancelRequestedError` when a client cancelled the task meanwhile (the task
        has then ended CANCELLED and the result is dropped), `StaleAttemptError` when the
        attempt was taken back, `ConflictError` when the task had finished already.
        """
        body: dict[str, Any] = {"result_data": result_data}
        if attempt is not None:
            body["attempt"] = attempt
        # Reports are fenced by the attempt: a repeat of one already applied gets a 409.
        return self.session.post(f"/ains/tasks/{task_id}/complete", body, idempotent=True)

    def complete_many(
        self, agent_id: str, results: Sequence[CompletionItem]
    ) -> list[CompletionOutcome]:
        """Report up to 100 finished tasks of one agent in one request.

        Each item is `{"task_id", "result", "attempt"}` (pass the claimed task's attempt).
        Every item is applied or refused on its own, as `complete` would be, and the
        outcomes come back in the same order: check `ok` rather than catching errors. A
        repeat after a lost answer is harmless (its items are then refused as finished).
        """
        if not 1 <= len(results) <= MAX_BATCH_RESULTS:
            raise ValueError(
                f"complete_many takes 1 to {MAX_BATCH_RESULTS} results, got {len(results)}"
            )
        body = {"results": [dict(item) for item in results]}
        answer = self.session.post(f"/ains/agents/{agent_id}/tasks/complete", body, idempotent=True)
        return answer["results"]

    def fail(
        self,
        task_id: str,
        error_message: str,
        retryable: bool = True,
        *,
        retry_after_seconds: float | None = None,
        attempt: int | None = None,
    ) -> Task:
        """Report a task failed; the server retries it if `retryable` and retries remain.

        `retry_after_seconds` (0..86400) replaces the retry policy's delay. On a task a
        client cancelled, this is the agent's confirmation that it stopped: the task ends
        CANCELLED.
        """
        body: dict[str, Any] = {"error_message": error_message, "retryable": retryable}
        if retry_after_seconds is not None:
            body["retry_after_seconds"] = retry_after_seconds
        if attempt is not None:
            body["attempt"] = attempt
        return self.session.post(f"/ains/tasks/{task_id}/fail", body, idempotent=True)


def with_stop_notices(answer: dict[str, Any]) -> Any:
    """Fill in the stop lists an older server leaves out (stop includes every cancel)."""
    cancelled = answer.setdefault("cancelled_task_ids", [])
    answer.setdefault("stop_task_ids", list(cancelled))
    return answer
