"""API keys, for admins: the list with a form to create one, and one key to rotate or revoke.

A key's secret is shown once, on the key's page the browser lands on after it was made
(create or rotate). It travels there sealed in the session cookie, since the page is reached
by a redirect; the page takes it out of the session and asks not to be kept. Every page and
action here needs the admin role, reads included: prefixes, holders and last use are for
admins only.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Response, current_app, flash, redirect, request, url_for
from flask_login import login_required
from werkzeug.wrappers import Response as BaseResponse
from wtforms import Form, IntegerField, RadioField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, NumberRange, Optional, ValidationError

from app.lib.clock import utcnow
from app.models import ApiKey, OperatorRole, Role
from app.services import auth
from app.services.errors import Conflict, InvalidInput
from app.ui import bp, shown_once
from app.ui.access import requires
from app.ui.auth import acting_operator
from app.ui.filters import ChoiceField, UTCDateTimeField, labelled_errors, stripped
from app.ui.forms import ServiceForm
from app.ui.htmx import render_region, wants_fragment

PAGE_SIZE = 50
# The session slot of a new key shown once on its page (app/ui/shown_once.py).
SHOWN_KEY = "api_key_shown"
ROLE_HINTS = {
    Role.ADMIN: "everything, including managing keys",
    Role.CLIENT: "submits and sees one client's tasks, chains, templates, schedules, webhooks",
    Role.AGENT: "registers agents and acts for the agents it registered",
}
STATUS_LABELS = {
    auth.KeyStatus.ACTIVE: "Active",
    auth.KeyStatus.EXPIRING: "Expiring",
    auth.KeyStatus.EXPIRED: "Expired",
    auth.KeyStatus.REVOKED: "Revoked",
}
EXPIRY_CHOICES = [
    SelectChoice("", "Never"),
    SelectChoice("30", "In 30 days"),
    SelectChoice("90", "In 90 days"),
    SelectChoice("365", "In a year"),
    SelectChoice("date", "On a date…"),
]
GRACE_CHOICES = {
    0: "None: the old key stops now",
    3600: "1 hour",
    86400: "1 day",
    7 * 86400: "7 days",
    30 * 86400: "30 days",
}


# ---------------------------------------------------------------------------------------
# Forms
# ---------------------------------------------------------------------------------------


class KeyFilterForm(Form):
    """The list's filters, read from the query string."""

    status = ChoiceField(
        "Status",
        choices=[
            SelectChoice("", "Any"),
            *(SelectChoice(s, STATUS_LABELS[s]) for s in STATUS_LABELS),
        ],
    )
    role = ChoiceField(
        "Role", choices=[SelectChoice("", "Any"), *(SelectChoice(r, r) for r in Role.ALL)]
    )
    client_id = StringField("Client id", filters=[stripped], validators=[Length(max=200)])
    page = IntegerField("Page", validators=[Optional(), NumberRange(min=1, max=100_000)])

    def query_args(self) -> dict[str, str]:
        return {name: str(f.data) for name, f in self._fields.items() if f.data and name != "page"}

    def to_filters(self) -> auth.KeyFilters:
        return auth.KeyFilters(
            status=self.status.data or None,
            role=self.role.data or None,
            client_id=self.client_id.data or None,
        )


class NewKeyForm(ServiceForm):
    """Create a key. Ids of their own: the filter form on the same page has a role field."""

    name = StringField(
        "Name",
        filters=[stripped],
        validators=[
            InputRequired(message="name the key after who holds it"),
            Length(max=auth.MAX_KEY_NAME_LENGTH),
        ],
        id="new-name",
    )
    role = RadioField(
        "Role",
        choices=[SelectChoice(r, r) for r in Role.ALL],
        default=Role.CLIENT,
        id="new-role",
    )
    client_id = StringField(
        "Client id",
        filters=[stripped],
        validators=[Length(max=auth.MAX_CLIENT_ID_LENGTH)],
        id="new-client-id",
    )
    expires = ChoiceField("Expires", choices=EXPIRY_CHOICES, id="new-expires")
    expires_at = UTCDateTimeField("Expiry date (UTC)", id="new-expires-at")

    def validate_client_id(self, field: StringField) -> None:
        if self.role.data == Role.CLIENT and not field.data:
            raise ValidationError("a client key needs the client id it acts for")

    def validate(self, extra_validators: Any = None) -> bool:
        valid = super().validate(extra_validators)
        # Here, not in validate_expires_at: the field's Optional() skips those when empty.
        if self.expires.data == "date" and self.expires_at.data is None:
            if not self.expires_at.errors:
                self.expires_at.errors = ["pick the date the key stops working"]
            return False
        return valid

    def expiry(self, now: datetime) -> datetime | None:
        choice = self.expires.data or ""
        if choice == "date":
            return self.expires_at.data
        return now + timedelta(days=int(choice)) if choice else None


class RotateForm(ServiceForm):
    grace_seconds = ChoiceField("Old key keeps working for", choices=[])

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        default = current_app.config["API_KEY_ROTATION_GRACE_SECONDS"]
        labels = dict(GRACE_CHOICES)
        labels.setdefault(default, f"{default} seconds")
        self.grace_seconds.choices = [
            SelectChoice(str(s), labels[s] + (" (default)" if s == default else ""))
            for s in sorted(labels)
        ]
        if not self.is_submitted():
            self.grace_seconds.data = str(default)


# ---------------------------------------------------------------------------------------
# The key, shown once
# ---------------------------------------------------------------------------------------


def show_key_once(key: ApiKey, raw: str, *, rotated: bool) -> None:
    """Keep the clear key, sealed, for the next view of the key's page."""
    shown_once.keep(SHOWN_KEY, key.id, raw, rotated=rotated)


def take_shown_key(key_id: str) -> shown_once.Shown | None:
    """The key made for this page just now, if any; it is gone from the session after."""
    return shown_once.take(SHOWN_KEY, key_id)


@bp.app_template_global("key_status")
def key_status(key: ApiKey) -> str:
    return auth.key_status(key, utcnow())


@bp.app_template_global("previous_key_alive")
def previous_key_alive(key: ApiKey) -> bool:
    return auth.previous_secret_alive(key, utcnow())


# ---------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------


def list_page(form: NewKeyForm, filters: KeyFilterForm) -> Response:
    page = auth.KeyPage(keys=[], total=0)
    current = 1
    errors = labelled_errors(filters) if not filters.validate() else {}
    if not errors:
        current = filters.page.data or 1
        page = auth.list_api_keys(
            acting_operator(),
            filters.to_filters(),
            limit=PAGE_SIZE,
            offset=(current - 1) * PAGE_SIZE,
        )
    return render_region(
        "ui/api_keys/index.html",
        "ui/api_keys/_results.html",
        status=422 if errors or form.failed else 200,
        form=form,
        filter_form=filters,
        filters=filters.query_args() if not errors else {},
        errors=errors,
        page=page,
        number=current,
        pages=max(1, -(-page.total // PAGE_SIZE)),
        role_hints=ROLE_HINTS,
        status_labels=STATUS_LABELS,
    )


@bp.get("/api-keys", endpoint="api_keys")
@login_required
@requires(OperatorRole.ADMIN)
def api_key_list() -> Response:
    return list_page(NewKeyForm(formdata=None), KeyFilterForm(request.args))


@bp.post("/api-keys")
@login_required
@requires(OperatorRole.ADMIN)
def create_api_key() -> BaseResponse:
    form = NewKeyForm()
    if form.validate_on_submit():
        now = utcnow()
        try:
            key, raw = auth.create_api_key(
                name=form.name.data or "",
                role=form.role.data or "",
                client_id=form.client_id.data if form.role.data == Role.CLIENT else None,
                expires_at=form.expiry(now),
                created_by=acting_operator(),
                now=now,
            )
        except InvalidInput as exc:
            form.take_errors(exc)
        else:
            show_key_once(key, raw, rotated=False)
            flash("API key created.", "success")
            return redirect(url_for("ui.api_key_detail", key_id=key.id), 303)
    return list_page(form, KeyFilterForm(request.args))


def detail_page(key_id: str, form: RotateForm | None = None) -> Response:
    key = auth.get_api_key(acting_operator(), key_id)
    form = form or RotateForm(formdata=None)
    shown = None if wants_fragment() else take_shown_key(key.id)
    response = render_region(
        "ui/api_keys/detail.html",
        "ui/api_keys/detail.html",
        status=422 if form.failed else 200,
        key=key,
        form=form,
        shown_key=shown,
        role_hints=ROLE_HINTS,
        status_labels=STATUS_LABELS,
    )
    if shown is not None:
        # The key is on this page only: no copy in the browser's cache or history.
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/api-keys/<key_id>")
@login_required
@requires(OperatorRole.ADMIN)
def api_key_detail(key_id: str) -> Response:
    return detail_page(key_id)


@bp.post("/api-keys/<key_id>/rotate")
@login_required
@requires(OperatorRole.ADMIN)
def rotate_api_key(key_id: str) -> BaseResponse:
    form = RotateForm()
    if form.validate_on_submit():
        grace = int(form.grace_seconds.data or 0)
        try:
            key, raw = auth.rotate_api_key(acting_operator(), key_id, grace)
        except InvalidInput as exc:
            form.take_errors(exc)
        except Conflict as exc:
            flash(f"Not rotated: {exc.message}.", "error")
            return redirect(url_for("ui.api_key_detail", key_id=key_id), 303)
        else:
            show_key_once(key, raw, rotated=True)
            old = (
                "The old key stopped working."
                if grace == 0
                else f"The old key keeps working for {GRACE_CHOICES.get(grace, f'{grace} s')}."
            )
            flash(f"Key rotated. {old}", "success")
            return redirect(url_for("ui.api_key_detail", key_id=key_id), 303)
    return detail_page(key_id, form)


@bp.post("/api-keys/<key_id>/revoke")
@login_required
@requires(OperatorRole.ADMIN)
def revoke_api_key(key_id: str) -> BaseResponse:
    key = auth.get_api_key(acting_operator(), key_id)
    already = key.revoked_at is not None
    auth.revoke_api_key(acting_operator(), key_id)
    if already:
        flash("This key was already revoked.", "info")
    else:
        flash(
            "Key revoked: requests with it (or its previous secret) are refused from now on "
            f"(within {auth.key_cache.ttl:g} s by other server processes).",
            "success",
        )
    return redirect(url_for("ui.api_key_detail", key_id=key_id), 303)
