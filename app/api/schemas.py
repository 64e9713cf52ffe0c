"""Request and response models: they validate requests and generate /openapi.json."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    field_validator,
)

Name = Annotated[str, Field(min_length=1, max_length=200)]
CapabilityName = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
]
TaskStatusName = Literal[
    "PENDING", "ASSIGNED", "ACTIVE", "COMPLETED", "FAILED", "CANCELLED", "BLOCKED", "EXPIRED"
]
RoutingStrategy = Literal["round_robin", "least_loaded", "trust_weighted", "fastest_response"]
DependencyName = Annotated[str, Field(min_length=1, max_length=40)]


def in_utc_range(value: datetime) -> datetime:
    """Refuse times that do not exist in UTC (9999-12-31T23:59-14:00): a 422, not a 500."""
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is out of range once converted to UTC (years 1 to 9999)") from None
    return value


# Times a client sends must say their offset: a naive one would be read in some zone.
OffsetDatetime = Annotated[AwareDatetime, Strict(False), AfterValidator(in_utc_range)]
# Filter bounds: naive ones are read as UTC.
BoundDatetime = Annotated[datetime, Strict(False), AfterValidator(in_utc_range)]


class Body(BaseModel):
    """Request bodies: strict types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Query strings: values arrive as text, so numbers are coerced."""

    model_config = ConfigDict(extra="forbid")


class CapabilityIn(Body):
    name: CapabilityName = Field(description="e.g. report-v1")
    version: str | None = Field(None, max_length=50)
    description: str | None = Field(None, max_length=2000)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    pricing_model: str | None = Field(None, max_length=50)
    price: float | None = Field(None, ge=0)


class AgentRegister(Body):
    display_name: Name
    public_key: str = Field(min_length=1, max_length=10_000)
    capabilities: list[CapabilityIn] = Field(default_factory=list, max_length=100)
    max_concurrent_tasks: int = Field(1, ge=1, le=100)


class Heartbeat(Body):
    timestamp: int | Annotated[datetime, Strict(False)] | None = Field(
        None, description="epoch seconds or ISO 8601"
    )
    status: Literal["ACTIVE", "DEGRADED", "OFFLINE"]
    uptime_ms: int = Field(0, ge=0)
    metrics: dict[str, Any] = Field(default_factory=dict)
    running_task_ids: list[Annotated[str, Field(min_length=1, max_length=40)]] | None = Field(
        None,
        max_length=100,
        description="the tasks the agent is working on: only their leases are renewed, so a "
        "task whose claim response never arrived is taken back when its lease runs out "
        "(omit it to renew every task the agent holds)",
    )


class ClaimRequest(Body):
    max_tasks: int = Field(1, ge=1, le=100)
    wait_seconds: float = Field(
        0, ge=0, le=30, description="long poll: return as soon as a task is claimed"
    )


class TaskSubmit(Body):
    client_id: Name | None = Field(
        None, description="required for admin keys; a client key's own id by default"
    )
    task_type: Name
    capability_required: CapabilityName
    input_data: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(5, ge=1, le=10)
    max_retries: int = Field(3, ge=0, le=20)
    retry_policy: Literal["exponential", "linear", "fixed"] = "exponential"
    timeout_seconds: int = Field(
        300, ge=1, le=3600, description="execution limit from the claim; then the task fails"
    )
    retry_on_timeout: bool = Field(False, description="retry a timed-out task per its policy")
    expires_in_seconds: int | None = Field(
        None, ge=1, le=30 * 86400, description="not claimed by then: the task ends EXPIRED"
    )
    routing_strategy: RoutingStrategy | None = None
    depends_on: list[DependencyName] = Field(
        default_factory=list,
        max_length=100,
        description='task ids (in a batch also "@<index>" of another item) to wait for: '
        "the task is BLOCKED until they all COMPLETE; input_data may then take their "
        'results with {"$from": "<id or @index>", "path": "a.b.0"}',
    )
    on_dependency_failure: Literal["cancel", "run"] = Field(
        "cancel",
        description="a dependency ending FAILED, CANCELLED or EXPIRED cancels this task, or "
        "(run) counts as done, its $from references reading null",
    )


class BatchSubmit(Body):
    tasks: list[Any] = Field(min_length=1, max_length=100, description="each item is a TaskSubmit")
    atomic: bool = Field(False, description="all or nothing")


class ProgressReport(Body):
    progress: int = Field(ge=0, le=100)
    message: str | None = Field(None, max_length=2000)
    attempt: int | None = Field(None, ge=1, description="the claim's attempt; a stale one is a 409")


class CompleteReport(Body):
    result_data: dict[str, Any] = Field(default_factory=dict)
    attempt: int | None = Field(None, ge=1)


class FailReport(Body):
    error_message: str = Field(min_length=1, max_length=10_000)
    retryable: bool = Field(True, description="false: never retried, the task ends FAILED")
    retry_after_seconds: float | None = Field(
        None, ge=0, le=86400, description="wait this long before the retry (replaces the policy)"
    )
    attempt: int | None = Field(None, ge=1)


class CancelRequest(Body):
    reason: str | None = Field(None, max_length=2000)


class PriorityUpdate(Body):
    priority: int = Field(ge=1, le=10)


class TaskListQuery(Query):
    status: TaskStatusName | None = None
    client_id: str | None = Field(None, max_length=200)
    capability: str | None = Field(None, max_length=200)
    agent_id: str | None = Field(None, max_length=40)
    priority: int | None = Field(None, ge=1, le=10)
    created_after: BoundDatetime | None = None
    created_before: BoundDatetime | None = None
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, max_length=500)


class DeadLetterFilter(Body):
    client_id: str | None = Field(None, max_length=200)
    capability: str | None = Field(None, max_length=200)
    agent_id: str | None = Field(None, max_length=40)
    priority: int | None = Field(None, ge=1, le=10)
    created_after: BoundDatetime | None = None
    created_before: BoundDatetime | None = None


class DeadLetterQuery(Query):
    client_id: str | None = Field(None, max_length=200)
    capability: str | None = Field(None, max_length=200)
    agent_id: str | None = Field(None, max_length=40)
    priority: int | None = Field(None, ge=1, le=10)
    created_after: BoundDatetime | None = None
    created_before: BoundDatetime | None = None
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, max_length=500)


class BulkAction(Body):
    task_ids: list[Annotated[str, Field(min_length=1, max_length=40)]] | None = Field(
        None, min_length=1, max_length=500, description="these tasks (or give filter)"
    )
    filter: DeadLetterFilter | None = Field(
        None, description="every FAILED task matching (or give task_ids)"
    )
    limit: int = Field(1000, ge=1, le=1000, description="with filter: at most this many")
    reason: str | None = Field(None, max_length=2000, description="cancel only")


class AgentListQuery(Query):
    status: Literal["AVAILABLE", "BUSY", "INACTIVE"] | None = None


# Responses. tests/api/test_openapi.py checks that to_dict() output validates against them.


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CapabilityOut(Out):
    capability_id: str
    name: str
    version: str | None
    description: str | None
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    pricing_model: str | None
    price: float | None
    created_at: datetime


class AgentOut(Out):
    agent_id: str
    display_name: str
    public_key: str
    status: Literal["AVAILABLE", "BUSY", "INACTIVE"]
    health_status: str | None
    last_heartbeat: datetime | None
    uptime_ms: int | None
    max_concurrent_tasks: int
    active_tasks: int
    trust_score: float
    total_tasks_completed: int
    total_tasks_failed: int
    avg_completion_time_seconds: float | None
    last_task_completed_at: datetime | None
    capabilities: list[CapabilityOut]
    created_at: datetime
    updated_at: datetime


class AgentRegistered(Out):
    agent_id: str
    api_key: str = Field(description="bound to this agent; shown once")
    agent: AgentOut


class AgentList(Out):
    agents: list[AgentOut]
    total: int


class HeartbeatAck(Out):
    acknowledged: bool
    next_heartbeat_in: int
    agent_health_status: str
    agent_status: str
    last_heartbeat: datetime
    cancelled_task_ids: list[str] = Field(description="running tasks a client cancelled")
    stop_task_ids: list[str] = Field(
        description="tasks to stop now: cancelled, timed out, or taken back from this agent"
    )


class TaskEventOut(Out):
    event_id: int
    at: datetime
    from_status: str | None
    to_status: str
    actor: str
    reason: str | None
    data: dict[str, Any] | None


class TaskOut(Out):
    task_id: str
    client_id: str
    task_type: str
    capability_required: str
    input_data: dict[str, Any]
    priority: int
    status: TaskStatusName
    assigned_agent_id: str | None
    assigned_at: datetime | None = Field(description="when routing assigned it (ASSIGNED)")
    poison: bool = Field(
        description="failed on POISON_AGENT_COUNT different agents: ended FAILED, their trust "
        "refunded"
    )
    attempt: int
    lease_expires_at: datetime | None
    progress: int | None
    progress_message: str | None
    result_data: dict[str, Any] | None
    error_message: str | None
    last_error: str | None
    max_retries: int
    retry_count: int
    retry_policy: str
    next_retry_at: datetime | None
    timeout_seconds: int
    retry_on_timeout: bool
    timeout_at: datetime | None
    expires_at: datetime | None
    routing_strategy: str | None
    created_at: datetime
    updated_at: datetime
    claimed_at: datetime | None
    completed_at: datetime | None
    cancel_requested_at: datetime | None
    cancelled_at: datetime | None
    cancelled_by: str | None
    cancellation_reason: str | None
    pending_dependencies: int = Field(description="dependencies not yet COMPLETED (BLOCKED)")
    on_dependency_failure: Literal["cancel", "run"]
    template_id: str | None
    template_version: int | None
    chain_id: str | None
    chain_step: int | None


class TaskAttemptOut(Out):
    attempt: int
    agent_id: str
    started_at: datetime
    ended_at: datetime | None
    outcome: Literal["running", "completed", "failed", "timed_out", "agent_lost", "cancelled"]
    error: str | None
    ended_by: str | None


class TaskDetail(TaskOut):
    events: list[TaskEventOut]
    attempts: list[TaskAttemptOut]
    depends_on: list[str] = Field(
        default_factory=list, description="the tasks this one depends on, oldest first"
    )


class BulkOut(Out):
    action: Literal["requeue", "cancel"]
    count: int
    task_ids: list[str]
    skipped: list[dict[str, str]]
    remaining: int = Field(description="with filter: matching tasks still left")


class TaskPageOut(Out):
    tasks: list[TaskOut]
    next_cursor: str | None
    limit: int


class ClaimOut(Out):
    tasks: list[TaskOut]
    cancelled_task_ids: list[str]
    stop_task_ids: list[str]


class BatchItemOut(Out):
    index: int
    task_id: str
    status: str
    client_id: str
    created_at: datetime


class BatchFailureOut(Out):
    index: int
    error: str
    details: list[dict[str, Any]]


class BatchOut(Out):
    submitted: list[BatchItemOut]
    failed: list[BatchFailureOut]


class QueueMetricsOut(Out):
    tasks_by_priority: dict[str, int]
    queue_depth_by_priority: dict[str, int]
    avg_wait_time_by_priority: dict[str, float]
    tasks_by_status: dict[str, int]
    generated_at: datetime


class ErrorDetail(Out):
    field: str | None = None
    message: str


class ErrorBody(Out):
    code: str
    message: str
    details: list[dict[str, Any]]


class ErrorOut(Out):
    error: ErrorBody


class HealthOut(Out):
    status: Literal["ok", "degraded"]
    checks: dict[str, str]


# ---------------------------------------------------------------------------------------
# Dependencies
# ---------------------------------------------------------------------------------------


class DependentsQuery(Query):
    limit: int = Field(1000, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=1_000_000)


class DependencyOut(Out):
    task_id: str
    status: TaskStatusName
    blocking: bool = Field(
        description="true while this edge keeps the dependent BLOCKED: the dependency has "
        "not COMPLETED (nor, with on_dependency_failure run, ended otherwise)"
    )


class DependenciesOut(Out):
    task_id: str
    pending_dependencies: int
    dependencies: list[DependencyOut] = Field(description="oldest first (at most 100)")


class DependentsOut(Out):
    task_id: str
    dependents: list[DependencyOut] = Field(description="oldest first, a page at a time")
    total: int
    limit: int
    offset: int


# ---------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------

ScheduleStatusName = Literal["ACTIVE", "PAUSED", "COMPLETED", "FAILED"]
MisfirePolicyName = Literal["fire_once", "skip", "fire_all"]
OverlapPolicyName = Literal["allow", "skip"]
CronText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        description="5 fields (minute hour day month weekday) or 6 with seconds first",
    ),
]
ZoneName = Annotated[
    str, Field(min_length=1, max_length=64, description="IANA, e.g. Europe/London")
]


class ScheduleTiming(Body):
    """When a schedule runs: exactly one of cron_expression, interval_seconds, run_at."""

    cron_expression: CronText | None = None
    interval_seconds: int | None = Field(None, ge=1, le=366 * 86400)
    run_at: OffsetDatetime | None = Field(None, description="one-time; ISO 8601 with an offset")
    timezone: ZoneName | None = Field(None, description="the zone cron fields are read in (UTC)")


class ScheduleCreate(ScheduleTiming):
    client_id: Name | None = Field(
        None, description="required for admin keys; a client key's own id by default"
    )
    description: str | None = Field(None, max_length=2000)
    template_id: str | None = Field(
        None,
        min_length=1,
        max_length=40,
        description="runs are made from this template: task_type and capability_required "
        "come from it, the fields not given from its defaults, and input_data is merged onto "
        "its default_input_data at each run",
    )
    task_type: Name | None = Field(None, description="required without template_id")
    capability_required: CapabilityName | None = Field(
        None, description="required without template_id"
    )
    input_data: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(5, ge=1, le=10)
    max_retries: int = Field(3, ge=0, le=20)
    retry_policy: Literal["exponential", "linear", "fixed"] = "exponential"
    timeout_seconds: int = Field(300, ge=1, le=3600)
    retry_on_timeout: bool = False
    expires_in_seconds: int | None = Field(None, ge=1, le=30 * 86400)
    misfire_policy: MisfirePolicyName = Field(
        "fire_once",
        description="after downtime: fire_once (one catch-up run), skip, or fire_all (<= 100)",
    )
    overlap_policy: OverlapPolicyName = Field(
        "allow", description="skip: no new run while the previous run's task is unfinished"
    )


class ScheduleUpdate(ScheduleTiming):
    """PUT: the fields given replace the schedule's; a new timing counts from now."""

    description: str | None = Field(None, max_length=2000)
    template_id: str | None = Field(
        None, min_length=1, max_length=40, description="null: runs no longer use a template"
    )
    task_type: Name | None = None
    capability_required: CapabilityName | None = None
    input_data: dict[str, Any] | None = None
    priority: int | None = Field(None, ge=1, le=10)
    max_retries: int | None = Field(None, ge=0, le=20)
    retry_policy: Literal["exponential", "linear", "fixed"] | None = None
    timeout_seconds: int | None = Field(None, ge=1, le=3600)
    retry_on_timeout: bool | None = None
    expires_in_seconds: int | None = Field(None, ge=1, le=30 * 86400)
    misfire_policy: MisfirePolicyName | None = None
    overlap_policy: OverlapPolicyName | None = None
    status: Literal["ACTIVE", "PAUSED"] | None = Field(None, description="pause or resume")


class ScheduleListQuery(Query):
    client_id: str | None = Field(None, max_length=200)
    status: ScheduleStatusName | None = None
    limit: int = Field(20, ge=1, le=200)
    offset: int = Field(0, ge=0, le=1_000_000)


class ExecutionListQuery(Query):
    limit: int = Field(20, ge=1, le=200)
    offset: int = Field(0, ge=0, le=1_000_000)


class ScheduleValidate(Body):
    cron_expression: CronText | None = None
    interval_seconds: int | None = Field(None, ge=1, le=366 * 86400)
    timezone: ZoneName = "UTC"
    count: int = Field(10, ge=1, le=50)
    start_at: OffsetDatetime | None = Field(None, description="list runs after this (now)")


class ScheduleOut(Out):
    schedule_id: str
    client_id: str
    description: str | None
    kind: Literal["cron", "interval", "once"]
    cron_expression: str | None
    interval_seconds: int | None
    run_at: datetime | None
    timezone: str
    schedule_description: str
    template_id: str | None = Field(description="with a template, input_data holds overrides")
    task_type: str
    capability_required: str
    input_data: dict[str, Any]
    priority: int
    max_retries: int
    retry_policy: str
    timeout_seconds: int
    retry_on_timeout: bool
    expires_in_seconds: int | None
    misfire_policy: MisfirePolicyName
    overlap_policy: OverlapPolicyName
    status: Literal["ACTIVE", "PAUSED", "COMPLETED", "FAILED", "DELETED"]
    next_run_at: datetime | None
    next_run_local: str | None = Field(description="next_run_at in the schedule's zone")
    last_run_at: datetime | None
    last_error: str | None
    total_runs: int
    failed_runs: int
    created_by: str
    created_at: datetime
    updated_at: datetime


class SchedulePageOut(Out):
    schedules: list[ScheduleOut]
    total: int
    limit: int
    offset: int


class ScheduleDeletedOut(Out):
    schedule_id: str
    status: Literal["DELETED"]
    message: str


class ExecutionOut(Out):
    execution_id: str
    schedule_id: str
    task_id: str | None
    scheduled_for: datetime
    executed_at: datetime
    lateness_ms: int
    trigger: Literal["schedule", "catch_up", "run_now"]
    status: Literal["PENDING", "COMPLETED", "FAILED", "SKIPPED"]
    task_status: TaskStatusName | None
    result_data: dict[str, Any] | None
    error_message: str | None
    note: str | None


class ExecutionPageOut(Out):
    executions: list[ExecutionOut]
    total: int
    limit: int
    offset: int


class RunNowOut(Out):
    execution: ExecutionOut
    task: TaskOut


class ScheduleValidateOut(Out):
    valid: bool
    error: str | None
    description: str
    timezone: str
    next_runs: list[str] = Field(description="ISO 8601 in the zone, with its offset")
    next_runs_utc: list[str]


# ---------------------------------------------------------------------------------------
# Chains
# ---------------------------------------------------------------------------------------

ChainStatusName = Literal["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"]


class ChainStep(Body):
    """One step: a task's fields, or a template's with the fields given on top.

    With template_id, a field left out takes the template's default (not the one shown
    here), input_data is deep-merged onto the template's, and task_type and
    capability_required come from the template. Templates are read when the chain is
    created: later edits do not change it.
    """

    template_id: str | None = Field(
        None, min_length=1, max_length=40, description="take the defaults from this template"
    )
    task_type: Name | None = Field(None, description="required without template_id")
    capability_required: CapabilityName | None = Field(
        None, description="required without template_id"
    )
    input_data: dict[str, Any] = Field(
        default_factory=dict,
        description="steps after the first also get input_data.previous_output: the "
        "previous step's result_data",
    )
    priority: int = Field(5, ge=1, le=10)
    max_retries: int = Field(3, ge=0, le=20, description="a step fails the chain after these")
    retry_policy: Literal["exponential", "linear", "fixed"] = "exponential"
    timeout_seconds: int = Field(300, ge=1, le=3600)
    retry_on_timeout: bool = False
    expires_in_seconds: int | None = Field(None, ge=1, le=30 * 86400)
    routing_strategy: RoutingStrategy | None = None


class ChainCreate(Body):
    name: Name
    client_id: Name | None = Field(
        None, description="required for admin keys; a client key's own id by default"
    )
    steps: list[ChainStep] = Field(
        min_length=1, max_length=50, description="run one after another, in this order"
    )


class ChainListQuery(Query):
    client_id: str | None = Field(None, max_length=200)
    status: ChainStatusName | None = None
    limit: int = Field(20, ge=1, le=200)
    offset: int = Field(0, ge=0, le=1_000_000)


class ChainStepOut(Out):
    task_type: str
    capability_required: str
    input_data: dict[str, Any]
    priority: int
    max_retries: int
    retry_policy: str
    timeout_seconds: int
    retry_on_timeout: bool
    expires_in_seconds: int | None
    routing_strategy: str | None
    template_id: str | None
    template_version: int | None


class ChainStepResultOut(Out):
    step: int = Field(description="0-based, as current_step")
    task_id: str
    status: TaskStatusName
    result_data: dict[str, Any] | None
    error_message: str | None


class ChainOut(Out):
    chain_id: str
    name: str
    client_id: str
    status: ChainStatusName
    current_step: int = Field(description="0-based; total_steps once COMPLETED")
    total_steps: int
    steps: list[ChainStepOut] = Field(
        description="each step as it runs: the fields given, defaults and template filled in"
    )
    step_results: list[ChainStepResultOut] = Field(description="one per finished step")
    current_task_id: str | None = Field(description="the current step's task")
    error_message: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None = Field(description="when it COMPLETED, FAILED or was CANCELLED")
    cancelled_at: datetime | None
    cancellation_reason: str | None


class ChainPageOut(Out):
    chains: list[ChainOut]
    total: int
    limit: int
    offset: int


# ---------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------

RetryPolicyName = Literal["exponential", "linear", "fixed"]
TemplateId = Annotated[str, Field(min_length=1, max_length=40)]
JsonSchema = Annotated[
    dict[str, Any],
    Field(
        description="Draft 2020-12 JSON Schema the task input must match; $refs must resolve "
        "within it (nothing is fetched)"
    ),
]


class TemplateCreate(Body):
    client_id: Name | None = Field(
        None, description="required for admin keys; a client key's own id by default"
    )
    name: Name = Field(description="unique among the client's templates")
    description: str | None = Field(None, max_length=2000)
    task_type: Name
    capability_required: CapabilityName
    default_input_data: dict[str, Any] = Field(
        default_factory=dict,
        description="must fit input_schema, except that required properties may be missing",
    )
    default_priority: int = Field(5, ge=1, le=10)
    default_max_retries: int = Field(3, ge=0, le=20)
    default_retry_policy: RetryPolicyName = "exponential"
    default_timeout_seconds: int = Field(300, ge=1, le=3600)
    input_schema: JsonSchema | None = None


class TemplateUpdate(Body):
    """PATCH: the fields given replace the template's; any change bumps its version."""

    name: Name | None = None
    description: str | None = Field(None, max_length=2000)
    task_type: Name | None = None
    capability_required: CapabilityName | None = None
    default_input_data: dict[str, Any] | None = None
    default_priority: int | None = Field(None, ge=1, le=10)
    default_max_retries: int | None = Field(None, ge=0, le=20)
    default_retry_policy: RetryPolicyName | None = None
    default_timeout_seconds: int | None = Field(None, ge=1, le=3600)
    input_schema: JsonSchema | None = Field(None, description="null removes the schema")


class TemplateListQuery(Query):
    client_id: str | None = Field(None, max_length=200)
    name: str | None = Field(None, max_length=200, description="part of the name, any case")
    limit: int = Field(20, ge=1, le=200)
    offset: int = Field(0, ge=0, le=1_000_000)


class FromTemplate(Body):
    """A task from a template: the fields given override its defaults."""

    template_id: TemplateId
    client_id: Name | None = Field(
        None, description="the template's client (the default); admin keys may leave it out"
    )
    input_data: dict[str, Any] | None = Field(
        None,
        description="deep-merged onto default_input_data (objects merge, lists and other "
        "values replace), then checked against input_schema: 422 with one detail per "
        "violation, field input_data/<JSON pointer>",
    )
    priority: int | None = Field(None, ge=1, le=10)
    max_retries: int | None = Field(None, ge=0, le=20)
    retry_policy: RetryPolicyName | None = None
    timeout_seconds: int | None = Field(None, ge=1, le=3600)
    retry_on_timeout: bool | None = None
    expires_in_seconds: int | None = Field(
        None, ge=1, le=30 * 86400, description="not claimed by then: the task ends EXPIRED"
    )
    routing_strategy: RoutingStrategy | None = None


class TemplateOut(Out):
    template_id: str
    client_id: str
    name: str
    description: str | None
    task_type: str
    capability_required: str
    default_input_data: dict[str, Any]
    default_priority: int
    default_max_retries: int
    default_retry_policy: str
    default_timeout_seconds: int
    input_schema: dict[str, Any] | None
    version: int = Field(description="1 at creation, +1 per change; tasks record theirs")
    times_used: int = Field(description="tasks made from it")
    created_by: str
    created_at: datetime
    updated_at: datetime


class TemplatePageOut(Out):
    templates: list[TemplateOut]
    total: int
    limit: int
    offset: int


class TemplateDeletedOut(Out):
    template_id: str
    deleted: Literal[True]
    message: str


# Trust (seed 004, sprint 5).

TrustLevel = Literal["excellent", "high", "medium", "low", "very_low"]
TrustEventName = Literal[
    "task_completed",
    "task_failed",
    "task_timed_out",
    "agent_lost",
    "poison_refund",
    "manual_adjustment",
]


class TrustQuery(Query):
    limit: int = Field(50, ge=1, le=500, description="trust records to return, newest first")


class LeaderboardQuery(Query):
    limit: int = Field(50, ge=1, le=500)


class TrustAdjust(Body):
    delta: float = Field(ge=-1, le=1, description="added to the score (clamped to 0..1); not 0")
    reason: str = Field(min_length=1, max_length=500, description="why; kept in the audit trail")


class TrustMetricsOut(Out):
    total_tasks_completed: int
    total_tasks_failed: int
    success_rate: float | None = Field(description="completed / (completed + failed)")
    avg_completion_time_seconds: float | None
    last_task_completed_at: datetime | None


class TrustSummaryOut(Out):
    agent_id: str
    display_name: str
    trust_score: float
    trust_level: TrustLevel
    metrics: TrustMetricsOut


class TrustRecordOut(Out):
    record_id: int
    agent_id: str
    event_type: TrustEventName
    task_id: str | None
    trust_delta: float = Field(description="the change applied (after clamping)")
    trust_score_before: float
    trust_score_after: float
    reason: str | None
    actor: str
    created_at: datetime


class AgentTrustOut(TrustSummaryOut):
    records: list[TrustRecordOut] = Field(description="newest first")


class LeaderboardEntryOut(Out):
    rank: int
    agent_id: str
    display_name: str
    trust_score: float
    trust_level: TrustLevel
    total_tasks_completed: int
    total_tasks_failed: int
    success_rate: float | None
    avg_completion_time_seconds: float | None
    status: Literal["AVAILABLE", "BUSY", "INACTIVE"]


class LeaderboardOut(Out):
    leaderboard: list[LeaderboardEntryOut]


class TrustAdjustedOut(Out):
    record: TrustRecordOut
    trust: TrustSummaryOut


# --- Routing -------------------------------------------------------------------------


class StrategyOut(Out):
    name: RoutingStrategy
    description: str
    default: bool = Field(description="the server-wide default (ROUTING_DEFAULT_STRATEGY)")


class StrategiesOut(Out):
    strategies: list[StrategyOut]
    default_strategy: RoutingStrategy


class RoutingTest(Body):
    capability_required: str = Field(min_length=1, max_length=200)
    strategy: RoutingStrategy | None = Field(
        default=None, description="default: the capability's default strategy"
    )


class ScoredCandidateOut(Out):
    agent_id: str
    display_name: str
    score: float = Field(description="higher is better; its meaning depends on the strategy")
    detail: str
    trust_score: float
    trust_level: str
    load: int = Field(description="tasks held: assigned and running")
    max_concurrent_tasks: int
    avg_completion_time_seconds: float | None


class ExcludedAgentOut(Out):
    agent_id: str
    display_name: str
    reason: str


class RoutingTestOut(Out):
    capability: str
    strategy: RoutingStrategy
    winner: ScoredCandidateOut | None = Field(description="None: no agent can take it now")
    candidates: list[ScoredCandidateOut] = Field(description="best first")
    excluded: list[ExcludedAgentOut]
    probe: bool = Field(default=False, description="fastest_response tried an unmeasured agent")


class CapabilityRoutingOut(Out):
    capability: str
    default_strategy: RoutingStrategy
    configured: bool = Field(description="False: the server-wide default applies")
    agents: int


class CapabilityRoutingList(Out):
    capabilities: list[CapabilityRoutingOut]


class CapabilityRoutingUpdate(Body):
    default_strategy: RoutingStrategy | None = Field(
        description="null: fall back to the server-wide default"
    )


# ---------------------------------------------------------------------------------------
# Webhooks
# ---------------------------------------------------------------------------------------

# The events a webhook subscribes to (WebhookEvents.ALL; tests check the two agree).
WebhookEventName = Literal[
    "task.created",
    "task.assigned",
    "task.completed",
    "task.failed",
    "task.cancelled",
    "task.timed_out",
    "task.expired",
    "schedule.fired",
    "agent.offline",
]
# What a delivery may carry: a subscribed event, or the test ping.
DeliveryEventName = WebhookEventName | Literal["webhook.ping"]
DeliveryStatusName = Literal["pending", "delivered", "failed"]
WebhookUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2000,
        description="http:// or https://, no credentials; private, loopback and link-local "
        "addresses are refused unless WEBHOOK_ALLOW_PRIVATE",
    ),
]
WebhookSecret = Annotated[
    str,
    Field(
        min_length=16,
        max_length=200,
        description="signs each body (HMAC-SHA256); generated when left out",
    ),
]
WebhookEventList = Annotated[
    list[WebhookEventName],
    Field(min_length=1, max_length=50, description="default: every event"),
]


class AgentWebhookCreate(Body):
    url: WebhookUrl
    events: WebhookEventList | None = None
    secret: WebhookSecret | None = None
    description: str | None = Field(None, max_length=200)


class WebhookCreate(AgentWebhookCreate):
    client_id: Name | None = Field(
        None,
        description="admin keys: the client whose events it receives (omitted: a global "
        "webhook, every event); client keys: their own id, or omitted",
    )


class WebhookUpdate(Body):
    """PATCH: the fields given replace the webhook's (url, events and active not with null)."""

    url: WebhookUrl | None = None
    events: WebhookEventList | None = None
    active: bool | None = Field(
        None, description="false pauses deliveries; true resumes them and clears disabled_reason"
    )
    description: str | None = Field(None, max_length=200, description="null clears it")

    @field_validator("url", "events", "active", mode="before")
    @classmethod
    def not_null(cls, value: Any) -> Any:
        # Only fields that were sent get here: a null would otherwise be a silent no-op.
        if value is None:
            raise ValueError("cannot be null (leave the field out to keep it)")
        return value


class SecretRotate(Body):
    secret: WebhookSecret | None = None


class DeliveryListQuery(Query):
    status: DeliveryStatusName | None = None
    event: DeliveryEventName | None = None
    limit: int = Field(50, ge=1, le=100)
    cursor: str | None = Field(None, max_length=500)


class DeliveryCountsOut(Out):
    pending: int
    delivered: int
    failed: int


class WebhookOut(Out):
    webhook_id: str
    agent_id: str | None = Field(description="set for an agent's webhook")
    client_id: str | None = Field(description="set for a client's webhook")
    owner: str = Field(description="agent:<id>, client:<id> or global")
    url: str
    events: list[WebhookEventName]
    description: str | None
    secret_hint: str = Field(description="the secret's last four characters")
    active: bool
    disabled_reason: str | None = Field(description="why it stopped: paused, or failing")
    disabled_at: datetime | None
    consecutive_failures: int
    last_success_at: datetime | None
    last_failure_at: datetime | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    deliveries: DeliveryCountsOut = Field(description="deliveries kept, by status")


class WebhookSecretOut(WebhookOut):
    secret: str = Field(description="the signing secret: shown in this response only")


class WebhookListOut(Out):
    webhooks: list[WebhookOut] = Field(description="newest first")


class WebhookDeletedOut(Out):
    webhook_id: str
    deleted: Literal[True]
    message: str


class WebhookAttemptOut(Out):
    attempt: int
    started_at: datetime
    duration_ms: int
    status_code: int | None = Field(description="None: no HTTP answer")
    outcome: Literal["delivered", "retry", "gave_up", "permanent", "disabled"]
    error: str | None
    request_headers: dict[str, str] | None = Field(description="the signature elided")
    response_headers: dict[str, str] | None
    response_excerpt: str | None


class WebhookDeliveryOut(Out):
    delivery_id: str
    webhook_id: str
    event_id: str = Field(description="sent as X-Webhook-Id: the same on retries and redeliveries")
    event: DeliveryEventName
    status: DeliveryStatusName
    attempt: int = Field(description="attempts made so far")
    max_attempts: int
    status_code: int | None = Field(description="of the last attempt")
    duration_ms: int | None = Field(description="of the last attempt")
    error: str | None = Field(description="of the last attempt")
    next_attempt_at: datetime | None = Field(description="while pending")
    redelivery_of: str | None = Field(description="the delivery this one sends again")
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    attempts: list[WebhookAttemptOut] = Field(description="oldest first")


class WebhookDeliveryDetailOut(WebhookDeliveryOut):
    body: str | None = Field(description="the JSON body sent (and signed), as sent")


class WebhookDeliveryPageOut(Out):
    deliveries: list[WebhookDeliveryOut] = Field(description="newest first")
    next_cursor: str | None
    limit: int


# Batch completion (POST /ains/agents/{id}/tasks/complete).


class CompleteItem(Body):
    task_id: str = Field(min_length=1, max_length=40)
    result: dict[str, Any] = Field(default_factory=dict, description="the task's result_data")
    attempt: int | None = Field(
        None, ge=1, description="the attempt the claim gave: a report from an older one fails"
    )


class CompleteBatch(Body):
    results: list[CompleteItem] = Field(
        min_length=1,
        max_length=100,
        description="each is applied or refused on its own; a task named twice fails the "
        "second time",
    )


class ItemErrorOut(Out):
    code: str = Field(
        description="not_found, stale_attempt, conflict, cancel_requested, validation_error"
    )
    message: str


class CompleteItemOut(Out):
    task_id: str
    ok: bool
    status: str | None = Field(None, description="COMPLETED when ok")
    error: ItemErrorOut | None = Field(None, description="why the result was not applied")


class CompleteBatchOut(Out):
    results: list[CompleteItemOut] = Field(description="in request order")
