"""Tasks: submit, batch, list, get, report, cancel, priority, queue metrics."""

from __future__ import annotations

from typing import Any

from flask import request
from pydantic import ValidationError

from app.api import bp
from app.api.endpoint import endpoint, unstorable
from app.api.errors import validation_details
from app.api.schemas import (
    BatchOut,
    BatchSubmit,
    BulkAction,
    BulkOut,
    CancelRequest,
    CompleteReport,
    DeadLetterQuery,
    DependenciesOut,
    DependentsOut,
    DependentsQuery,
    FailReport,
    PriorityUpdate,
    ProgressReport,
    QueueMetricsOut,
    TaskDetail,
    TaskListQuery,
    TaskOut,
    TaskPageOut,
    TaskSubmit,
)
from app.lib.clock import isoformat
from app.services import cancellation, dead_letter, dependencies, dispatch, reports, task_search
from app.services.errors import InvalidInput
from app.services.principal import Principal

TAG = "Tasks"
IDEMPOTENCY = {
    "Idempotency-Key": "for 24 h (IDEMPOTENCY_TTL_SECONDS) a replay returns the original "
    "task(s) with status 200 instead of creating new ones; the same key with another body is 422"
}
# Batch items store "<key>#batch#<index>", which must fit the 200-character column.
MAX_KEY = 180


@endpoint(
    bp,
    "/ains/tasks",
    "POST",
    summary="Submit a task",
    tag=TAG,
    body=TaskSubmit,
    responses={201: TaskOut, 200: TaskOut},
    roles=("client",),
    headers=IDEMPOTENCY,
)
def submit_task(principal: Principal, body: TaskSubmit) -> tuple[dict[str, Any], int]:
    key = idempotency_key()
    task, created = dispatch.submit_task(principal, body.model_dump(), idempotency_key=key)
    return task.to_dict(), 201 if created else 200


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header, checked."""
    key = request.headers.get("Idempotency-Key")
    # Control characters (NUL, DEL, tabs...) cannot be shown, logged or stored safely.
    if key is not None and (
        not 0 < len(key) <= MAX_KEY or unstorable(key) or not key.isprintable()
    ):
        raise InvalidInput(
            f"Idempotency-Key must be 1..{MAX_KEY} printable characters",
            [{"field": "Idempotency-Key", "message": f"1..{MAX_KEY} printable characters"}],
        )
    return key


def validate_item(item: Any, index: int) -> dict[str, Any] | InvalidInput:
    """One batch item validated alone, so every bad item is reported by its index."""
    if not isinstance(item, dict):
        return InvalidInput(
            f"item {index} must be an object",
            [{"field": f"tasks[{index}]", "message": "not an object"}],
        )
    try:
        return TaskSubmit.model_validate(item).model_dump()
    except ValidationError as exc:
        details = validation_details(exc, prefix=f"tasks[{index}].")
        names = ", ".join(d["field"] for d in details)
        return InvalidInput(f"Validation failed: {names}", details)


@endpoint(
    bp,
    "/ains/tasks/batch",
    "POST",
    summary="Submit up to 100 tasks",
    tag=TAG,
    body=BatchSubmit,
    responses={201: BatchOut, 200: BatchOut},
    roles=("client",),
    headers=IDEMPOTENCY,
)
def submit_batch(principal: Principal, body: BatchSubmit) -> tuple[dict[str, Any], int]:
    key = idempotency_key()
    items = [validate_item(item, i) for i, item in enumerate(body.tasks)]
    outcome = dispatch.submit_batch(principal, items, atomic=body.atomic, idempotency_key=key)
    submitted = [
        {
            "index": i,
            "task_id": t.id,
            "status": t.status,
            "client_id": t.client_id,
            "created_at": isoformat(t.created_at),
        }
        for i, t in outcome.submitted
    ]
    return {"submitted": submitted, "failed": outcome.failed}, 200 if outcome.replayed else 201


@endpoint(
    bp,
    "/ains/tasks",
    "GET",
    summary="List tasks (newest first, keyset pages)",
    tag=TAG,
    query=TaskListQuery,
    responses={200: TaskPageOut},
)
def list_tasks(principal: Principal, query: TaskListQuery) -> dict[str, Any]:
    filters = task_search.TaskFilters(
        status=query.status,
        client_id=query.client_id,
        capability=query.capability,
        agent_id=query.agent_id,
        priority=query.priority,
        created_after=query.created_after,
        created_before=query.created_before,
    )
    page = task_search.list_tasks(principal, filters, limit=query.limit, cursor=query.cursor)
    return {
        "tasks": [t.to_dict() for t in page.tasks],
        "next_cursor": page.next_cursor,
        "limit": query.limit,
    }


@endpoint(
    bp,
    "/ains/tasks/<task_id>",
    "GET",
    summary="Get a task with its events and attempts",
    tag=TAG,
    responses={200: TaskDetail},
)
def get_task(principal: Principal, task_id: str) -> dict[str, Any]:
    task, events = task_search.task_with_events(principal, task_id)
    data = task.to_dict(events=events, attempts=task_search.task_attempts(task.id))
    return {**data, "depends_on": dependencies.dependency_ids(task.id)}


@endpoint(
    bp,
    "/ains/tasks/<task_id>/dependencies",
    "GET",
    summary="The tasks this one depends on, and which still block it",
    tag=TAG,
    responses={200: DependenciesOut},
    roles=("client",),  # the graph is the client's: an agent sees only the task it runs
)
def list_dependencies(principal: Principal, task_id: str) -> dict[str, Any]:
    return dependencies.list_dependencies(principal, task_id)


@endpoint(
    bp,
    "/ains/tasks/<task_id>/dependents",
    "GET",
    summary="The tasks that depend on this one (limit + offset pages, up to 1000)",
    tag=TAG,
    query=DependentsQuery,
    responses={200: DependentsOut},
    roles=("client",),
)
def list_dependents(principal: Principal, task_id: str, query: DependentsQuery) -> dict[str, Any]:
    return dependencies.list_dependents(principal, task_id, limit=query.limit, offset=query.offset)


@endpoint(
    bp,
    "/ains/tasks/<task_id>/progress",
    "POST",
    summary="Report progress",
    tag=TAG,
    body=ProgressReport,
    responses={200: TaskOut},
    roles=("agent",),
)
def report_progress(principal: Principal, task_id: str, body: ProgressReport) -> dict[str, Any]:
    task = reports.report_progress(
        principal, task_id, body.progress, body.message, attempt=body.attempt
    )
    return task.to_dict()


@endpoint(
    bp,
    "/ains/tasks/<task_id>/complete",
    "POST",
    summary="Report the result",
    tag=TAG,
    body=CompleteReport,
    responses={200: TaskOut},
    roles=("agent",),
)
def complete_task(principal: Principal, task_id: str, body: CompleteReport) -> dict[str, Any]:
    return reports.complete_task(
        principal, task_id, body.result_data, attempt=body.attempt
    ).to_dict()


@endpoint(
    bp,
    "/ains/tasks/<task_id>/fail",
    "POST",
    summary="Report a failure",
    tag=TAG,
    body=FailReport,
    responses={200: TaskOut},
    roles=("agent",),
)
def fail_task(principal: Principal, task_id: str, body: FailReport) -> dict[str, Any]:
    task = reports.fail_task(
        principal,
        task_id,
        body.error_message,
        retryable=body.retryable,
        retry_after_seconds=body.retry_after_seconds,
        attempt=body.attempt,
    )
    return task.to_dict()


@endpoint(
    bp,
    "/ains/tasks/<task_id>/cancel",
    "POST",
    summary="Cancel a task (running ones: ask the agent to stop)",
    tag=TAG,
    body=CancelRequest,
    responses={200: TaskOut, 202: TaskOut},
    roles=("client",),
)
def cancel_task(principal: Principal, task_id: str, body: CancelRequest) -> tuple[dict, int]:
    task = cancellation.cancel_task(principal, task_id, body.reason)
    # 202: a running task was asked to stop; it ends CANCELLED when the agent confirms or
    # after the grace period.
    return task.to_dict(), 202 if cancellation.is_cancel_pending(task) else 200


@endpoint(
    bp,
    "/ains/tasks/<task_id>/priority",
    "PATCH",
    summary="Change a task's priority",
    tag=TAG,
    body=PriorityUpdate,
    responses={200: TaskOut},
    roles=("client",),
)
def update_priority(principal: Principal, task_id: str, body: PriorityUpdate) -> dict[str, Any]:
    return dispatch.update_priority(principal, task_id, body.priority).to_dict()


@endpoint(
    bp,
    "/ains/queue/metrics",
    "GET",
    summary="Queue depth and wait by priority",
    tag=TAG,
    responses={200: QueueMetricsOut},
)
def queue_metrics(principal: Principal) -> dict[str, Any]:
    return task_search.queue_metrics(principal)


@endpoint(
    bp,
    "/ains/dead-letter",
    "GET",
    summary="List FAILED tasks (the dead-letter view), newest first",
    tag=TAG,
    query=DeadLetterQuery,
    responses={200: TaskPageOut},
)
def list_dead_letter(principal: Principal, query: DeadLetterQuery) -> dict[str, Any]:
    filters = dead_letter.dead_filters(
        task_search.TaskFilters(**query.model_dump(exclude={"limit", "cursor"}))
    )
    page = task_search.list_tasks(principal, filters, limit=query.limit, cursor=query.cursor)
    return {
        "tasks": [t.to_dict() for t in page.tasks],
        "next_cursor": page.next_cursor,
        "limit": query.limit,
    }


def bulk_args(body: BulkAction) -> dict[str, Any]:
    filters = None
    if body.filter is not None:
        filters = task_search.TaskFilters(**body.filter.model_dump())
    return {"task_ids": body.task_ids, "filters": filters, "limit": body.limit}


@endpoint(
    bp,
    "/ains/dead-letter/requeue",
    "POST",
    summary="Requeue FAILED tasks by id or by filter (retries reset)",
    tag=TAG,
    body=BulkAction,
    responses={200: BulkOut},
    roles=("client",),
)
def requeue_dead_letter(principal: Principal, body: BulkAction) -> dict[str, Any]:
    return dead_letter.requeue(principal, **bulk_args(body)).to_dict()


@endpoint(
    bp,
    "/ains/dead-letter/cancel",
    "POST",
    summary="Discard FAILED tasks by id or by filter (they end CANCELLED)",
    tag=TAG,
    body=BulkAction,
    responses={200: BulkOut},
    roles=("client",),
)
def cancel_dead_letter(principal: Principal, body: BulkAction) -> dict[str, Any]:
    return dead_letter.discard(principal, reason=body.reason, **bulk_args(body)).to_dict()
