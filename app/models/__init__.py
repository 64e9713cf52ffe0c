"""The aggregates; importing this package registers every table."""

from app.models.agent import HEALTH_TO_STATUS, Agent, AgentStatus, Capability
from app.models.audit import AuditEvent, AuditOutcome
from app.models.auth import ApiKey, OperatorRole, Role, User
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
    FINISHED_TASKS,
    RETRY_POLICIES,
    ROUTABLE_TASKS,
    TASK_EVENTS,
    AttemptOutcome,
    EventRow,
    Task,
    TaskAttempt,
    TaskDependency,
    TaskEvent,
    TaskStatus,
)
from app.models.trust import CapabilityRouting, TrustEvent, TrustRecord
from app.models.webhook import (
    DeliveryStatus,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookEvents,
)
from app.models.workflow import ChainStatus, TaskChain, TaskTemplate

__all__ = [
    "FINISHED_TASKS",
    "HEALTH_TO_STATUS",
    "RETRY_POLICIES",
    "ROUTABLE_TASKS",
    "TASK_EVENTS",
    "Agent",
    "AgentStatus",
    "ApiKey",
    "AttemptOutcome",
    "AuditEvent",
    "AuditOutcome",
    "Capability",
    "CapabilityRouting",
    "ChainStatus",
    "DeliveryStatus",
    "EventRow",
    "ExecutionStatus",
    "ExecutionTrigger",
    "MisfirePolicy",
    "OperatorRole",
    "OverlapPolicy",
    "ProcessBeat",
    "Role",
    "Schedule",
    "ScheduleExecution",
    "ScheduleStatus",
    "Task",
    "TaskAttempt",
    "TaskChain",
    "TaskDependency",
    "TaskEvent",
    "TaskStatus",
    "TaskTemplate",
    "TrustEvent",
    "TrustRecord",
    "User",
    "Webhook",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEvent",
    "WebhookEvents",
]
