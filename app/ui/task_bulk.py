"""The tasks list's bulk actions (cancel, requeue, priority) and the submit form.

A bulk action takes two steps. The list's selection form (or an "all matching" link) GETs
the confirmation page, which changes nothing and says how many tasks the action will
change and how many it will skip and why; its POST form does it. Both steps need the
operator role. The submit form uses the API's own schema (TaskSubmit) and the same
domain calls (dispatch.submit_task / submit_batch).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from flask import current_app, flash, redirect, request, url_for
from flask_login import login_required
from pydantic import ValidationError as SchemaError
from werkzeug.wrappers import Response as BaseResponse
from wtforms import (
    BooleanField,
    HiddenField,
    IntegerField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from app.api.endpoint import first_unstorable, strict_loads
from app.api.errors import validation_details
from app.api.schemas import TaskSubmit
from app.models import OperatorRole
from app.services import bulk, dispatch, task_actions
from app.services.errors import InvalidInput, NotPermitted
from app.ui import bp
from app.ui.access import requires
from app.ui.auth import acting_operator
from app.ui.dead_letter import BulkForm, confirmation_time, notice_with_skips, stopped
from app.ui.filters import PRIORITIES, TaskFilterForm, describe_errors, stripped
from app.ui.forms import ServiceForm
from app.ui.htmx import render_region

ACTION_NAMES = "cancel, requeue, priority"
VERBS = {"cancel": "Cancel", "requeue": "Requeue", "priority": "Change the priority of"}
# A batch from the form: the API's limit.
MAX_BATCH = 100
# Tasks of a batch linked from the flash message (it lives in the session cookie).
LINKED_TASKS = 5
# The submit form's hidden idempotency key (secrets.token_urlsafe(24) is 32 characters).
SUBMIT_KEY_MAX = 64


# ---------------------------------------------------------------------------------------
# Bulk actions
# ---------------------------------------------------------------------------------------


class TaskBulkForm(BulkForm):
    """A bulk action's target and, for a priority change, the new priority."""

    max_per_call = task_actions.MAX_PER_RUN
    new_priority = IntegerField("New priority", validators=[Optional(), NumberRange(min=1, max=10)])


def new_priority(action: str, value: str | None) -> int | None:
    """The chosen priority of a priority change, or InvalidInput; None for other actions."""
    if action != "priority":
        return None
    try:
        priority = int(value or "")
    except ValueError:
        priority = 0
    if not 1 <= priority <= 10:
        raise InvalidInput(f"Choose a new priority from 1 to 10, not {str(value or '')[:10]!r}.")
    return priority


def skip_line(reason: str, count: int) -> str:
    """'3 are already COMPLETED', '1 was already asked to stop', '2 were not found'."""
    if reason.startswith("is "):
        return f"{count} {'is' if count == 1 else 'are'} {reason[3:]}"
    return f"{count} {'was' if count == 1 else 'were'} {reason}"


@bp.get("/tasks/bulk/<any(cancel, requeue, priority):action>")
@login_required
@requires(OperatorRole.OPERATOR)
def task_bulk_confirm(action: str) -> BaseResponse:
    filters = TaskFilterForm(request.args)
    if not filters.validate():
        flash(f"Nothing done. {describe_errors(filters)}", "error")
        return redirect(url_for("ui.tasks"))
    back = url_for("ui.tasks", **filters.query_args())
    by_filter = request.args.get("scope") == "filter"
    task_ids = list(dict.fromkeys(request.args.getlist("task_ids")))
    as_of = confirmation_time()
    try:
        priority = new_priority(action, request.args.get("new_priority"))
        if not by_filter and not task_ids:
            raise InvalidInput("Tick at least one task first.")
        if len(task_ids) > bulk.MAX_SELECTION:
            raise InvalidInput(f"Choose at most {bulk.MAX_SELECTION} tasks at a time.")
        preview = task_actions.preview(
            acting_operator(),
            action,
            task_ids=None if by_filter else task_ids,
            filters=filters.to_filters() if by_filter else None,
            priority=priority,
        )
    except InvalidInput as exc:
        flash(exc.message, "error")
        return redirect(back)
    return render_region(
        "ui/tasks/bulk_confirm.html",
        "ui/tasks/_bulk_confirm.html",
        action=action,
        verb=VERBS[action],
        by_filter=by_filter,
        task_ids=task_ids,
        priority=priority,
        preview=preview,
        skip_lines=[skip_line(r, n) for r, n in preview.skipped.items()],
        filters=filters.query_args(),
        bulk_form=TaskBulkForm(formdata=None),
        max_per_run=task_actions.MAX_PER_RUN,
        as_of=as_of,
    )


def bulk_notice(
    result: bulk.BulkResult, *, priority: int | None, by_filter: bool
) -> dict[str, Any]:
    """The flash message of a bulk action on the tasks list."""
    done = len(result.done)
    tasks = f"{done} task{'' if done == 1 else 's'}"
    if result.action == "priority":
        text = f"Set priority {priority} on {tasks}."
    elif result.action == "requeue":
        text = f"Requeued {tasks}."
    else:
        stopping = len(result.stopping)
        ended = done - stopping
        text = f"Cancelled {ended} task{'' if ended == 1 else 's'}."
        if stopping:
            text += (
                f" Asked {stopping} running task{'' if stopping == 1 else 's'} to stop: "
                "each ends CANCELLED when its agent confirms."
            )
    return notice_with_skips(result, text, by_filter=by_filter)


@bp.post("/tasks/bulk/<any(cancel, requeue, priority):action>")
@login_required
def task_bulk_action(action: str) -> BaseResponse:
    form, filters = TaskBulkForm(), TaskFilterForm(request.form)
    back = url_for("ui.tasks", **(filters.query_args() if filters.validate() else {}))
    try:
        if not form.validate() or filters.errors:
            raise InvalidInput(f"Nothing done. {describe_errors(form) or describe_errors(filters)}")
        priority = new_priority(action, request.form.get("new_priority"))
        target = form.target()
        if form.scope.data == "filter":
            target["filters"] = filters.to_filters()
        result = task_actions.apply(
            acting_operator(),
            action,
            priority=priority,
            reason=form.reason.data or None,
            **target,
        )
    except InvalidInput as exc:
        flash(exc.message, "error")
    except bulk.BulkInterrupted as exc:
        by_filter = form.scope.data == "filter"
        flash(stopped(bulk_notice(exc.result, priority=priority, by_filter=by_filter)), "error")
    else:
        category = "success" if result.done else "warning" if result.skipped else "info"
        by_filter = form.scope.data == "filter"
        flash(bulk_notice(result, priority=priority, by_filter=by_filter), category)
    return redirect(back)


# ---------------------------------------------------------------------------------------
# Submit a task or a batch
# ---------------------------------------------------------------------------------------


def parse_input(text: str | None) -> Any:
    """The input box's JSON, by the API's rules (strict_loads: no NaN, Infinity or 1e999,
    at most MAX_JSON_DEPTH levels); InvalidInput naming the line and column if it is not."""
    try:
        return strict_loads((text or "").strip() or "{}")
    except ValueError as exc:
        # A syntax error says where; NaN, 1e999 and nesting say what.
        message = f"not valid JSON: {exc}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise InvalidInput(message, [{"field": "input_data", "message": message}]) from None


def serialized_size(document: Any) -> int:
    """Bytes of ``document`` as compact JSON, as an API client would send it."""
    return len(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode())


class NewTaskForm(ServiceForm):
    """One task or a batch: the API's submit fields, with input as JSON."""

    client_id = StringField(
        "Client", filters=[stripped], validators=[DataRequired(), Length(max=200)]
    )
    task_type = StringField(
        "Task type", filters=[stripped], validators=[DataRequired(), Length(max=200)]
    )
    capability_required = StringField(
        "Capability", filters=[stripped], validators=[DataRequired(), Length(max=200)]
    )
    priority = SelectField(
        "Priority",
        choices=[SelectChoice(str(p)) for p in PRIORITIES],
        default="5",
    )
    input_data = TextAreaField("Input (JSON)", default="{}")
    copies = IntegerField(
        "Copies", default=1, validators=[Optional(), NumberRange(min=1, max=MAX_BATCH)]
    )
    max_retries = IntegerField(
        "Max retries", default=3, validators=[Optional(), NumberRange(min=0, max=20)]
    )
    retry_policy = SelectField(
        "Retry policy",
        choices=[SelectChoice(p) for p in ("exponential", "linear", "fixed")],
        default="exponential",
    )
    timeout_seconds = IntegerField(
        "Timeout (s)", default=300, validators=[Optional(), NumberRange(min=1, max=3600)]
    )
    expires_in_seconds = IntegerField(
        "Expires after (s)", validators=[Optional(), NumberRange(min=1, max=30 * 86400)]
    )
    retry_on_timeout = BooleanField("Retry a timed-out task")
    # Rendered fresh with each empty form and sent back as the submit's idempotency key:
    # the same form posted twice (a double click, a retry) creates its tasks once.
    submit_key = HiddenField(validators=[Optional(), Length(max=SUBMIT_KEY_MAX)])

    def items(self) -> list[dict[str, Any]]:
        """The tasks the form asks for, each checked by the API's schema, or InvalidInput
        with the errors at the fields they belong to."""
        parsed = parse_input(self.input_data.data)
        if first_unstorable(parsed) is not None:
            raise InvalidInput(
                "a NUL or unpaired surrogate cannot be stored",
                [{"field": "input_data", "message": "holds a NUL or an unpaired surrogate"}],
            )
        copies = self.copies.data or 1
        if isinstance(parsed, list):
            if copies != 1:
                raise InvalidInput(
                    "give a JSON array or copies, not both",
                    [{"field": "copies", "message": "leave at 1 with a JSON array of inputs"}],
                )
            if not 1 <= len(parsed) <= MAX_BATCH:
                raise InvalidInput(
                    f"a batch holds 1 to {MAX_BATCH} inputs, got {len(parsed)}",
                    [{"field": "input_data", "message": f"1 to {MAX_BATCH} inputs"}],
                )
            inputs = parsed
        elif isinstance(parsed, dict):
            inputs = [parsed] * copies
        else:
            raise InvalidInput(
                "input must be a JSON object, or an array of objects for a batch",
                [{"field": "input_data", "message": "a JSON object {...}, or an array of them"}],
            )
        # No more input per submit than the API takes in one request body.
        total = serialized_size(parsed) * (1 if isinstance(parsed, list) else copies)
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        if limit is not None and total > limit:
            message = (
                f"{total:,} bytes of input in all (as JSON, times copies); "
                f"at most {limit:,} per submit"
            )
            where = "copies" if copies > 1 else "input_data"
            raise InvalidInput(message, [{"field": where, "message": message}])
        base = {
            "client_id": self.client_id.data,
            "task_type": self.task_type.data,
            "capability_required": self.capability_required.data,
            "priority": int(self.priority.data or 5),
            "max_retries": self.max_retries.data if self.max_retries.data is not None else 3,
            "retry_policy": self.retry_policy.data,
            "timeout_seconds": self.timeout_seconds.data or 300,
            "retry_on_timeout": bool(self.retry_on_timeout.data),
            "expires_in_seconds": self.expires_in_seconds.data,
        }
        items, details = [], []
        for index, value in enumerate(inputs):
            try:
                items.append(TaskSubmit.model_validate({**base, "input_data": value}).model_dump())
            except SchemaError as exc:
                shared = False
                for detail in validation_details(exc):
                    name = str(detail["field"] or "").partition(".")[0]
                    shared = shared or name != "input_data"
                    where = f"item {index}: " if len(inputs) > 1 and not shared else ""
                    details.append({"field": name, "message": where + detail["message"]})
                if shared:
                    break  # a field every item shares: its error would repeat for each
        if details:
            raise InvalidInput("the task was not submitted", details[:20])
        return items


def new_task_page(form: NewTaskForm, status: int = 200) -> BaseResponse:
    return render_region(
        "ui/tasks/new.html", "ui/tasks/new.html", status=status, form=form, max_batch=MAX_BATCH
    )


@bp.get("/tasks/new")
@login_required
@requires(OperatorRole.OPERATOR)
def new_task_form() -> BaseResponse:
    form = NewTaskForm(formdata=None)
    form.submit_key.data = secrets.token_urlsafe(24)
    return new_task_page(form)


def key_reused(exc: InvalidInput) -> bool:
    """Whether dispatch refused the form's key as used before with other values."""
    return any(d.get("field") == "Idempotency-Key" for d in exc.details or [])


@bp.post("/tasks/new")
@login_required
@requires(OperatorRole.OPERATOR)
def new_task() -> BaseResponse:
    form = NewTaskForm()
    if form.validate():
        # No key (a form from before keys, or a script): submitted without one.
        key = form.submit_key.data or None
        try:
            items = form.items()
            principal = acting_operator()
            if len(items) == 1:
                task, created = dispatch.submit_task(principal, items[0], idempotency_key=key)
                said = "submitted" if created else "was already submitted"
                flash(f"Task {task.id} {said}: it is {task.status}.", "success")
                return redirect(url_for("ui.task_detail", task_id=task.id))
            outcome = dispatch.submit_batch(principal, items, atomic=True, idempotency_key=key)
        except InvalidInput as exc:
            if key_reused(exc):
                # This form was posted before with other values (edited after going back):
                # a fresh key lets the next submit create the tasks it now asks for.
                form.general_errors.append(
                    "This form was already submitted with other values. "
                    "Submit again to create these tasks too."
                )
                form.submit_key.data = secrets.token_urlsafe(24)
            else:
                form.take_errors(exc)
        except NotPermitted as exc:
            form.take_errors(exc)
        else:
            ids = [task.id for _, task in outcome.submitted]
            said = "Already submitted" if outcome.replayed else "Submitted"
            flash(
                {
                    "text": f"{said} {len(ids)} tasks.",
                    "links": [
                        (url_for("ui.task_detail", task_id=i), i) for i in ids[:LINKED_TASKS]
                    ],
                    "details": [f"and {len(ids) - LINKED_TASKS} more"]
                    if len(ids) > LINKED_TASKS
                    else [],
                },
                "success",
            )
            return redirect(
                url_for(
                    "ui.tasks",
                    client=form.client_id.data,
                    task_type=form.task_type.data,
                    capability=form.capability_required.data,
                )
            )
    return new_task_page(form, status=422)
