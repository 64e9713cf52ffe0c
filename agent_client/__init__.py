"""AINS SDK: clients for agents and task submitters, and a sample agent CLI."""

from agent_client.agents import AgentClient
from agent_client.http import ApiError, HttpSession
from agent_client.tasks import Task, TaskEvent, TasksClient

__version__ = "0.1.0"

__all__ = [
    "AgentClient",
    "ApiError",
    "HttpSession",
    "Task",
    "TaskEvent",
    "TasksClient",
    "__version__",
]
