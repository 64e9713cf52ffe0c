"""The dead-letter view: FAILED tasks, requeued or cancelled by selection or by filter."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Response, flash, redirect, request, url_for
from flask_login import login_required
from flask_wtf import FlaskForm
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response as BaseResponse
from wtforms import IntegerField, SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, NumberRange, Optional

from app.extensions import db
from app.lib.clock import as_utc, isoformat, utcnow
from app.services import console
from app.services.bulk import BulkInterrupted
from app.services.dead_letter import MAX_PER_CALL, BulkResult
from app.services.errors import InvalidInput
from app.ui import bp
from app.ui.auth import acting_operator
from app.ui.filters import DeadLetterFilterForm, describe_errors, labelled_errors, stripped
from app.ui.htmx import render_region

PAGE_SIZE = 25
# Skipped tasks named in a notice; the rest are counted (the notice lives in the cookie).
NAMED_SKIPS = 5
ID_CHARS = 60
DONE = {"requeue": "Requeued", "cancel": "Cancelled"}
# How far ahead of this server's clock a confirmation's time may be (another web process).
AS_OF_SKEW = timedelta(seconds=60)
STOPPED = "Stopped by an error; the tasks not counted here were not changed. Try again."


class BulkForm(FlaskForm):
    """A bulk action's target: the ticked rows, or every task the filter matches."""

    scope = SelectField("Apply to", choices=[SelectChoice("selection"), SelectChoice("filter")])
    task_ids = SelectMultipleField("Tasks", validate_choice=False)
    # The count the operator saw on the confirm step: a filter run never acts on more.
    confirmed = IntegerField("Confirmed count", validators=[Optional(), NumberRange(min=0)])
    # When the confirm step counted (ISO 8601): tasks created later are left alone.
    as_of = StringField("Confirmed at", validators=[Optional(), Length(max=64)])
    reason = StringField("Reason (optional)", filters=[stripped], validators=[Length(max=2000)])
    # A filter run acts on at most this many tasks.
    max_per_call = MAX_PER_CALL

    def target(self) -> dict[str, Any]:
        """What the form asks for, or InvalidInput saying what is missing."""
        if self.scope.data == "selection":
            if not self.task_ids.data:
                raise InvalidInput("Tick at least one task first.")
            return {"task_ids": self.task_ids.data}
        if self.confirmed.data is None:
            raise InvalidInput("Confirm how many tasks the filter matches first.")
        return {"limit": min(self.confirmed.data, self.max_per_call), "as_of": self.confirmed_at()}

    def confirmed_at(self) -> datetime | None:
        """The confirm step's time, or None from a form without one (then: now)."""
        if not self.as_of.data:
            return None
        try:
            value = as_utc(datetime.fromisoformat(self.as_of.data))
        except ValueError:
            value = None
        if value is None or value > utcnow() + AS_OF_SKEW:
            raise InvalidInput("Nothing done. This confirmation is not valid; open it again.")
        return value


def confirmation_time() -> str:
    """Now, for a confirm step's ``as_of``: read it before counting, so the action never
    reaches a task the count could not have seen."""
    return isoformat(utcnow()) or ""


def skip_text(reason: str) -> str:
    """A skip reason as the end of a sentence: 'is COMPLETED, not FAILED', 'was not found'."""
    return reason if reason.startswith("is ") else f"was {reason}"


def notice_with_skips(
    result: BulkResult, text: str, *, by_filter: bool, kind: str = ""
) -> dict[str, Any]:
    """A bulk action's flash message: ``text`` (what was done), then what was skipped and
    how many ``kind`` tasks the filter still matches."""
    details = [
        f"{s['task_id'][:ID_CHARS]} {skip_text(s['reason'])}" for s in result.skipped[:NAMED_SKIPS]
    ]
    if len(result.skipped) > NAMED_SKIPS:
        details.append(f"and {len(result.skipped) - NAMED_SKIPS} more skipped")
    if result.skipped:
        text += f" Skipped {len(result.skipped)}:"
    if by_filter and result.remaining:
        left = result.remaining
        more = f"{left} more {kind}task{'s' if left != 1 else ''}"
        verb = "matches" if left == 1 else "match"
        details.append(f"{more} {verb} the filter; run the action again to continue.")
    return {"text": text, "details": details}


def notice(result: BulkResult, *, by_filter: bool) -> dict[str, Any]:
    """The flash message of a dead-letter bulk action: what was done, skipped, and left."""
    done = len(result.done)
    text = f"{DONE[result.action]} {done} task{'' if done == 1 else 's'}."
    return notice_with_skips(result, text, by_filter=by_filter, kind="failed ")


def stopped(message: dict[str, Any]) -> dict[str, Any]:
    """A bulk notice for a run an error stopped after some chunks were committed."""
    return {**message, "details": [STOPPED, *message["details"]]}


@bp.app_context_processor
def dead_letter_badge() -> dict[str, Any]:
    """``dead_letter_count()`` for the nav; called only where a page shows the nav."""

    def count() -> int | None:
        try:
            return console.count_dead_letters(acting_operator())
        except SQLAlchemyError:
            # The badge is a nicety: an error page about a broken database must still render.
            db.session.rollback()
            return None

    return {"dead_letter_count": count}


@bp.get("/dead-letter")
@login_required
def dead_letter() -> Response:
    form = DeadLetterFilterForm(request.args)
    cursor = request.args.get("cursor") or None
    page = console.DeadLetterPage(tasks=[], next_cursor=None, matching=0)
    valid = form.validate()
    errors = labelled_errors(form)
    if valid:
        try:
            page = console.dead_letter_page(
                acting_operator(), form.to_filters(), limit=PAGE_SIZE, cursor=cursor
            )
        except InvalidInput:
            errors = {"Page": ["this paging link is not valid; start again from the newest"]}
    return render_region(
        "ui/dead_letter/index.html",
        "ui/dead_letter/_results.html",
        status=422 if errors else 200,
        form=form,
        page=page,
        cursor=cursor,
        errors=errors,
        filters=form.query_args() if valid else {},
    )


@bp.get("/dead-letter/confirm/<any(requeue, cancel):action>")
@login_required
def dead_letter_confirm(action: str) -> BaseResponse:
    form = DeadLetterFilterForm(request.args)
    if not form.validate():
        return redirect(url_for("ui.dead_letter", **request.args))
    return render_region(
        "ui/dead_letter/confirm.html",
        "ui/dead_letter/_confirm.html",
        action=action,
        as_of=confirmation_time(),
        matching=console.count_dead_letters(acting_operator(), form.to_filters()),
        filters=form.query_args(),
        bulk_form=BulkForm(formdata=None),
        max_per_call=MAX_PER_CALL,
    )


@bp.post("/dead-letter/<any(requeue, cancel):action>")
@login_required
def dead_letter_action(action: str) -> BaseResponse:
    form, filters = BulkForm(), DeadLetterFilterForm(request.form)
    back = url_for("ui.dead_letter", **(filters.query_args() if filters.validate() else {}))
    try:
        if not form.validate() or filters.errors:
            raise InvalidInput(f"Nothing done. {describe_errors(form) or describe_errors(filters)}")
        target = form.target()
        if form.scope.data == "filter":
            target["filters"] = filters.to_filters()
        result = console.dead_letter_action(
            acting_operator(), action, reason=form.reason.data or None, **target
        )
    except InvalidInput as exc:
        flash(exc.message, "error")
    except BulkInterrupted as exc:
        flash(stopped(notice(exc.result, by_filter=form.scope.data == "filter")), "error")
    else:
        category = "success" if result.done else "warning" if result.skipped else "info"
        flash(notice(result, by_filter=form.scope.data == "filter"), category)
    return redirect(back)
