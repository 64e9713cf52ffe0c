"""Schedules that make their runs from a template: the template as it is at each run, the
schedule's fields on top, and a schedule whose template was deleted failing visibly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.api.schemas import ScheduleCreate
from app.extensions import db
from app.models import Schedule, ScheduleExecution, ScheduleStatus, Task, TaskTemplate
from app.services import scheduling, templates
from app.services.errors import InvalidInput, NotFound
from tests.services.conftest import Actors

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
SCHEMA = {"type": "object", "properties": {"day": {"type": "integer"}}, "required": ["day"]}


def make_template(actors: Actors, **fields: Any) -> TaskTemplate:
    body = {
        "name": "digest",
        "task_type": "digest",
        "capability_required": "digest-v1",
        "default_input_data": {"format": "pdf", "options": {"a": 1, "b": 2}},
        "default_priority": 8,
        "default_max_retries": 1,
        "default_retry_policy": "fixed",
        "default_timeout_seconds": 60,
        **fields,
    }
    return templates.create_template(actors.client, body, now=T0)


def make_schedule(actors: Actors, **fields: Any) -> str:
    """As the API parses a create: only the fields sent."""
    parsed = ScheduleCreate.model_validate(fields).model_dump(exclude_none=True, exclude_unset=True)
    return scheduling.create_schedule(actors.client, parsed, now=T0).id


def fresh(model: type[Any], row_id: str) -> Any:
    db.session.expire_all()
    row = db.session.get(model, row_id)
    assert row is not None
    return row


def run_tasks(schedule_id: str) -> list[Task]:
    return list(
        db.session.scalars(
            db.select(Task)
            .join(ScheduleExecution, ScheduleExecution.task_id == Task.id)
            .where(ScheduleExecution.schedule_id == schedule_id)
            .order_by(ScheduleExecution.scheduled_for)
        )
    )


def test_it_fires_runs_from_the_template_as_it_is_at_each_run(actors: Actors) -> None:
    template = make_template(actors)
    schedule_id = make_schedule(
        actors,
        template_id=template.id,
        interval_seconds=60,
        input_data={"options": {"b": 3}},
        max_retries=0,
    )
    schedule = fresh(Schedule, schedule_id)
    # Taken from the template when created: what the schedule did not say.
    assert (schedule.task_type, schedule.capability_required) == ("digest", "digest-v1")
    assert (schedule.priority, schedule.max_retries, schedule.timeout_seconds) == (8, 0, 60)
    assert schedule.input_data == {"options": {"b": 3}}  # overrides, merged at each run

    assert scheduling.fire_due(now=T0 + MINUTE).fired == 1
    [task] = run_tasks(schedule_id)
    assert (task.task_type, task.capability_required, task.client_id) == (
        "digest",
        "digest-v1",
        "client-1",
    )
    assert task.input_data == {"format": "pdf", "options": {"a": 1, "b": 3}}
    assert (task.priority, task.max_retries, task.retry_policy) == (8, 0, "fixed")
    assert (task.template_id, task.template_version) == (template.id, 1)
    assert task.created_by == f"schedule:{schedule_id}"
    assert fresh(TaskTemplate, template.id).times_used == 1

    # An edit to the template reaches the next run, not the task already made.
    templates.update_template(
        actors.client,
        template.id,
        {"default_input_data": {"format": "csv"}, "capability_required": "digest-v2"},
        now=T0 + MINUTE,
    )
    scheduling.fire_due(now=T0 + 2 * MINUTE)
    first, second = run_tasks(schedule_id)
    assert (first.template_version, first.capability_required) == (1, "digest-v1")
    assert first.input_data == {"format": "pdf", "options": {"a": 1, "b": 3}}
    assert (second.template_version, second.capability_required) == (2, "digest-v2")
    assert second.input_data == {"format": "csv", "options": {"b": 3}}
    assert fresh(Schedule, schedule_id).capability_required == "digest-v2"
    assert fresh(TaskTemplate, template.id).times_used == 2


def test_a_schedule_whose_template_was_deleted_fails_alone(actors: Actors) -> None:
    template = make_template(actors)
    orphan = make_schedule(actors, template_id=template.id, interval_seconds=60)
    healthy = make_schedule(
        actors, task_type="report", capability_required="report-v1", interval_seconds=60
    )
    scheduling.fire_due(now=T0 + MINUTE)
    templates.delete_template(actors.client, template.id)

    result = scheduling.fire_due(now=T0 + 2 * MINUTE)

    assert result.fired == 1
    schedule = fresh(Schedule, orphan)
    assert schedule.status == ScheduleStatus.FAILED and schedule.next_run_at is None
    assert schedule.last_error is not None
    assert template.id in schedule.last_error and "deleted" in schedule.last_error
    assert len(run_tasks(orphan)) == 1  # the run made before the delete stays
    assert run_tasks(orphan)[0].template_id == template.id
    assert len(run_tasks(healthy)) == 2


def test_a_run_whose_input_breaks_the_schema_fails_the_schedule(actors: Actors) -> None:
    template = make_template(actors, input_schema=SCHEMA, default_input_data={})
    schedule_id = make_schedule(
        actors, template_id=template.id, interval_seconds=60, input_data={"day": 1}
    )
    scheduling.fire_due(now=T0 + MINUTE)
    assert len(run_tasks(schedule_id)) == 1
    templates.update_template(
        actors.client, template.id, {"input_schema": {**SCHEMA, "required": ["day", "month"]}}
    )
    scheduling.fire_due(now=T0 + 2 * MINUTE)
    schedule = fresh(Schedule, schedule_id)
    assert schedule.status == ScheduleStatus.FAILED
    assert schedule.last_error is not None and "input_schema" in schedule.last_error
    assert fresh(TaskTemplate, template.id).times_used == 1  # the failed run is not counted


def test_it_switches_a_schedule_to_and_from_a_template(actors: Actors) -> None:
    template = make_template(actors)
    schedule_id = make_schedule(
        actors, task_type="report", capability_required="report-v1", interval_seconds=60
    )
    updated = scheduling.update_schedule(
        actors.client, schedule_id, {"template_id": template.id}, now=T0
    )
    assert (updated.template_id, updated.task_type) == (template.id, "digest")
    # A form sending the shown task_type back unchanged is fine; another one is refused.
    scheduling.update_schedule(actors.client, schedule_id, {"task_type": "digest"}, now=T0)
    with pytest.raises(InvalidInput) as refused:
        scheduling.update_schedule(actors.client, schedule_id, {"task_type": "other"}, now=T0)
    assert refused.value.details[0]["field"] == "task_type"
    db.session.rollback()
    scheduling.fire_due(now=T0 + MINUTE)
    assert run_tasks(schedule_id)[-1].template_id == template.id

    plain = scheduling.update_schedule(
        actors.client, schedule_id, {"template_id": None, "task_type": "other"}, now=T0 + MINUTE
    )
    assert (plain.template_id, plain.task_type) == (None, "other")
    scheduling.fire_due(now=T0 + 2 * MINUTE)
    last = run_tasks(schedule_id)[-1]
    assert (last.template_id, last.task_type) == (None, "other")


def test_it_refuses_another_clients_template(actors: Actors) -> None:
    theirs = templates.create_template(
        actors.other_client,
        {"name": "t", "task_type": "t", "capability_required": "t-v1"},
        now=T0,
    )
    with pytest.raises(NotFound):
        make_schedule(actors, template_id=theirs.id, interval_seconds=60)
    db.session.rollback()
    schedule_id = make_schedule(
        actors, task_type="report", capability_required="report-v1", interval_seconds=60
    )
    with pytest.raises(NotFound):
        scheduling.update_schedule(actors.client, schedule_id, {"template_id": theirs.id})
    db.session.rollback()
    # Even an admin cannot point client-1's schedule at client-2's template.
    with pytest.raises(InvalidInput) as refused:
        scheduling.update_schedule(actors.admin, schedule_id, {"template_id": theirs.id})
    assert refused.value.details[0]["field"] == "template_id"
