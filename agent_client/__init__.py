"""AINS SDK: clients for agents and task submitters, and a sample agent CLI."""

from agent_client.agents import (
    AgentClient,
    ClaimResult,
    CompletionItem,
    CompletionOutcome,
    HeartbeatResult,
)
from agent_client.http import (
    ApiError,
    CancelRequestedError,
    ConflictError,
    HttpSession,
    StaleAttemptError,
)
from agent_client.tasks import Task, TaskAttempt, TaskEvent, TasksClient
from agent_client.webhooks import InvalidSignature, verify_event, verify_signature

__version__ = "0.1.0"

__all__ = [
    "AgentClient",
    "ApiError",
    "CancelRequestedError",
    "ClaimResult",
    "CompletionItem",
    "CompletionOutcome",
    "ConflictError",
    "HeartbeatResult",
    "HttpSession",
    "InvalidSignature",
    "StaleAttemptError",
    "Task",
    "TaskAttempt",
    "TaskEvent",
    "TasksClient",
    "__version__",
    "verify_event",
    "verify_signature",
]
