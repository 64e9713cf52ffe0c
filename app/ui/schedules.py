"""Schedules: the list, a form that previews the next runs as you type, one schedule's history."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Response, flash, redirect, request, url_for
from flask_login import login_required
from werkzeug.wrappers import Response as BaseResponse
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    Form,
    IntegerField,
    RadioField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import (
    DataRequired,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    Regexp,
    ValidationError,
)

from app.lib.clock import as_utc, utcnow
from app.lib.cron import CronError, load_zone
from app.models import (
    ExecutionStatus,
    MisfirePolicy,
    OperatorRole,
    OverlapPolicy,
    Schedule,
    ScheduleExecution,
    ScheduleStatus,
    Task,
)
from app.services import scheduling
from app.services.errors import Conflict, InvalidInput
from app.ui import bp
from app.ui.access import requires
from app.ui.auth import acting_operator, safe_next
from app.ui.filters import DATETIME_FORMATS, ChoiceField, labelled_errors, stripped, upper
from app.ui.forms import ServiceForm
from app.ui.htmx import render_region

PAGE_SIZE = 25
HISTORY_SIZE = 20
PREVIEW_COUNT = 10
REFRESH_SECONDS = 10
NAME_CHARS = 80
# Offered by the time zone input; any other IANA name may be typed.
COMMON_ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Dublin",
    "Europe/Lisbon",
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/Madrid",
    "Europe/Amsterdam",
    "Europe/Stockholm",
    "Europe/Warsaw",
    "Europe/Athens",
    "Europe/Istanbul",
    "Europe/Moscow",
    "Africa/Lagos",
    "Africa/Johannesburg",
    "Africa/Nairobi",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Asia/Seoul",
    "Australia/Perth",
    "Australia/Sydney",
    "Pacific/Auckland",
    "America/St_Johns",
    "America/Halifax",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "America/Mexico_City",
    "America/Bogota",
    "America/Sao_Paulo",
    "America/Argentina/Buenos_Aires",
)
KINDS = {"cron": "Cron", "interval": "Interval", "once": "Once"}
KIND_FIELDS = {"cron": "cron_expression", "interval": "interval_seconds", "once": "run_at"}
MISSING = {
    "cron": "type a cron expression",
    "interval": "type a number of seconds",
    "once": "pick a date and time",
}
TIMING_FIELDS = ("cron_expression", "interval_seconds", "run_at", "timezone")
MISFIRE_LABELS = {
    MisfirePolicy.FIRE_ONCE: "Fire once: one catch-up run",
    MisfirePolicy.SKIP: "Skip the missed runs",
    MisfirePolicy.FIRE_ALL: "Fire all (the latest 100)",
}
OVERLAP_LABELS = {
    OverlapPolicy.ALLOW: "Allow: always start the run",
    OverlapPolicy.SKIP: "Skip while the last run is unfinished",
}
TRIGGER_LABELS = {"schedule": "Scheduled", "catch_up": "Catch-up", "run_now": "Run now"}


def one_line(value: str | None) -> str | None:
    """Whitespace runs as single spaces: '0  9 *  * *' is '0 9 * * *'."""
    return " ".join(value.split()) if value else value


class TimingForm(Form):
    """When a schedule runs; also what the live preview reads from the query string."""

    kind = RadioField(
        "Runs", choices=[SelectChoice(k, label) for k, label in KINDS.items()], default="cron"
    )
    cron_expression = StringField(
        "Cron expression", filters=[one_line], validators=[Length(max=200)]
    )
    interval_seconds = IntegerField(
        "Every (seconds)", validators=[Optional(), NumberRange(min=1, max=366 * 86400)]
    )
    # Shown with seconds (the first format), so an unchanged time reads back unchanged.
    run_at = DateTimeLocalField(
        "Run at (in the time zone)", format=DATETIME_FORMATS[::-1], validators=[Optional()]
    )
    timezone = StringField(
        "Time zone", default="UTC", filters=[stripped], validators=[DataRequired(), Length(max=64)]
    )

    def validate(self, extra_validators: Any = None) -> bool:
        super().validate(extra_validators)
        # Only the chosen kind's input counts: the other two are hidden and ignored.
        for kind, name in KIND_FIELDS.items():
            if kind != self.kind.data:
                self[name].errors = []
        valid = not self.errors
        chosen = self[KIND_FIELDS.get(self.kind.data or "", "cron_expression")]
        if valid and chosen.data in (None, ""):
            chosen.errors = [MISSING[self.kind.data or "cron"]]
            valid = False
        return valid

    def run_at_utc(self) -> datetime | None:
        """The run_at input, read as a wall time in the chosen zone (CronError if unknown)."""
        if self.run_at.data is None:
            return None
        zone = load_zone(self.timezone.data or "UTC")
        return self.run_at.data.replace(tzinfo=zone).astimezone(UTC)

    def timing(self) -> dict[str, Any]:
        """The service's timing fields: the chosen kind's value, the other two None."""
        kind = self.kind.data
        return {
            "cron_expression": self.cron_expression.data if kind == "cron" else None,
            "interval_seconds": self.interval_seconds.data if kind == "interval" else None,
            "run_at": self.run_at_utc() if kind == "once" else None,
            "timezone": self.timezone.data or "UTC",
        }


def number(label: str, low: int, high: int, default: int) -> IntegerField:
    return IntegerField(
        label, default=default, validators=[InputRequired(), NumberRange(min=low, max=high)]
    )


class ScheduleForm(TimingForm, ServiceForm):
    """Create or edit a schedule: its timing, the task each run submits, its policies."""

    description = StringField("Description", filters=[stripped], validators=[Length(max=2000)])
    task_type = StringField(
        "Task type", filters=[stripped], validators=[DataRequired(), Length(max=200)]
    )
    capability_required = StringField(
        "Capability",
        filters=[stripped],
        validators=[
            DataRequired(),
            Length(max=200),
            Regexp(
                r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$",
                message="use letters, digits and . _ : / @ + - (e.g. report-v1)",
            ),
        ],
    )
    input_data = TextAreaField("Input data (JSON object)", default="{}")
    priority = number("Priority (1-10)", 1, 10, default=5)
    max_retries = number("Max retries", 0, 20, default=3)
    retry_policy = ChoiceField(
        "Retry policy",
        choices=[SelectChoice(p, p.capitalize()) for p in ("exponential", "linear", "fixed")],
        default="exponential",
    )
    timeout_seconds = number("Timeout (seconds)", 1, 3600, default=300)
    retry_on_timeout = BooleanField("Retry after a timeout too")
    expires_in_seconds = IntegerField(
        "Expires after (seconds, optional)",
        validators=[Optional(), NumberRange(min=1, max=30 * 86400)],
    )
    misfire_policy = ChoiceField(
        "After downtime",
        choices=[SelectChoice(k, label) for k, label in MISFIRE_LABELS.items()],
        default=MisfirePolicy.FIRE_ONCE,
    )
    overlap_policy = ChoiceField(
        "Overlapping runs",
        choices=[SelectChoice(k, label) for k, label in OVERLAP_LABELS.items()],
        default=OverlapPolicy.ALLOW,
    )

    @classmethod
    def of(cls, schedule: Schedule) -> ScheduleForm:
        """The edit form, filled in from the schedule (run_at shown in its zone)."""
        run_at = as_utc(schedule.run_at)
        local = (
            run_at.astimezone(zone_of(schedule.timezone)).replace(tzinfo=None) if run_at else None
        )
        data = {name: getattr(schedule, name) for name in scheduling.EDITABLE_FIELDS}
        return cls(
            formdata=None,
            data=data,
            kind=schedule.kind,
            run_at=local,
            input_data=json.dumps(schedule.input_data or {}, indent=2, ensure_ascii=False),
        )

    def validate_input_data(self, field: TextAreaField) -> None:
        try:
            value = json.loads(field.data or "{}")
        except ValueError as exc:
            raise ValidationError(f"not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValidationError(f"must be a JSON object {{...}}, got {type(value).__name__}")
        self.parsed_input = value

    def validate(self, extra_validators: Any = None) -> bool:
        if not super().validate(extra_validators):
            return False
        if self.kind.data == "once":
            try:
                self.run_at_utc()
            except CronError as exc:
                self.timezone.errors = [str(exc)]
                return False
        return True

    def fields(self) -> dict[str, Any]:
        """Every field, as create_schedule and update_schedule take them."""
        return {
            **self.timing(),
            "description": self.description.data or None,
            "task_type": self.task_type.data,
            "capability_required": self.capability_required.data,
            "input_data": self.parsed_input,
            "priority": self.priority.data,
            "max_retries": self.max_retries.data,
            "retry_policy": self.retry_policy.data,
            "timeout_seconds": self.timeout_seconds.data,
            "retry_on_timeout": bool(self.retry_on_timeout.data),
            "expires_in_seconds": self.expires_in_seconds.data,
            "misfire_policy": self.misfire_policy.data,
            "overlap_policy": self.overlap_policy.data,
        }

    def changes(self, schedule: Schedule) -> dict[str, Any]:
        """The fields to PUT: the timing only when it changed, since a new one counts from now."""
        fields = self.fields()
        run_at = as_utc(schedule.run_at)
        current = {
            "cron_expression": schedule.cron_expression,
            "interval_seconds": schedule.interval_seconds,
            "run_at": run_at.replace(microsecond=0) if run_at else None,  # the form has seconds
            "timezone": schedule.timezone,
        }
        if all(fields[name] == current[name] for name in TIMING_FIELDS):
            for name in TIMING_FIELDS:
                del fields[name]
        return fields


class NewScheduleForm(ScheduleForm):
    # Operators act as admins, so they say which client's schedule it is.
    client_id = StringField(
        "Client", filters=[stripped], validators=[DataRequired(), Length(max=200)]
    )

    def fields(self) -> dict[str, Any]:
        return {"client_id": self.client_id.data, **super().fields()}


class ScheduleFilterForm(Form):
    status = ChoiceField(
        "Status",
        choices=[
            SelectChoice("", "Any status"),
            *(SelectChoice(s, s.title()) for s in ScheduleStatus.VISIBLE),
        ],
        filters=[upper],
    )
    client = StringField("Client", filters=[stripped], validators=[Length(max=200)])
    page = IntegerField("Page", validators=[Optional(), NumberRange(min=1, max=100_000)])

    def query_args(self) -> dict[str, str]:
        return {name: str(f.data) for name, f in self._fields.items() if f.data and name != "page"}


# ---------------------------------------------------------------------------------------
# Next runs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """What the preview panel shows: runs in the zone, an error, or a prompt to type."""

    zone: str
    description: str | None = None
    runs: list[datetime] = field(default_factory=list)
    error: str | None = None
    error_field: str | None = None
    prompt: str | None = None


def zone_of(name: str) -> Any:
    """The schedule's zone; UTC for a name the tz database no longer knows."""
    try:
        return load_zone(name)
    except CronError:
        return UTC


def runs_in_zone(result: dict[str, Any], zone: str) -> list[datetime]:
    tz = load_zone(zone)
    return [datetime.fromisoformat(r).astimezone(tz) for r in result["next_runs_utc"]]


def preview_timing(form: TimingForm, now: datetime | None = None) -> Preview:
    """The next runs of what the form says, or why it says nothing valid yet."""
    zone = form.timezone.data or "UTC"
    kind = form.kind.data if form.kind.data in KINDS else "cron"
    chosen = KIND_FIELDS[kind]
    # Nothing typed yet (a number or date that did not parse counts as typed).
    if form[chosen].data in (None, "") and not form[chosen].process_errors:
        prompts = {
            "cron": "Type a cron expression to see its next runs.",
            "interval": "Type a number of seconds to see the next runs.",
            "once": "Pick a date and time to see when it runs.",
        }
        return Preview(zone, prompt=prompts[kind])
    for name in (chosen, "timezone"):
        if form[name].errors:
            return Preview(zone, error=form[name].errors[0], error_field=form[name].label.text)
    try:
        if kind == "once":
            when = form.run_at_utc()
            assert when is not None
            text = "once" if when > (now or utcnow()) else "once, but that time has passed"
            return Preview(zone, description=text, runs=[when.astimezone(load_zone(zone))])
        result = scheduling.preview(
            cron_expression=form.cron_expression.data if kind == "cron" else None,
            interval_seconds=form.interval_seconds.data if kind == "interval" else None,
            timezone=zone,
            count=PREVIEW_COUNT,
            start_at=now,
        )
    except CronError as exc:
        return Preview(zone, error=str(exc), error_field=form[exc.field].label.text)
    except InvalidInput as exc:
        name = (exc.details[0].get("field") if exc.details else None) or chosen
        message = exc.details[0].get("message") if exc.details else exc.message
        label = form[name].label.text if name in form._fields else name
        return Preview(zone, error=message, error_field=label)
    return Preview(zone, description=result["description"], runs=runs_in_zone(result, zone))


def upcoming_runs(schedule: Schedule, now: datetime | None = None) -> Preview:
    """A schedule's next runs from where it stands (an interval keeps its anchor)."""
    zone = schedule.timezone
    if schedule.status not in (ScheduleStatus.ACTIVE, ScheduleStatus.PAUSED):
        return Preview(zone, prompt=f"None: the schedule is {schedule.status.lower()}.")
    now = now or utcnow()
    if schedule.kind == "once":
        run_at = as_utc(schedule.run_at)
        runs = [run_at.astimezone(zone_of(zone))] if run_at and run_at > now else []
        return Preview(zone, description="once", runs=runs)
    start = now
    if schedule.interval_seconds:
        first = as_utc(schedule.next_run_at) if schedule.status == ScheduleStatus.ACTIVE else None
        first = first or scheduling.next_due(schedule, now)
        assert first is not None
        start = first - timedelta(seconds=schedule.interval_seconds)
    try:
        result = scheduling.preview(
            cron_expression=schedule.cron_expression,
            interval_seconds=schedule.interval_seconds,
            timezone=zone,
            count=PREVIEW_COUNT,
            start_at=start,
        )
    except InvalidInput as exc:
        return Preview(zone, error=exc.message)
    return Preview(zone, description=result["description"], runs=runs_in_zone(result, zone))


# ---------------------------------------------------------------------------------------
# Template filters
# ---------------------------------------------------------------------------------------


@bp.app_template_filter("in_zone")
def in_zone(value: datetime | None, zone: str) -> datetime | None:
    """A UTC time on the schedule's wall clock."""
    value = as_utc(value)
    return value.astimezone(zone_of(zone)) if value is not None else None


@bp.app_template_filter("wall_time")
def wall_time(value: datetime | None, weekday: bool = True) -> str:
    """'Mon 2026-03-02 09:00 GMT': a zoned time as its wall clock shows it."""
    if value is None:
        return "—"
    clock = "%H:%M:%S" if value.second else "%H:%M"
    text = value.strftime(f"{'%a ' if weekday else ''}%Y-%m-%d {clock}")
    name = value.tzname() or ""
    return f"{text} {name}" if name and name[0] not in "+-" else f"{text} {utc_offset(value)}"


@bp.app_template_filter("utc_clock")
def utc_clock(value: datetime) -> str:
    """The same instant in UTC, short: '14:00 UTC', with the weekday when the date differs."""
    moment = value.astimezone(UTC)
    clock = "%H:%M:%S" if moment.second else "%H:%M"
    day = "%a " if moment.date() != value.date() else ""
    return moment.strftime(f"{day}{clock} UTC")


@bp.app_template_filter("utc_offset")
def utc_offset(value: datetime | None) -> str:
    """'UTC+01:00'."""
    offset = value.utcoffset() if value is not None else None
    if offset is None:
        return ""
    sign, minutes = ("+" if offset >= timedelta(0) else "-"), abs(int(offset.total_seconds())) // 60
    return f"UTC{sign}{minutes // 60:02}:{minutes % 60:02}"


@bp.app_template_filter("timing")
def timing(schedule: Schedule) -> str:
    """'at 09:00 on Mon-Fri', 'every 300 s', 'once': the service's words for the timing."""
    try:
        return scheduling.schedule_dict(schedule, scheduling.RunCounts())["schedule_description"]
    except (CronError, InvalidInput):
        return schedule.cron_expression or "—"


@bp.app_template_filter("sentence")
def sentence(text: str | None) -> str:
    """'at 09:00 on Mon-Fri' as 'At 09:00 on Mon-Fri' (capitalize would lower the rest)."""
    return text[:1].upper() + text[1:] if text else ""


@bp.app_template_filter("lateness")
def lateness(execution: ScheduleExecution) -> str:
    """How long after its due time a run fired: 'on time', '+0.4 s', '+3 min'."""
    fired, due = as_utc(execution.fired_at), as_utc(execution.scheduled_for)
    assert fired is not None and due is not None
    seconds = (fired - due).total_seconds()
    if seconds < 0.05:
        return "on time"
    if seconds < 60:
        return f"+{seconds:.1f} s"
    size, unit = next((s, u) for s, u in ((86400, "d"), (3600, "h"), (60, "min")) if seconds >= s)
    return f"+{int(seconds // size)} {unit}"


@bp.app_template_global("trigger_label")
def trigger_label(trigger: str) -> str:
    return TRIGGER_LABELS.get(trigger, trigger)


@bp.app_template_filter("execution_status")
def execution_status(task: Task | None) -> str:
    """PENDING, COMPLETED, FAILED (its task failed, was cancelled or expired) or SKIPPED."""
    return ExecutionStatus.of(task)


@bp.app_template_filter("schedule_name")
def schedule_name(schedule: Schedule) -> str:
    """The description's first line (cut short), else the task type."""
    text = (schedule.description or "").strip().splitlines()
    name = text[0] if text else schedule.task_type
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1].rstrip() + "…"


@bp.app_template_filter("misfire_label")
def misfire_label(policy: str) -> str:
    return MISFIRE_LABELS.get(policy, policy)


@bp.app_template_filter("overlap_label")
def overlap_label(policy: str) -> str:
    return OVERLAP_LABELS.get(policy, policy)


# ---------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------


def back_to(schedule_id: str) -> str:
    """Where an action returns: the page its button was on, else the schedule."""
    return safe_next(request.form.get("next")) or url_for(
        "ui.schedule_detail", schedule_id=schedule_id
    )


def form_page(form: ScheduleForm, schedule: Schedule | None = None) -> Response:
    failed = form.is_submitted() and form.failed
    return render_region(
        "ui/schedules/form.html",
        "ui/schedules/form.html",
        status=422 if failed else 200,
        form=form,
        schedule=schedule,
        preview=preview_timing(form),
        zones=COMMON_ZONES,
        preview_count=PREVIEW_COUNT,
        errors=labelled_errors(form),
    )


@bp.get("/schedules")
@login_required
def schedules() -> Response:
    form = ScheduleFilterForm(request.args)
    page = scheduling.SchedulePage(schedules=[], total=0)
    number = 1
    if form.validate():
        number = form.page.data or 1
        page = scheduling.list_schedules(
            acting_operator(),
            client_id=form.client.data or None,
            status=form.status.data or None,
            limit=PAGE_SIZE,
            offset=(number - 1) * PAGE_SIZE,
        )
    errors = labelled_errors(form)
    return render_region(
        "ui/schedules/index.html",
        "ui/schedules/_results.html",
        status=422 if errors else 200,
        form=form,
        page=page,
        number=number,
        pages=max(1, -(-page.total // PAGE_SIZE)),
        errors=errors,
        filters=form.query_args() if not errors else {},
        refresh_seconds=REFRESH_SECONDS,
    )


@bp.route("/schedules/new", methods=["GET", "POST"])
@login_required
@requires(OperatorRole.OPERATOR)
def new_schedule() -> BaseResponse:
    form = NewScheduleForm()
    if form.validate_on_submit():
        try:
            schedule = scheduling.create_schedule(acting_operator(), form.fields())
        except InvalidInput as exc:
            form.take_errors(exc)
        else:
            flash("Schedule created.", "success")
            return redirect(url_for("ui.schedule_detail", schedule_id=schedule.id))
    return form_page(form)


@bp.route("/schedules/<schedule_id>/edit", methods=["GET", "POST"])
@login_required
@requires(OperatorRole.OPERATOR)
def edit_schedule(schedule_id: str) -> BaseResponse:
    schedule = scheduling.visible_schedule(acting_operator(), schedule_id)
    form = ScheduleForm() if request.method == "POST" else ScheduleForm.of(schedule)
    if form.validate_on_submit():
        try:
            scheduling.update_schedule(acting_operator(), schedule_id, form.changes(schedule))
        except InvalidInput as exc:
            form.take_errors(exc)
        else:
            flash("Schedule saved.", "success")
            return redirect(url_for("ui.schedule_detail", schedule_id=schedule_id))
    return form_page(form, schedule)


@bp.get("/schedules/preview")
@login_required
def schedule_preview() -> Response:
    form = TimingForm(request.args)
    form.validate()
    # 200 even when the timing is invalid: saying why is the answer to "when would it run?",
    # and a 4xx on each keystroke would fill the browser console with errors.
    return render_region(
        "ui/schedules/preview.html", "ui/schedules/_preview.html", preview=preview_timing(form)
    )


@bp.get("/schedules/<schedule_id>")
@login_required
def schedule_detail(schedule_id: str) -> Response:
    principal = acting_operator()
    schedule = scheduling.visible_schedule(principal, schedule_id)
    number = max(1, min(request.args.get("page", 1, type=int), 100_000))
    history = scheduling.list_executions(
        principal, schedule_id, limit=HISTORY_SIZE, offset=(number - 1) * HISTORY_SIZE
    )
    counts = scheduling.run_counts([schedule_id]).get(schedule_id) or scheduling.RunCounts()
    return render_region(
        "ui/schedules/detail.html",
        "ui/schedules/_history.html",
        schedule=schedule,
        counts=counts,
        history=history,
        number=number,
        pages=max(1, -(-history.total // HISTORY_SIZE)),
        upcoming=upcoming_runs(schedule),
        refresh_seconds=REFRESH_SECONDS,
    )


@bp.post("/schedules/<schedule_id>/<any(pause, resume):action>")
@login_required
def pause_schedule(schedule_id: str, action: str) -> BaseResponse:
    try:
        schedule = scheduling.pause_schedule(acting_operator(), schedule_id, action == "pause")
    except Conflict as exc:
        flash(f"Not {action}d: {exc.message}.", "error")
    else:
        if schedule.status == ScheduleStatus.PAUSED:
            flash("Paused: it will not run until you resume it.", "success")
        else:
            when = wall_time(in_zone(schedule.next_run_at, schedule.timezone))
            next_run = f"next run {when}" if schedule.next_run_at else "no run is left"
            flash(f"Resumed: {next_run}. Runs missed while paused are not made up.", "success")
    return redirect(back_to(schedule_id))


@bp.post("/schedules/<schedule_id>/run-now")
@login_required
def run_schedule_now(schedule_id: str) -> BaseResponse:
    _, task = scheduling.run_now(acting_operator(), schedule_id)
    flash(f"Run started: task {task.id} is waiting for an agent.", "success")
    return redirect(back_to(schedule_id))


@bp.post("/schedules/<schedule_id>/delete")
@login_required
def delete_schedule(schedule_id: str) -> BaseResponse:
    scheduling.delete_schedule(acting_operator(), schedule_id)
    flash("Schedule deleted: it will not run again. Its past runs and their tasks stay.", "success")
    return redirect(url_for("ui.schedules"))
