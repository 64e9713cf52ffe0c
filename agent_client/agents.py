"""Agent-side API: register, heartbeat, claim tasks and report on them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from agent_client.http import HttpSession
from agent_client.tasks import Task

MAX_WAIT_SECONDS = 30
LONG_POLL_MARGIN_SECONDS = 10


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
        registered = self.session.post("/ains/agents", body)
        self.agent_id = registered["agent_id"]
        self.session.api_key = registered["api_key"]
        return registered

    def add_capability(self, agent_id: str, name: str, **fields: Any) -> dict[str, Any]:
        """Add a capability (or replace the one with the same name) on an agent."""
        return self.session.post(f"/ains/agents/{agent_id}/capabilities", {"name": name, **fields})

    def get_agent(self, agent_id: str) -> dict[str, Any]:
        """Fetch one agent with its capabilities, status and counters."""
        return self.session.get(f"/ains/agents/{agent_id}")

    def heartbeat(
        self,
        agent_id: str,
        status: str = "ACTIVE",
        uptime_ms: int = 0,
        metrics: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Report liveness (ACTIVE, DEGRADED or OFFLINE).

        Returns `{"acknowledged", "next_heartbeat_in", "agent_health_status", "agent_status",
        "last_heartbeat", "cancelled_task_ids"}`.
        """
        body = {
            "timestamp": int(time.time()),
            "status": status,
            "uptime_ms": max(0, int(uptime_ms)),
            "metrics": metrics or {},
        }
        return self.session.post(f"/ains/agents/{agent_id}/heartbeat", body)

    def claim_with_cancellations(
        self, agent_id: str, max_tasks: int = 1, wait_seconds: int = 0
    ) -> dict[str, Any]:
        """Claim up to `max_tasks`, long-polling up to `wait_seconds` (0..30).

        Returns `{"tasks": [...], "cancelled_task_ids": [...]}`; every returned task is now
        ACTIVE for this agent.
        """
        return self.session.post(
            f"/ains/agents/{agent_id}/tasks/claim",
            {"max_tasks": max_tasks, "wait_seconds": wait_seconds},
            read_timeout=min(wait_seconds, MAX_WAIT_SECONDS) + LONG_POLL_MARGIN_SECONDS,
        )

    def claim(self, agent_id: str, max_tasks: int = 1, wait_seconds: int = 0) -> list[Task]:
        """Claim up to `max_tasks`, long-polling up to `wait_seconds`; returns the tasks."""
        return self.claim_with_cancellations(agent_id, max_tasks, wait_seconds).get("tasks", [])

    def progress(self, task_id: str, progress: int, message: str | None = None) -> Task:
        """Report progress (0..100) on a task this agent holds."""
        body: dict[str, Any] = {"progress": progress}
        if message is not None:
            body["message"] = message
        return self.session.post(f"/ains/tasks/{task_id}/progress", body)

    def complete(self, task_id: str, result_data: dict[str, Any]) -> Task:
        """Report a task done with its result."""
        return self.session.post(f"/ains/tasks/{task_id}/complete", {"result_data": result_data})

    def fail(self, task_id: str, error_message: str, retryable: bool = True) -> Task:
        """Report a task failed; the server retries it if `retryable` and retries remain."""
        body = {"error_message": error_message, "retryable": retryable}
        return self.session.post(f"/ains/tasks/{task_id}/fail", body)
