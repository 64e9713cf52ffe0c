"""What the console shows about a template's use: tasks made from it, schedules that run it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func

from app.extensions import db
from app.models import Role, Schedule, ScheduleStatus, Task
from app.services.principal import Principal


@dataclass(frozen=True)
class TemplateTasks:
    """The latest tasks made from a template, and how many there are in all."""

    tasks: list[Task]
    total: int


def tasks_from_template(
    principal: Principal, template_id: str, *, limit: int = 10
) -> TemplateTasks:
    """Tasks that record ``template_id``, newest first: an admin's all, a client's its own.

    Tasks keep the id after the template is deleted, so this also answers for a deleted one.
    """
    principal.require_role(Role.CLIENT)
    query = db.select(Task).where(Task.template_id == template_id)
    if not principal.is_admin:
        query = query.where(Task.client_id == principal.client_id)
    total = db.session.scalar(db.select(func.count()).select_from(query.subquery())) or 0
    tasks = db.session.scalars(query.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit))
    return TemplateTasks(list(tasks), total)


def schedules_using(principal: Principal, template_id: str) -> int:
    """How many active or paused schedules make their runs from ``template_id``."""
    principal.require_role(Role.CLIENT)
    query = db.select(func.count(Schedule.id)).where(
        Schedule.template_id == template_id,
        Schedule.status.in_((ScheduleStatus.ACTIVE, ScheduleStatus.PAUSED)),
    )
    if not principal.is_admin:
        query = query.where(Schedule.client_id == principal.client_id)
    return db.session.scalar(query) or 0
