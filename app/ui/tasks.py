"""Tasks: a filtered, keyset-paged list and one task with its timeline."""

from __future__ import annotations

from flask import Response, request
from flask_login import login_required
from wtforms import Form, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, ValidationError

from app.models import TaskStatus
from app.services import task_search
from app.services.errors import InvalidInput
from app.ui import bp
from app.ui.auth import acting_operator
from app.ui.htmx import render_region

PAGE_SIZE = 25
REFRESH_SECONDS = 5
PRIORITIES = range(10, 0, -1)


def upper(value: str | None) -> str | None:
    return value.strip().upper() if value else value


def stripped(value: str | None) -> str | None:
    return value.strip() if value else value


class ChoiceField(SelectField):
    """A select whose error names the bad value and the allowed ones."""

    def pre_validate(self, form: Form) -> None:
        allowed = [choice.value for choice in self.choices if choice.value]  # type: ignore[union-attr]
        if self.data and self.data not in allowed:
            raise ValidationError(f"{self.data!r} is not one of {', '.join(allowed)}")


class TaskFilterForm(Form):
    """The filters of the list, read from the query string (a GET form changes nothing)."""

    status = ChoiceField(
        "Status",
        choices=[
            SelectChoice("", "Any status"),
            *(SelectChoice(s, s.title()) for s in TaskStatus.ALL),
        ],
        filters=[upper],
    )
    client = StringField("Client", filters=[stripped], validators=[Length(max=200)])
    capability = StringField("Capability", filters=[stripped], validators=[Length(max=200)])
    agent = StringField("Agent id", filters=[stripped], validators=[Length(max=40)])
    priority = ChoiceField(
        "Priority", choices=[SelectChoice("", "Any"), *(SelectChoice(str(p)) for p in PRIORITIES)]
    )

    def to_filters(self) -> task_search.TaskFilters:
        return task_search.TaskFilters(
            status=self.status.data or None,
            client_id=self.client.data or None,
            capability=self.capability.data or None,
            agent_id=self.agent.data or None,
            priority=int(self.priority.data) if self.priority.data else None,
        )

    def query_args(self) -> dict[str, str]:
        """The non-empty filters, for links that keep them (paging, refreshing)."""
        return {name: str(field.data) for name, field in self._fields.items() if field.data}


@bp.get("/tasks")
@login_required
def tasks() -> Response:
    form = TaskFilterForm(request.args)
    cursor = request.args.get("cursor") or None
    page = task_search.TaskPage(tasks=[], next_cursor=None)
    valid = form.validate()
    errors = {form[name].label.text: messages for name, messages in form.errors.items()}
    if valid:
        try:
            page = task_search.list_tasks(
                acting_operator(), form.to_filters(), limit=PAGE_SIZE, cursor=cursor
            )
        except InvalidInput:
            errors = {"Page": ["this paging link is not valid; start again from the newest"]}
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
    )


@bp.get("/tasks/<task_id>")
@login_required
def task_detail(task_id: str) -> Response:
    task, events = task_search.task_with_events(acting_operator(), task_id)
    return render_region(
        "ui/tasks/detail.html",
        "ui/tasks/_detail_body.html",
        task=task,
        events=events,
        refresh_seconds=REFRESH_SECONDS,
    )
