"""Schedules (seed 001 shapes, under /aitp/tasks/schedule): CRUD, pause, run-now, history."""

from __future__ import annotations

from typing import Any

from app.api import bp
from app.api.endpoint import endpoint
from app.api.schemas import (
    ExecutionListQuery,
    ExecutionPageOut,
    RunNowOut,
    ScheduleCreate,
    ScheduleDeletedOut,
    ScheduleListQuery,
    ScheduleOut,
    SchedulePageOut,
    ScheduleUpdate,
    ScheduleValidate,
    ScheduleValidateOut,
)
from app.services import scheduling
from app.services.principal import Principal

TAG = "Schedules"
BASE = "/aitp/tasks/schedule"
CLIENTS = ("client",)


@endpoint(
    bp,
    BASE,
    "POST",
    summary="Create a schedule (cron, interval or one-time)",
    tag=TAG,
    body=ScheduleCreate,
    responses={201: ScheduleOut},
    roles=CLIENTS,
)
def create_schedule(principal: Principal, body: ScheduleCreate) -> tuple[dict[str, Any], int]:
    # Only the fields sent: the service fills in the rest (from the template, if one is named).
    fields = body.model_dump(exclude_none=True, exclude_unset=True)
    schedule = scheduling.create_schedule(principal, fields)
    return scheduling.schedule_dict(schedule), 201


@endpoint(
    bp,
    f"{BASE}/validate",
    "POST",
    summary="Check a cron expression and zone; list the next runs",
    tag=TAG,
    body=ScheduleValidate,
    responses={200: ScheduleValidateOut},
    roles=CLIENTS,
)
def validate_schedule(principal: Principal, body: ScheduleValidate) -> dict[str, Any]:
    return scheduling.preview(**body.model_dump())


@endpoint(
    bp,
    BASE,
    "GET",
    summary="List schedules (newest first)",
    tag=TAG,
    query=ScheduleListQuery,
    responses={200: SchedulePageOut},
    roles=CLIENTS,
)
def list_schedules(principal: Principal, query: ScheduleListQuery) -> dict[str, Any]:
    page = scheduling.list_schedules(principal, **query.model_dump())
    return {
        "schedules": [scheduling.schedule_dict(s, counts) for s, counts in page.schedules],
        "total": page.total,
        "limit": query.limit,
        "offset": query.offset,
    }


@endpoint(
    bp,
    f"{BASE}/<schedule_id>",
    "GET",
    summary="Get a schedule with its run counts",
    tag=TAG,
    responses={200: ScheduleOut},
    roles=CLIENTS,
)
def get_schedule(principal: Principal, schedule_id: str) -> dict[str, Any]:
    return scheduling.schedule_dict(scheduling.visible_schedule(principal, schedule_id))


@endpoint(
    bp,
    f"{BASE}/<schedule_id>",
    "PUT",
    summary="Update a schedule (the fields given); takes effect on the next tick",
    tag=TAG,
    body=ScheduleUpdate,
    responses={200: ScheduleOut},
    roles=CLIENTS,
)
def update_schedule(principal: Principal, schedule_id: str, body: ScheduleUpdate) -> dict[str, Any]:
    fields = body.model_dump(exclude_unset=True)
    return scheduling.schedule_dict(scheduling.update_schedule(principal, schedule_id, fields))


@endpoint(
    bp,
    f"{BASE}/<schedule_id>",
    "DELETE",
    summary="Delete a schedule: it never fires again; its history stays",
    tag=TAG,
    responses={200: ScheduleDeletedOut},
    roles=CLIENTS,
)
def delete_schedule(principal: Principal, schedule_id: str) -> dict[str, Any]:
    schedule = scheduling.delete_schedule(principal, schedule_id)
    return {
        "schedule_id": schedule.id,
        "status": schedule.status,
        "message": "Schedule cancelled successfully",
    }


@endpoint(
    bp,
    f"{BASE}/<schedule_id>/pause",
    "POST",
    summary="Pause a schedule",
    tag=TAG,
    responses={200: ScheduleOut},
    roles=CLIENTS,
)
def pause_schedule(principal: Principal, schedule_id: str) -> dict[str, Any]:
    return scheduling.schedule_dict(scheduling.pause_schedule(principal, schedule_id, True))


@endpoint(
    bp,
    f"{BASE}/<schedule_id>/resume",
    "POST",
    summary="Resume a paused schedule from its next due time (missed runs are not owed)",
    tag=TAG,
    responses={200: ScheduleOut},
    roles=CLIENTS,
)
def resume_schedule(principal: Principal, schedule_id: str) -> dict[str, Any]:
    return scheduling.schedule_dict(scheduling.pause_schedule(principal, schedule_id, False))


@endpoint(
    bp,
    f"{BASE}/<schedule_id>/run-now",
    "POST",
    summary="Fire one extra run now",
    tag=TAG,
    responses={201: RunNowOut},
    roles=CLIENTS,
)
def run_schedule_now(principal: Principal, schedule_id: str) -> tuple[dict[str, Any], int]:
    execution, task = scheduling.run_now(principal, schedule_id)
    return {"execution": execution.to_dict(task), "task": task.to_dict()}, 201


@endpoint(
    bp,
    f"{BASE}/<schedule_id>/executions",
    "GET",
    summary="A schedule's executions, newest first",
    tag=TAG,
    query=ExecutionListQuery,
    responses={200: ExecutionPageOut},
    roles=CLIENTS,
)
def list_executions(
    principal: Principal, schedule_id: str, query: ExecutionListQuery
) -> dict[str, Any]:
    page = scheduling.list_executions(
        principal, schedule_id, limit=query.limit, offset=query.offset
    )
    return {
        "executions": [e.to_dict(t) for e, t in page.executions],
        "total": page.total,
        "limit": query.limit,
        "offset": query.offset,
    }
