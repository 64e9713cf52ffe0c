"""The audit log, for admins: filtered, keyset-paged, newest first; and its CSV export."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Response, request, stream_with_context
from flask_login import login_required
from wtforms import Form, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, ValidationError

from app.extensions import db
from app.lib.clock import utcnow
from app.models import AuditOutcome, OperatorRole
from app.services import audit
from app.services.errors import InvalidInput
from app.ui import bp
from app.ui.access import requires
from app.ui.filters import ChoiceField, UTCDateTimeField, labelled_errors, stripped
from app.ui.htmx import render_region

PAGE_SIZE = 50
PREFIX_HINT = "End with * for a prefix"


class AuditFilterForm(Form):
    """What the audit log may be narrowed by, read from the query string."""

    actor = StringField("Actor", filters=[stripped], validators=[Length(max=400)])
    action = StringField("Action", filters=[stripped], validators=[Length(max=100)])
    target_type = StringField("Target type", filters=[stripped], validators=[Length(max=40)])
    target_id = StringField("Target id", filters=[stripped], validators=[Length(max=200)])
    outcome = ChoiceField(
        "Outcome",
        choices=[SelectChoice("", "Any"), *(SelectChoice(o, o.title()) for o in AuditOutcome.ALL)],
    )
    since = UTCDateTimeField("From (UTC)")
    until = UTCDateTimeField("Before (UTC)")
    address = StringField("Address", filters=[stripped], validators=[Length(max=64)])

    def validate_until(self, field: UTCDateTimeField) -> None:
        start = self.since.data
        if field.data is not None and start is not None and field.data <= start:
            raise ValidationError("must be later than From")

    def to_filters(self) -> audit.AuditFilters:
        return audit.AuditFilters(
            actor=self.actor.data or None,
            action=self.action.data or None,
            target_type=self.target_type.data or None,
            target_id=self.target_id.data or None,
            outcome=self.outcome.data or None,
            since=self.since.data,
            until=self.until.data,
            address=self.address.data or None,
        )

    def query_args(self) -> dict[str, str]:
        """The non-empty filters, for links that keep them (paging, the export)."""
        args = {}
        for name, field in self._fields.items():
            value = field.query_value() if isinstance(field, UTCDateTimeField) else field.data
            if value:
                args[name] = str(value)
        return args


OUTCOME_BADGES = {
    AuditOutcome.OK: "completed",
    AuditOutcome.REFUSED: "pending",
    AuditOutcome.FAILED: "failed",
}


@bp.get("/audit")
@login_required
@requires(OperatorRole.ADMIN)
def audit_log() -> Response:
    form = AuditFilterForm(request.args)
    cursor = request.args.get("cursor") or None
    page = audit.AuditPage(events=[], next_cursor=None)
    valid = form.validate()
    errors = labelled_errors(form)
    if valid:
        try:
            page = audit.query(form.to_filters(), limit=PAGE_SIZE, cursor=cursor)
        except InvalidInput:
            errors = {"Page": ["this paging link is not valid; start again from the newest"]}
    return render_region(
        "ui/audit/index.html",
        "ui/audit/_results.html",
        status=422 if errors else 200,
        form=form,
        page=page,
        cursor=cursor,
        errors=errors,
        filters=form.query_args() if valid else {},
        badges=OUTCOME_BADGES,
        prefix_hint=PREFIX_HINT,
    )


@bp.get("/audit.csv")
@login_required
@requires(OperatorRole.ADMIN)
def audit_csv() -> Response:
    """Every row the filters match, newest first, streamed as CSV."""
    form = AuditFilterForm(request.args)
    if not form.validate():
        message = "; ".join(
            f"{label}: {', '.join(messages)}" for label, messages in labelled_errors(form).items()
        )
        return Response(f"These filters cannot be applied: {message}\n", 422, mimetype="text/plain")
    filters = form.to_filters()

    def rows() -> Iterator[str]:
        try:
            yield from audit.export_csv(filters)
        finally:
            # The rows stream after the view returned: give the connection (on SQLite, the
            # database lock a transaction holds) back as soon as the last one is sent.
            db.session.remove()

    filename = f"ains-audit-{utcnow():%Y%m%dT%H%M%SZ}.csv"
    return Response(
        stream_with_context(rows()),
        mimetype="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "private, no-store",
        },
    )
