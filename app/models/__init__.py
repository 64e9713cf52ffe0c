"""The aggregates; importing this package registers every table."""

from app.models.agent import HEALTH_TO_STATUS, Agent, AgentStatus, Capability
from app.models.auth import ApiKey, Role, User
from app.models.ops import ProcessBeat
from app.models.schedule import (
    ExecutionStatus,
    ExecutionTrigger,
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
    ScheduleExecution,
    ScheduleStatus,
)
from app.models.task import (
    RETRY_POLICIES,
    AttemptOutcome,
    Task,
    TaskAttempt,
    TaskEvent,
    TaskStatus,
)

__all__ = [
    "HEALTH_TO_STATUS",
    "RETRY_POLICIES",
    "Agent",
    "AgentStatus",
    "ApiKey",
    "AttemptOutcome",
    "Capability",
    "ExecutionStatus",
    "ExecutionTrigger",
    "MisfirePolicy",
    "OverlapPolicy",
    "ProcessBeat",
    "Role",
    "Schedule",
    "ScheduleExecution",
    "ScheduleStatus",
    "Task",
    "TaskAttempt",
    "TaskEvent",
    "TaskStatus",
    "User",
]
