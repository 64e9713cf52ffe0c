"""The filter forms of the task lists, read from the query string (a GET form changes nothing).

The same fields also travel as hidden inputs in the dead-letter view's POST forms, where
they say which tasks a bulk action applies to and where to come back to afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from wtforms import DateTimeLocalField, Form, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional, ValidationError

from app.models import TaskStatus
from app.services import task_search

PRIORITIES = range(10, 0, -1)
# What a datetime-local input sends, with or without seconds; read as UTC.
DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]


def upper(value: str | None) -> str | None:
    return value.strip().upper() if value else value


def stripped(value: str | None) -> str | None:
    return value.strip() if value else value


def labelled_errors(form: Form) -> dict[str, list[str]]:
    """A form's errors keyed by each field's label, for a callout or a flash message."""
    return {form[name].label.text: list(messages) for name, messages in form.errors.items()}


def describe_errors(form: Form) -> str:
    """'Priority: '11' is not one of 10, 9, …; Client: …' in one line."""
    return "; ".join(
        f"{label}: {', '.join(messages)}" for label, messages in labelled_errors(form).items()
    )


class ChoiceField(SelectField):
    """A select whose error names the bad value and the allowed ones."""

    def pre_validate(self, form: Form) -> None:
        allowed = [choice.value for choice in self.choices if choice.value]  # type: ignore[union-attr]
        if self.data and self.data not in allowed:
            raise ValidationError(f"{self.data!r} is not one of {', '.join(allowed)}")


class UTCDateTimeField(DateTimeLocalField):
    """A datetime-local input read as UTC, the time zone the console shows."""

    def __init__(self, label: str, **kwargs: Any) -> None:
        super().__init__(label, format=DATETIME_FORMATS, validators=[Optional()], **kwargs)

    def process_formdata(self, valuelist: list[Any]) -> None:
        if not valuelist or not valuelist[0].strip():
            self.data = None
            return
        try:
            super().process_formdata([valuelist[0].strip()])
        except ValueError:
            raise ValueError(
                f"{valuelist[0]!r} is not a date and time like 2026-03-01T14:30"
            ) from None
        if self.data is not None:
            self.data = self.data.replace(tzinfo=UTC)

    def query_value(self) -> str:
        """The value as the input and the query string write it."""
        value: datetime | None = self.data
        if value is None:
            return ""
        return value.strftime(DATETIME_FORMATS[1] if value.second else DATETIME_FORMATS[0])


class TaskFilterFields(Form):
    """What every task list may be narrowed by, besides status."""

    client = StringField("Client", filters=[stripped], validators=[Length(max=200)])
    capability = StringField("Capability", filters=[stripped], validators=[Length(max=200)])
    agent = StringField("Agent id", filters=[stripped], validators=[Length(max=40)])
    priority = ChoiceField(
        "Priority", choices=[SelectChoice("", "Any"), *(SelectChoice(str(p)) for p in PRIORITIES)]
    )
    created_from = UTCDateTimeField("Created from (UTC)")
    created_before = UTCDateTimeField("Created before (UTC)")

    def validate_created_before(self, field: UTCDateTimeField) -> None:
        start = self.created_from.data
        if field.data is not None and start is not None and field.data <= start:
            raise ValidationError("must be later than Created from")

    def to_filters(self) -> task_search.TaskFilters:
        return task_search.TaskFilters(
            status=self.status_filter(),
            client_id=self.client.data or None,
            capability=self.capability.data or None,
            agent_id=self.agent.data or None,
            priority=int(self.priority.data) if self.priority.data else None,
            created_after=self.created_from.data,
            created_before=self.created_before.data,
        )

    def status_filter(self) -> str | None:
        return None

    def query_args(self) -> dict[str, str]:
        """The non-empty filters, for links that keep them (paging, refreshing, actions)."""
        args = {}
        for name, field in self._fields.items():
            value = field.query_value() if isinstance(field, UTCDateTimeField) else field.data
            if value:
                args[name] = str(value)
        return args


class TaskFilterForm(TaskFilterFields):
    """The tasks list: any status, a text search, where a task came from, and an order."""

    q = StringField("Search input, result, error", filters=[stripped], validators=[Length(max=200)])
    status = ChoiceField(
        "Status",
        choices=[
            SelectChoice("", "Any status"),
            *(SelectChoice(s, s.title()) for s in TaskStatus.ALL),
        ],
        filters=[upper],
    )
    task_type = StringField("Task type", filters=[stripped], validators=[Length(max=200)])
    template = StringField("Template id", filters=[stripped], validators=[Length(max=40)])
    chain = StringField("Chain id", filters=[stripped], validators=[Length(max=40)])
    # The default order is the empty choice, so a pushed URL leaves it out.
    sort = ChoiceField(
        "Sort",
        choices=[
            SelectChoice("" if name == task_search.DEFAULT_SORT else name, order.label)
            for name, order in task_search.SORTS.items()
        ],
        filters=[lambda v: "" if v == task_search.DEFAULT_SORT else v],
    )

    def status_filter(self) -> str | None:
        return self.status.data or None

    def to_filters(self) -> task_search.TaskFilters:
        filters = super().to_filters()
        filters.text = self.q.data or None
        filters.task_type = self.task_type.data or None
        filters.template_id = self.template.data or None
        filters.chain_id = self.chain.data or None
        return filters

    def sort_order(self) -> str:
        return self.sort.data or task_search.DEFAULT_SORT


class DeadLetterFilterForm(TaskFilterFields):
    """The dead-letter view: its status is always FAILED."""
