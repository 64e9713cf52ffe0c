"""Task templates (seed 003 shapes): CRUD under /ains/task-templates, and tasks from them."""

from __future__ import annotations

from typing import Any

from app.api import bp
from app.api.endpoint import endpoint
from app.api.schemas import (
    FromTemplate,
    TaskOut,
    TemplateCreate,
    TemplateDeletedOut,
    TemplateListQuery,
    TemplateOut,
    TemplatePageOut,
    TemplateUpdate,
)
from app.api.tasks import IDEMPOTENCY, idempotency_key
from app.services import templates
from app.services.principal import Principal

TAG = "Templates"
BASE = "/ains/task-templates"
CLIENTS = ("client",)


@endpoint(
    bp,
    BASE,
    "POST",
    summary="Create a task template (its name unique among the client's: else 409)",
    tag=TAG,
    body=TemplateCreate,
    responses={201: TemplateOut},
    roles=CLIENTS,
)
def create_template(principal: Principal, body: TemplateCreate) -> tuple[dict[str, Any], int]:
    return templates.create_template(principal, body.model_dump()).to_dict(), 201


@endpoint(
    bp,
    BASE,
    "GET",
    summary="List task templates (newest first)",
    tag=TAG,
    query=TemplateListQuery,
    responses={200: TemplatePageOut},
    roles=CLIENTS,
)
def list_templates(principal: Principal, query: TemplateListQuery) -> dict[str, Any]:
    page = templates.list_templates(principal, **query.model_dump())
    return {
        "templates": [t.to_dict() for t in page.templates],
        "total": page.total,
        "limit": query.limit,
        "offset": query.offset,
    }


@endpoint(
    bp,
    f"{BASE}/<template_id>",
    "GET",
    summary="Get a task template",
    tag=TAG,
    responses={200: TemplateOut},
    roles=CLIENTS,
)
def get_template(principal: Principal, template_id: str) -> dict[str, Any]:
    return templates.visible_template(principal, template_id).to_dict()


@endpoint(
    bp,
    f"{BASE}/<template_id>",
    "PATCH",
    summary="Update a task template (the fields given); tasks made before keep their values",
    tag=TAG,
    body=TemplateUpdate,
    responses={200: TemplateOut},
    roles=CLIENTS,
)
def update_template(principal: Principal, template_id: str, body: TemplateUpdate) -> dict[str, Any]:
    fields = body.model_dump(exclude_unset=True)
    return templates.update_template(principal, template_id, fields).to_dict()


@endpoint(
    bp,
    f"{BASE}/<template_id>",
    "DELETE",
    summary="Delete a task template; its tasks keep its id and version, its schedules fail",
    tag=TAG,
    responses={200: TemplateDeletedOut},
    roles=CLIENTS,
)
def delete_template(principal: Principal, template_id: str) -> dict[str, Any]:
    deleted = templates.delete_template(principal, template_id)
    return {"template_id": deleted, "deleted": True, "message": "Template deleted"}


@endpoint(
    bp,
    "/ains/tasks/from-template",
    "POST",
    summary="Submit a task from a template (the fields given override its defaults)",
    tag=TAG,
    body=FromTemplate,
    responses={201: TaskOut, 200: TaskOut},
    roles=CLIENTS,
    headers=IDEMPOTENCY,
)
def submit_from_template(principal: Principal, body: FromTemplate) -> tuple[dict[str, Any], int]:
    overrides = body.model_dump(exclude_none=True, exclude={"template_id"})
    task, created = templates.submit_from_template(
        principal, body.template_id, overrides, idempotency_key=idempotency_key()
    )
    return task.to_dict(), 201 if created else 200
