"""Tasks: a filtered, keyset-paged list; one task with its attempts, cancelled or requeued."""

from __future__ import annotations

from flask import Response, flash, redirect, request, url_for
from flask_login import login_required
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as BaseResponse
from wtforms import StringField
from wtforms.validators import Length

from app.models import Task
from app.services import cancellation, console, dead_letter, graph, task_search
from app.services.errors import Conflict, InvalidInput
from app.services.settings import settings
from app.ui import bp
from app.ui.auth import acting_operator
from app.ui.dead_letter import skip_text
from app.ui.filters import PRIORITIES, TaskFilterForm, describe_errors, labelled_errors, stripped
from app.ui.htmx import render_region
from app.ui.task_graph import draw

PAGE_SIZE = 25
REFRESH_SECONDS = 5


class CancelForm(FlaskForm):
    reason = StringField("Reason (optional)", filters=[stripped], validators=[Length(max=2000)])


@bp.app_template_test("cancel_pending")
def cancel_pending(task: Task) -> bool:
    """``{% if task is cancel_pending %}``: running, asked to stop, not confirmed yet."""
    return cancellation.is_cancel_pending(task)


@bp.get("/tasks")
@login_required
def tasks() -> Response:
    form = TaskFilterForm(request.args)
    cursor = request.args.get("cursor") or None
    page = task_search.TaskPage(tasks=[], next_cursor=None)
    valid = form.validate()
    errors = labelled_errors(form)
    if valid:
        try:
            page = task_search.list_tasks(
                acting_operator(),
                form.to_filters(),
                limit=PAGE_SIZE,
                cursor=cursor,
                sort=form.sort_order(),
            )
        except InvalidInput:
            errors = {"Page": ["this paging link is not valid; start again from the first page"]}
    return render_region(
        "ui/tasks/index.html",
        "ui/tasks/_results.html",
        status=422 if errors else 200,
        form=form,
        page=page,
        cursor=cursor,
        errors=errors,
        filters=form.query_args() if valid else {},
        refresh_seconds=REFRESH_SECONDS,
        priorities=PRIORITIES,
        sort_label=task_search.SORTS[form.sort_order()].label if valid else "",
    )


@bp.get("/tasks/<task_id>")
@login_required
def task_detail(task_id: str) -> Response:
    principal = acting_operator()
    story = console.task_story(principal, task_id)
    links = graph.task_links(principal, story.task)
    return render_region(
        "ui/tasks/detail.html",
        "ui/tasks/_detail_body.html",
        story=story,
        task=story.task,
        links=links,
        drawing=draw(links.graph) if links.has_graph else None,
        cancel_form=CancelForm(),
        refresh_seconds=REFRESH_SECONDS,
    )


@bp.post("/tasks/<task_id>/cancel")
@login_required
def cancel_task(task_id: str) -> BaseResponse:
    form = CancelForm()
    if not form.validate():
        flash(f"Not cancelled: {describe_errors(form)}.", "error")
        return redirect(url_for("ui.task_detail", task_id=task_id))
    try:
        task = cancellation.cancel_task(acting_operator(), task_id, form.reason.data or None)
    except Conflict as exc:
        flash(f"Not cancelled: {exc.message}.", "error")
    else:
        if cancellation.is_cancel_pending(task):
            flash(
                f"Asked agent {task.assigned_agent_id} to stop. The task ends CANCELLED when the "
                f"agent confirms, or by itself {settings.cancel_grace_seconds} s after the "
                "request.",
                "info",
            )
        else:
            flash("Task cancelled.", "success")
    return redirect(url_for("ui.task_detail", task_id=task_id))


@bp.post("/tasks/<task_id>/requeue")
@login_required
def requeue_task(task_id: str) -> BaseResponse:
    result = dead_letter.requeue(acting_operator(), task_ids=[task_id])
    if result.done:
        flash("Requeued: the task is pending again, with its retries reset.", "success")
    else:
        flash(f"Not requeued: the task {skip_text(result.skipped[0]['reason'])}.", "error")
    return redirect(url_for("ui.task_detail", task_id=task_id))
