"""The audit log, for admins: GET /ains/audit-events, filtered, newest first, by cursor."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from app.api import bp
from app.api.endpoint import endpoint
from app.api.schemas import OffsetDatetime, Out, Query
from app.models import Role
from app.services import audit
from app.services.principal import Principal

TAG = "Audit"
FILTER_TEXT = "exact value, or a prefix ending in *"


class AuditQuery(Query):
    actor: str | None = Field(
        None, max_length=400, description=f"e.g. client:acme or operator:*; {FILTER_TEXT}"
    )
    action: str | None = Field(
        None, max_length=100, description=f"e.g. task.cancel or schedule.*; {FILTER_TEXT}"
    )
    target_type: str | None = Field(None, max_length=40, description="e.g. task, schedule")
    target_id: str | None = Field(None, max_length=200, description=FILTER_TEXT)
    outcome: Literal["ok", "refused", "failed"] | None = None
    since: OffsetDatetime | None = Field(None, description="from this time on (inclusive)")
    until: OffsetDatetime | None = Field(None, description="before this time")
    address: str | None = Field(None, max_length=64, description=f"client IP; {FILTER_TEXT}")
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, max_length=500)


class AuditEventOut(Out):
    audit_id: int
    created_at: datetime
    actor: str = Field(description="operator:<email>, client:<id>, agent:<id>, admin:<key name>")
    actor_role: str | None
    key_id: str | None
    user_id: int | None
    action: str = Field(description="e.g. task.submit, schedule.update, user.login_failed")
    target_type: str | None
    target_id: str | None
    status_code: int | None
    outcome: Literal["ok", "refused", "failed"]
    summary: dict[str, Any] | None = Field(
        description="a small before/after of what changed; never secrets or payloads"
    )
    address: str | None
    method: str | None
    path: str | None
    request_id: str | None


class AuditPageOut(Out):
    events: list[AuditEventOut] = Field(description="newest first")
    next_cursor: str | None
    limit: int


@endpoint(
    bp,
    "/ains/audit-events",
    "GET",
    summary="List audit events: every state-changing request, refused ones included",
    tag=TAG,
    query=AuditQuery,
    responses={200: AuditPageOut},
    roles=(Role.ADMIN,),
)
def list_audit_events(principal: Principal, query: AuditQuery) -> dict[str, Any]:
    filters = audit.AuditFilters(**query.model_dump(exclude={"limit", "cursor"}))
    page = audit.query(filters, limit=query.limit, cursor=query.cursor)
    return {
        "events": [event.to_dict() for event in page.events],
        "next_cursor": page.next_cursor,
        "limit": query.limit,
    }
