"""Chains: the list with each chain's step progress, one chain as a stepper, cancel."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, flash, redirect, request, url_for
from flask_login import login_required
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as BaseResponse
from wtforms import Form, IntegerField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, NumberRange, Optional

from app.models import ChainStatus
from app.services import chain_steps
from app.services import chains as chain_service
from app.services.errors import Conflict
from app.ui import bp
from app.ui.auth import acting_operator
from app.ui.filters import ChoiceField, describe_errors, labelled_errors, stripped, upper
from app.ui.htmx import render_region

PAGE_SIZE = 25
LIST_REFRESH_SECONDS = 5
DETAIL_REFRESH_SECONDS = 3
PREVIEW_LINES = 8
PREVIEW_CHARS = 120
STATE_LABELS = {chain_steps.WAITING: "Not started", chain_steps.SKIPPED: "Not run"}


class ChainFilterForm(Form):
    status = ChoiceField(
        "Status",
        choices=[
            SelectChoice("", "Any status"),
            *(SelectChoice(s, s.title()) for s in ChainStatus.ALL),
        ],
        filters=[upper],
    )
    client = StringField("Client", filters=[stripped], validators=[Length(max=200)])
    page = IntegerField("Page", validators=[Optional(), NumberRange(min=1, max=100_000)])

    def query_args(self) -> dict[str, str]:
        return {name: str(f.data) for name, f in self._fields.items() if f.data and name != "page"}


class ChainCancelForm(FlaskForm):
    reason = StringField("Reason (optional)", filters=[stripped], validators=[Length(max=2000)])


@bp.app_template_filter("json_preview")
def json_preview(value: Any, lines: int = PREVIEW_LINES) -> str:
    """The first lines of indented JSON, long lines cut, '…' where anything was left out."""
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str).splitlines()
    shown = [
        line if len(line) <= PREVIEW_CHARS else line[: PREVIEW_CHARS - 1] + "…"
        for line in text[:lines]
    ]
    if len(text) > lines:
        shown.append("…")
    return "\n".join(shown)


@bp.app_template_filter("step_state")
def step_state(state: str) -> str:
    """'Completed', 'Active', 'Not started', 'Not run'."""
    return STATE_LABELS.get(state, state.title())


@bp.get("/chains")
@login_required
def chains() -> Response:
    form = ChainFilterForm(request.args)
    page = chain_service.ChainPage(chains=[], total=0)
    number = 1
    if form.validate():
        number = form.page.data or 1
        page = chain_service.list_chains(
            acting_operator(),
            client_id=form.client.data or None,
            status=form.status.data or None,
            limit=PAGE_SIZE,
            offset=(number - 1) * PAGE_SIZE,
        )
    errors = labelled_errors(form)
    return render_region(
        "ui/chains/index.html",
        "ui/chains/_results.html",
        status=422 if errors else 200,
        form=form,
        page=page,
        states=chain_steps.step_states(page.chains),
        number=number,
        pages=max(1, -(-page.total // PAGE_SIZE)),
        errors=errors,
        filters=form.query_args() if not errors else {},
        refresh_seconds=LIST_REFRESH_SECONDS,
    )


@bp.get("/chains/<chain_id>")
@login_required
def chain_detail(chain_id: str) -> Response:
    chain = chain_service.visible_chain(acting_operator(), chain_id)
    return render_region(
        "ui/chains/detail.html",
        "ui/chains/_detail_body.html",
        chain=chain,
        steps=chain_steps.chain_steps(chain),
        cancel_form=ChainCancelForm(),
        refresh_seconds=DETAIL_REFRESH_SECONDS,
    )


@bp.post("/chains/<chain_id>/cancel")
@login_required
def cancel_chain(chain_id: str) -> BaseResponse:
    form = ChainCancelForm()
    if not form.validate():
        flash(f"Not cancelled: {describe_errors(form)}.", "error")
        return redirect(url_for("ui.chain_detail", chain_id=chain_id))
    try:
        chain_service.cancel_chain(acting_operator(), chain_id, form.reason.data or None)
    except Conflict as exc:
        flash(f"Not cancelled: {exc.message}.", "error")
    else:
        flash(
            "Chain cancelled: no further step starts. A step that was running is asked to stop.",
            "success",
        )
    return redirect(url_for("ui.chain_detail", chain_id=chain_id))
