"""Webhooks: the list with a form to add one, and one webhook with its deliveries.

A signing secret is shown once, on the page the browser lands on after it was made (create
or rotate). It travels there sealed in the session cookie, since the page is reached by a
redirect, and the page that shows it takes it out of the session and asks not to be kept.

The ping and redeliver buttons post with htmx and get the deliveries region back, which
polls itself while a delivery is on its way; without JavaScript they post, redirect and
flash like any other form.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, flash, redirect, request, url_for
from flask_login import login_required
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as BaseResponse
from wtforms import BooleanField, Form, HiddenField, PasswordField, RadioField, StringField
from wtforms.fields import SelectMultipleField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, Optional, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from app.models import DeliveryStatus, Webhook, WebhookEvents
from app.services import webhooks
from app.services.agents import list_agents
from app.services.errors import Conflict, InvalidInput, NotFound
from app.services.principal import visible_agent
from app.ui import bp, shown_once
from app.ui.auth import acting_operator
from app.ui.filters import ChoiceField, labelled_errors, stripped
from app.ui.forms import ServiceForm
from app.ui.htmx import is_htmx, render_region, wants_fragment

DELIVERY_PAGE_SIZE = 20
# The deliveries region polls fast while one is on its way, slowly otherwise.
REFRESH_SECONDS = 10
PENDING_REFRESH_SECONDS = 2
SHOWN_SECRET = "webhook_secret"
OWNERS = {"global": "Global", "client": "A client", "agent": "An agent"}
EVENT_HINTS = {
    WebhookEvents.TASK_CREATED: "a task is submitted (an agent's webhook: one it could take)",
    WebhookEvents.TASK_ASSIGNED: "routing assigns a task to an agent",
    WebhookEvents.TASK_COMPLETED: "a task completes",
    WebhookEvents.TASK_FAILED: "a task fails for good",
    WebhookEvents.TASK_CANCELLED: "a task is cancelled",
    WebhookEvents.TASK_TIMED_OUT: "an attempt runs past its timeout",
    WebhookEvents.TASK_EXPIRED: "a task expires unclaimed",
    WebhookEvents.SCHEDULE_FIRED: "a schedule runs",
    WebhookEvents.AGENT_OFFLINE: "an agent goes offline",
}


# ---------------------------------------------------------------------------------------
# Forms
# ---------------------------------------------------------------------------------------


class EventsField(SelectMultipleField):
    """The events to send, one checkbox each."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()

    def pre_validate(self, form: Form) -> None:
        unknown = [value for value in self.data or () if value not in WebhookEvents.ALL]
        if unknown:
            raise ValidationError(f"{unknown[0]!r} is not an event webhooks can receive")


class WebhookForm(ServiceForm):
    """What every webhook has: where it sends, what, and a note saying what it is for."""

    url = StringField(
        "URL",
        filters=[stripped],
        validators=[
            InputRequired(message="type the URL that receives the events"),
            Length(max=webhooks.MAX_URL_LENGTH),
        ],
    )
    events = EventsField(
        "Events",
        choices=[SelectChoice(e, e) for e in WebhookEvents.ALL],
        default=list(WebhookEvents.ALL),
    )
    description = StringField("Description", filters=[stripped], validators=[Length(max=200)])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # An edit leaves the stored URL alone unless it was changed (the service does too).
        self.unchanged_url: str | None = None

    def validate_url(self, field: StringField) -> None:
        # The service's own check, so a bad URL is reported with the form's other errors.
        if field.data and field.data != self.unchanged_url:
            try:
                webhooks.validate_url(field.data)
            except InvalidInput as exc:
                message = exc.details[0]["message"] if exc.details else exc.message
                raise ValidationError(message) from None

    def validate_events(self, field: EventsField) -> None:
        if not field.data:
            raise ValidationError("tick at least one event")


class NewWebhookForm(WebhookForm):
    """Add a webhook: also whose it is and, if the receiver has one already, its secret."""

    # Operators act as admins, so they say whose webhook it is.
    # Ids of their own: the list's filter form on the same page has fields of these names.
    owner = RadioField(
        "Owner",
        choices=[SelectChoice(k, label) for k, label in OWNERS.items()],
        default="global",
        id="new-owner",
    )
    client_id = StringField(
        "Client id", filters=[stripped], validators=[Length(max=200)], id="new-client-id"
    )
    agent_id = StringField(
        "Agent id", filters=[stripped], validators=[Length(max=40)], id="new-agent-id"
    )
    secret = PasswordField(
        "Signing secret (optional)",
        validators=[
            Optional(),
            Length(
                min=webhooks.MIN_SECRET_LENGTH,
                max=webhooks.MAX_SECRET_LENGTH,
                message=f"must be {webhooks.MIN_SECRET_LENGTH} to "
                f"{webhooks.MAX_SECRET_LENGTH} characters",
            ),
        ],
    )

    def validate_client_id(self, field: StringField) -> None:
        if self.owner.data == "client" and not field.data:
            raise ValidationError("type the client id (or choose another owner)")

    def validate_agent_id(self, field: StringField) -> None:
        if self.owner.data == "agent" and not field.data:
            raise ValidationError("type the agent id (or choose another owner)")

    def fields(self) -> dict[str, Any]:
        """create_webhook's keyword arguments."""
        return {
            "url": self.url.data or "",
            "events": list(self.events.data or ()),
            "description": self.description.data or None,
            "secret": self.secret.data or None,
            "client_id": self.client_id.data if self.owner.data == "client" else None,
            "agent_id": self.agent_id.data if self.owner.data == "agent" else None,
        }


class EditWebhookForm(WebhookForm):
    active = BooleanField("Active: send events to it")
    # What the page showed: a webhook disabled meanwhile (by its receiver or the failure
    # streak) is not re-enabled by saving a form that still had the box ticked.
    was_active = HiddenField()

    @classmethod
    def of(cls, hook: Webhook) -> EditWebhookForm:
        return cls(
            formdata=None,
            data={
                "url": hook.url,
                "events": list(hook.events or ()),
                "description": hook.description or "",
                "active": hook.active,
                "was_active": "1" if hook.active else "0",
            },
        )

    def changes(self, hook: Webhook) -> dict[str, Any]:
        """update_webhook's changes: the fields whose value the operator changed."""
        wanted: dict[str, Any] = {
            "url": self.url.data or "",
            "events": list(self.events.data or ()),
            "description": self.description.data or None,
        }
        changes = {name: value for name, value in wanted.items() if value != getattr(hook, name)}
        if bool(self.active.data) != (self.was_active.data == "1"):
            changes["active"] = bool(self.active.data)
        return changes


class WebhookFilterForm(Form):
    """Whose webhooks the list shows: everyone's, the global ones, a client's, an agent's."""

    owner = ChoiceField(
        "Owner",
        choices=[
            SelectChoice("", "Any owner"),
            SelectChoice("global", "Global"),
            SelectChoice("client", "Clients"),
            SelectChoice("agent", "Agents"),
        ],
    )
    client_id = StringField("Client id", filters=[stripped], validators=[Length(max=200)])
    agent_id = StringField("Agent id", filters=[stripped], validators=[Length(max=40)])

    def query_args(self) -> dict[str, str]:
        return {name: str(f.data) for name, f in self._fields.items() if f.data}

    def keep(self, hook: Webhook) -> bool:
        """Whether the webhook passes every filter given."""
        kind = "agent" if hook.agent_id else "client" if hook.client_id else "global"
        return (
            self.owner.data in ("", None, kind)
            and self.agent_id.data in ("", None, hook.agent_id)
            and self.client_id.data in ("", None, hook.client_id)
        )


class DeliveryFilterForm(Form):
    status = ChoiceField(
        "Status",
        choices=[
            SelectChoice("", "Any status"),
            *(SelectChoice(s, s.capitalize()) for s in DeliveryStatus.ALL),
        ],
    )
    event = ChoiceField(
        "Event",
        choices=[
            SelectChoice("", "Any event"),
            *(SelectChoice(e, e) for e in (*WebhookEvents.ALL, WebhookEvents.PING)),
        ],
    )

    def query_args(self) -> dict[str, str]:
        return {name: str(f.data) for name, f in self._fields.items() if f.data}


# ---------------------------------------------------------------------------------------
# The secret, shown once
# ---------------------------------------------------------------------------------------


def show_secret_once(hook: Webhook, secret: str, *, rotated: bool) -> None:
    """Keep the secret, sealed, for the next view of the webhook's page."""
    shown_once.keep(SHOWN_SECRET, hook.id, secret, rotated=rotated)


def take_shown_secret(webhook_id: str) -> shown_once.Shown | None:
    """The secret made for this webhook just now, if any; it is gone from the session after."""
    return shown_once.take(SHOWN_SECRET, webhook_id)


# ---------------------------------------------------------------------------------------
# Template helpers
# ---------------------------------------------------------------------------------------


@bp.app_template_global("event_hint")
def event_hint(event: str) -> str:
    return EVENT_HINTS.get(event, "")


@bp.app_template_filter("json_body")
def json_body(body: str | None) -> Any:
    """An event body as data, for pretty_json; the raw text if it is not JSON."""
    if body is None:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body


@bp.app_template_filter("all_events")
def all_events(events: list[str] | None) -> bool:
    return set(events or ()) >= set(WebhookEvents.ALL)


# ---------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------


def list_page(form: NewWebhookForm, filters: WebhookFilterForm) -> Response:
    principal = acting_operator()
    errors = labelled_errors(filters) if not filters.validate() else {}
    # Operators are admins: the service lists every webhook, and the filters pick here.
    hooks = [h for h in webhooks.list_webhooks(principal) if filters.keep(h)] if not errors else []
    agents = list_agents(principal)
    return render_region(
        "ui/webhooks/index.html",
        "ui/webhooks/_results.html",
        status=422 if errors or form.failed else 200,
        form=form,
        filter_form=filters,
        filters=filters.query_args() if not errors else {},
        errors=errors,
        hooks=hooks,
        counts=webhooks.webhook_counts([h.id for h in hooks]),
        agents=agents,
        agent_names={a.id: a.display_name for a in agents},
        refresh_seconds=REFRESH_SECONDS,
    )


@bp.get("/webhooks", endpoint="webhooks")
@login_required
def webhook_list() -> Response:
    filters = WebhookFilterForm(request.args)
    # Opened from an agent's or a client's page: a new webhook is theirs unless changed.
    owner = "agent" if filters.agent_id.data else "client" if filters.client_id.data else "global"
    form = NewWebhookForm(
        formdata=None,
        data={
            "owner": owner,
            "agent_id": filters.agent_id.data or "",
            "client_id": filters.client_id.data or "",
        },
    )
    return list_page(form, filters)


@bp.post("/webhooks")
@login_required
def create_webhook() -> BaseResponse:
    form = NewWebhookForm()
    if form.validate_on_submit():
        fields = form.fields()
        try:
            hook, secret = webhooks.create_webhook(acting_operator(), **fields)
        except InvalidInput as exc:
            form.take_errors(exc)
        except NotFound as exc:  # the agent named as owner does not exist
            form.agent_id.errors = [*form.agent_id.errors, exc.message]
        else:
            show_secret_once(hook, secret, rotated=False)
            flash("Webhook created.", "success")
            return redirect(url_for("ui.webhook_detail", webhook_id=hook.id), 303)
    return list_page(form, WebhookFilterForm(request.args))


def deliveries_context(hook: Webhook, args: MultiDict[str, str]) -> dict[str, Any]:
    """What the deliveries region shows: one page of deliveries under the filters."""
    form = DeliveryFilterForm(args)
    cursor = args.get("cursor") or None
    page = webhooks.DeliveryPage(deliveries=[], attempts={}, next_cursor=None)
    errors = labelled_errors(form) if not form.validate() else {}
    if not errors:
        try:
            page = webhooks.list_deliveries(
                acting_operator(),
                hook.id,
                status=form.status.data or None,
                event=form.event.data or None,
                limit=DELIVERY_PAGE_SIZE,
                cursor=cursor,
            )
        except InvalidInput:
            errors = {"Page": ["this paging link is not valid; start again from the newest"]}
    event_ids = dict.fromkeys(d.event_id for d in page.deliveries)
    pending = any(d.status == DeliveryStatus.PENDING for d in page.deliveries)
    return {
        "hook": hook,
        "delivery_form": form,
        "page": page,
        "cursor": cursor,
        "delivery_filters": form.query_args() if not errors else {},
        "delivery_errors": errors,
        "bodies": webhooks.event_bodies(event_ids),
        "counts": webhooks.webhook_counts([hook.id])[hook.id],
        "refresh_seconds": PENDING_REFRESH_SECONDS if pending else REFRESH_SECONDS,
    }


def detail_page(webhook_id: str, form: EditWebhookForm | None = None) -> Response:
    hook = webhooks.get_webhook(acting_operator(), webhook_id)
    form = form or EditWebhookForm.of(hook)
    shown = None if wants_fragment() else take_shown_secret(hook.id)
    context = deliveries_context(hook, request.args)
    response = render_region(
        "ui/webhooks/detail.html",
        "ui/webhooks/_deliveries.html",
        status=422 if form.failed or context["delivery_errors"] else 200,
        form=form,
        shown_secret=shown,
        agent_name=agent_name(hook),
        **context,
    )
    if shown is not None:
        # The secret is on this page only: no copy in the browser's cache or history.
        response.headers["Cache-Control"] = "no-store"
    return response


def agent_name(hook: Webhook) -> str | None:
    if not hook.agent_id:
        return None
    try:
        return visible_agent(acting_operator(), hook.agent_id).display_name
    except NotFound:
        return None


@bp.get("/webhooks/<webhook_id>")
@login_required
def webhook_detail(webhook_id: str) -> Response:
    return detail_page(webhook_id)


@bp.post("/webhooks/<webhook_id>/edit")
@login_required
def edit_webhook(webhook_id: str) -> BaseResponse:
    principal = acting_operator()
    hook = webhooks.get_webhook(principal, webhook_id)
    form = EditWebhookForm()
    form.unchanged_url = hook.url
    if form.validate_on_submit():
        try:
            hook = webhooks.update_webhook(principal, webhook_id, form.changes(hook))
        except InvalidInput as exc:
            form.take_errors(exc)
        else:
            state = "" if hook.active else " It is disabled: nothing is sent until you enable it."
            flash(f"Webhook saved.{state}", "success")
            return redirect(url_for("ui.webhook_detail", webhook_id=webhook_id), 303)
    return detail_page(webhook_id, form)


@bp.post("/webhooks/<webhook_id>/<any(enable, disable):action>")
@login_required
def toggle_webhook(webhook_id: str, action: str) -> BaseResponse:
    hook = webhooks.update_webhook(acting_operator(), webhook_id, {"active": action == "enable"})
    if hook.active:
        flash("Enabled: events are sent again, and deliveries that waited go out now.", "success")
    else:
        flash("Disabled: nothing is sent until you enable it; events meanwhile wait.", "success")
    return redirect(url_for("ui.webhook_detail", webhook_id=webhook_id), 303)


@bp.post("/webhooks/<webhook_id>/rotate-secret")
@login_required
def rotate_webhook_secret(webhook_id: str) -> BaseResponse:
    hook, secret = webhooks.rotate_secret(acting_operator(), webhook_id)
    show_secret_once(hook, secret, rotated=True)
    flash("Secret rotated: the next delivery is signed with the new one.", "success")
    return redirect(url_for("ui.webhook_detail", webhook_id=webhook_id), 303)


@bp.post("/webhooks/<webhook_id>/delete")
@login_required
def delete_webhook(webhook_id: str) -> BaseResponse:
    webhooks.delete_webhook(acting_operator(), webhook_id)
    flash("Webhook deleted, with its delivery history.", "success")
    return redirect(url_for("ui.webhooks"), 303)


def action_done(webhook_id: str, message: str, category: str) -> BaseResponse:
    """After a ping or a redelivery: htmx gets the newest deliveries, a form the page."""
    if not is_htmx():
        flash(message, category)
        return redirect(url_for("ui.webhook_detail", webhook_id=webhook_id), 303)
    hook = webhooks.get_webhook(acting_operator(), webhook_id)
    response = render_region(
        "ui/webhooks/_deliveries.html",
        "ui/webhooks/_deliveries.html",
        notice={"text": message, "category": category},
        **deliveries_context(hook, MultiDict()),
    )
    # The region now shows the newest deliveries, unfiltered: so should the address bar.
    response.headers["HX-Replace-Url"] = url_for("ui.webhook_detail", webhook_id=webhook_id)
    return response


@bp.post("/webhooks/<webhook_id>/ping")
@login_required
def ping_webhook(webhook_id: str) -> BaseResponse:
    try:
        delivery = webhooks.ping(acting_operator(), webhook_id)
    except Conflict as exc:
        return action_done(webhook_id, f"Ping not sent: {exc.message}.", "error")
    return action_done(
        webhook_id, f"Test ping queued as delivery {delivery.id}; it shows below.", "success"
    )


@bp.post("/webhooks/<webhook_id>/deliveries/<delivery_id>/redeliver")
@login_required
def redeliver_webhook_delivery(webhook_id: str, delivery_id: str) -> BaseResponse:
    principal = acting_operator()
    if webhooks.get_delivery(principal, delivery_id).webhook_id != webhook_id:
        raise NotFound(f"delivery {delivery_id!r} not found")
    try:
        delivery = webhooks.redeliver(principal, delivery_id)
    except Conflict as exc:
        return action_done(webhook_id, f"Not redelivered: {exc.message}.", "error")
    return action_done(
        webhook_id,
        f"Redelivery queued as delivery {delivery.id} (same X-Webhook-Id as the original).",
        "success",
    )
