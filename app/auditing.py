"""Capture: one audit row for every state-changing request, written once it has finished.

Any method but GET, HEAD and OPTIONS is audited, on the API and in the console, whether
it succeeded, was refused (401, 403, 404, 409, 422, 429, a stale CSRF token) or failed.
The row is written in after_request: the view's transaction has committed or been rolled
back by then, so the row goes in its own short transaction on the same session (SQLite
has a single writer; a second connection would wait on the request's own lock).

The agent work loop (heartbeat, claim, progress, complete, fail) is high-volume and its
every effect is a task event already, so it is audited only when refused for who is
asking (401, 403, 404), unless AUDIT_AGENT_WORK is set.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from flask import Flask, Response, current_app, g, request, url_for
from flask_login import current_user
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from app.extensions import db, redis_client
from app.lib.tokens import split_api_key
from app.models import AuditOutcome
from app.services import audit
from app.services.audit import audit_settings

log = logging.getLogger(__name__)

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_PREFIXES = ("/ains/", "/aitp/")
AGENT_WORK = frozenset(
    {
        "api.heartbeat",
        "api.claim",
        "api.report_progress",
        "api.complete_task",
        "api.complete_batch",
        "api.fail_task",
    }
)
# Refusals of the work loop that are about the caller, not the work: attacks show up.
AGENT_WORK_REFUSALS = frozenset({401, 403, 404})

# Endpoints whose view name does not read as ``<verb>_<thing>``; ``{action}`` is the
# path's own action segment (pause/resume, enable/disable, requeue/cancel).
ACTIONS = {
    "api.submit_task": "task.submit",
    "api.submit_batch": "task.submit_batch",
    "api.submit_from_template": "task.submit_from_template",
    "api.claim": "task.claim",
    "api.report_progress": "task.progress",
    "api.complete_batch": "task.complete_batch",
    "api.update_priority": "task.update_priority",
    "api.requeue_dead_letter": "task.requeue",
    "api.cancel_dead_letter": "task.discard",
    "ui.dead_letter_action": "task.{action}",
    "ui.task_bulk_action": "task.bulk_{action}",
    "ui.new_task": "task.submit",
    "api.adjust_trust": "trust.adjust",
    "ui.adjust_agent_trust": "trust.adjust",
    "api.create_agent_webhook": "webhook.create",
    "api.rotate_secret": "webhook.rotate_secret",
    "api.add_capability": "agent.add_capability",
    "api.set_capability_routing": "routing.set_default",
    "ui.set_routing_default": "routing.set_default",
    "ui.new_task_template": "template.create",
    "ui.edit_task_template": "template.update",
    "ui.delete_task_template": "template.delete",
    "ui.run_task_template": "template.run",
    "ui.sign_out_user": "user.sign_out",
    "ui.create_user": "user.create",
    "ui.change_user_role": "user.change_role",
    "ui.set_user_active": "user.{action}",
    "ui.reset_user_password": "user.reset_password",
    "ui.login": "user.login",
    "ui.logout": "user.logout",
    "ui.logout_everywhere": "user.logout_everywhere",
}
VERBS = {"new": "create", "edit": "update", "toggle": "set"}
# Path arguments named otherwise than the thing they point at.
TARGET_TYPES = {"key": "api_key", "delivery": "webhook_delivery"}
# Path arguments that name a target without ending in _id.
ID_ARGS = frozenset({"capability"})
# Where a created thing's id is in the response, when not at "<thing>_id".
ID_FIELDS = {"api_key": "key_id"}
PATH_ACTIONS = {"task.cancel": "task.discard"}  # the dead-letter view's "cancel"


def install(app: Flask) -> None:
    """Register the capture hooks and read the audit settings."""
    audit_settings.configure(app.config)
    app.before_request(open_audit)
    app.after_request(write_audit)
    app.teardown_request(close_audit)


# POSTs that change nothing (a body too long for a URL): not audited.
READ_ONLY_POSTS = frozenset({"ui.task_template_preview"})


def audited() -> bool:
    return request.method not in READ_METHODS and request.endpoint not in READ_ONLY_POSTS


def is_api() -> bool:
    return request.blueprint == "api" or request.path.startswith(API_PREFIXES)


def open_audit() -> None:
    """Before the view: start collecting notes, and remember who is signed in (signing out
    forgets it before the row is written)."""
    if not audited():
        return
    g.audit_token = audit.open_scope()
    if not is_api() and current_user.is_authenticated:
        g.audit_user = (current_user.id, current_user.email, current_user.role)


def close_audit(_exc: BaseException | None) -> None:
    token = g.pop("audit_token", None)
    if token is not None:
        # Torn down in another context (a streamed response): nothing left to reset.
        with contextlib.suppress(ValueError):
            audit.close_scope(token)


def write_audit(response: Response) -> Response:
    """After the view: one row for this request, in its own transaction."""
    if not audited() or skipped(response.status_code):
        return response
    try:
        # The request's transaction is over (committed, or rolled back by an error
        # handler); anything left uncommitted would be discarded at teardown anyway.
        db.session.rollback()
        audit.record(**describe(response))
    except Exception:  # the action happened: a lost audit row must not turn it into a 500
        db.session.rollback()
        log.exception("could not write the audit row for %s %s", request.method, request.path)
    return response


def skipped(status: int) -> bool:
    """The agent work loop, unless refused for who is asking or AUDIT_AGENT_WORK is set;
    and rate-limited requests after the first of their caller in a minute."""
    if status == 429 or (status == 401 and is_api()):
        return not first_refusal_this_minute(status)
    return (
        request.endpoint in AGENT_WORK
        and not audit_settings.agent_work
        and status not in AGENT_WORK_REFUSALS
    )


# A flood of refused requests must not become a flood of database writes: the first 429
# of a key (or address) in a minute is recorded, the rest of that minute's are not.
RATE_LIMIT_AUDIT_WINDOW_SECONDS = 60


def first_refusal_this_minute(status: int) -> bool:
    """Whether this refusal (429, or an API 401) is the first of its kind for its caller
    this minute (Redis down: record it)."""
    caller = bearer_prefix() or request.remote_addr or "unknown"
    key = f"ains:audit:{status}:{caller}"
    try:
        connection = redis_client(current_app.config["REDIS_URL"])
        return bool(connection.set(key, 1, nx=True, ex=RATE_LIMIT_AUDIT_WINDOW_SECONDS))
    except RedisError:
        return True


def describe(response: Response) -> dict[str, Any]:
    """The audit row's fields for this request and its response."""
    scope = audit.current_scope()
    # Tracked objects are read now, after the transaction: "after" is what was committed.
    notes = [n for n in map(audit.resolve, scope.notes if scope else []) if n is not None]
    status = response.status_code
    target_type, target_id = target_of(notes)
    action = next((n.action for n in notes if n.action), None) or action_name(
        request.endpoint, target_type, status
    )
    fields: dict[str, Any] = {
        **actor_fields(),
        "action": action,
        "status_code": status,
        "outcome": audit.outcome_of(status),
        "address": request.remote_addr,
        "method": request.method,
        "path": request.path,
        "request_id": g.get("request_id") or request.headers.get("X-Request-ID"),
    }
    summary = audit.summary_of(notes) or {}
    if status >= 400:
        error = error_code(response)
        if error:
            summary["error"] = error
    elif sent_to_login(response):
        fields["outcome"] = AuditOutcome.REFUSED
        summary["error"] = "not_signed_in"
    if fields["key_id"] is None and is_api():
        prefix = bearer_prefix()
        if prefix:  # the key's public lookup part, never its secret
            summary["key_prefix"] = prefix
    if target_type is None and status < 400:
        target_type, target_id = created_target(action, response)
    fields.update(target_type=target_type, target_id=target_id, summary=summary or None)
    return fields


def actor_fields() -> dict[str, Any]:
    """Who acted: the API key's holder, the operator, the email a sign-in tried, or nobody."""
    principal = g.get("principal")
    if principal is not None:
        return who(principal.actor, principal.role, key_id=principal.key_id)
    if not is_api():
        if current_user.is_authenticated:
            user = (current_user.id, current_user.email, current_user.role)
        else:
            user = g.get("audit_user")
        if user is not None:
            return who(f"operator:{user[1]}", user[2], user_id=user[0])
        if request.endpoint == "ui.login":
            email = submitted_email()
            if email:  # a failed sign-in: who it claimed to be (never the password)
                return who(f"operator:{email}")
    return who("anonymous")


def submitted_email() -> str:
    """The sign-in form's email, if the body could be read at all (not one too large)."""
    try:
        return (request.form.get("email") or "").strip().lower()
    except HTTPException:
        return ""


def who(
    actor: str, role: str | None = None, *, key_id: str | None = None, user_id: int | None = None
) -> dict[str, Any]:
    return {"actor": actor, "actor_role": role, "key_id": key_id, "user_id": user_id}


def action_name(endpoint: str | None, target_type: str | None, status: int) -> str:
    """A stable name like ``task.cancel``, from the endpoint unless ACTIONS names it."""
    if endpoint is None:
        return f"http.{request.method.lower()}"
    if endpoint == "ui.login":
        return "user.login" if status < 400 else "user.login_failed"
    path_action = (request.view_args or {}).get("action")
    if endpoint in ACTIONS:
        name = ACTIONS[endpoint].replace("{action}", str(path_action))
        return PATH_ACTIONS.get(name, name)
    view = endpoint.rpartition(".")[2]
    verb, _, rest = view.partition("_")
    verb = VERBS.get(verb, verb)
    if not rest:
        return f"{target_type or request.blueprint or 'app'}.{verb}"
    if path_action:
        return f"{target_type or rest}.{path_action}"
    if target_type and rest.startswith(f"{target_type}_"):
        return f"{target_type}.{verb}_{rest[len(target_type) + 1 :]}"
    return f"{rest}.{verb}"


def target_of(notes: list[audit.Note]) -> tuple[str | None, str | None]:
    """What the action was about: as the service noted it, else the path's last ``*_id``."""
    for note in notes:
        if note.target_type:
            return note.target_type, note.target_id
    ids = [
        (k, v) for k, v in (request.view_args or {}).items() if k.endswith("_id") or k in ID_ARGS
    ]
    if not ids:
        return None, None
    name, value = ids[-1]
    kind = name.removesuffix("_id")
    return TARGET_TYPES.get(kind, kind), str(value)


def created_target(action: str, response: Response) -> tuple[str | None, str | None]:
    """A created thing named in the JSON response (``task_id`` of ``task.submit``)."""
    resource = action.partition(".")[0]
    if not response.is_json or (response.content_length or 0) > 65536:
        return None, None
    body = response.get_json(silent=True)
    if not isinstance(body, dict):
        return None, None
    value = body.get(ID_FIELDS.get(resource, f"{resource}_id"))
    return (resource, str(value)) if isinstance(value, str | int) else (None, None)


def error_code(response: Response) -> str | None:
    """The API error's code (not its message, which may quote the input)."""
    if not response.is_json or (response.content_length or 0) > 65536:
        return None
    body = response.get_json(silent=True)
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def sent_to_login(response: Response) -> bool:
    """A console write by someone not signed in, redirected to the sign-in page."""
    if request.endpoint == "ui.login" or response.status_code not in (301, 302, 303):
        return False
    return (response.location or "").startswith(url_for("ui.login")) and not (
        current_user.is_authenticated or g.get("audit_user")
    )


def bearer_prefix() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return split_api_key(token.strip()) if scheme.lower() == "bearer" else None
