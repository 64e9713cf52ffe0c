"""Routing: a playground that shows who would get a task and why, and per-capability defaults.

The playground is a GET form (it changes nothing: routing.preview assigns no task), so
each answer has a URL; htmx swaps only the result. The defaults table posts one small
form per capability.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Response, flash, redirect, request, url_for
from flask_login import login_required
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as BaseResponse
from wtforms import Form, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from app.models import OperatorRole
from app.services import routing as router
from app.services.errors import InvalidInput
from app.services.settings import settings
from app.ui import bp
from app.ui.access import requires
from app.ui.auth import acting_operator
from app.ui.filters import ChoiceField, describe_errors, labelled_errors, stripped
from app.ui.htmx import render_region


def strategy_choices(empty_label: str) -> list[SelectChoice]:
    return [
        SelectChoice("", empty_label),
        *(SelectChoice(name, name.replace("_", " ")) for name in router.STRATEGIES),
    ]


class PlaygroundForm(Form):
    """What the playground asks, read from the query string."""

    # Choices are the capabilities agents offer; another name typed into the URL is still
    # answered ("no agent offers it"), so the choice is not enforced.
    capability = SelectField(
        "Capability", filters=[stripped], validators=[Length(max=200)], validate_choice=False
    )
    strategy = ChoiceField("Strategy", choices=strategy_choices("The capability's default"))


class DefaultStrategyForm(FlaskForm):
    capability = StringField(
        "Capability", filters=[stripped], validators=[DataRequired(), Length(max=200)]
    )
    strategy = ChoiceField("Default strategy", choices=strategy_choices("Server default"))


@bp.app_template_filter("without")
def without(mapping: Mapping[str, Any] | None, *keys: str) -> dict[str, Any]:
    """The mapping less ``keys``: what is left of an event's data once shown another way."""
    return {k: v for k, v in (mapping or {}).items() if k not in keys}


@bp.get("/routing")
@login_required
def routing() -> Response:
    principal = acting_operator()
    capabilities = router.capability_settings()
    form = PlaygroundForm(request.args)
    form.capability.choices = [
        SelectChoice("", "Choose a capability"),
        *(
            SelectChoice(row["capability"], f"{row['capability']} ({agent_count(row['agents'])})")
            for row in capabilities
        ),
    ]
    result, errors = None, {}
    if form.validate():
        if form.capability.data:
            try:
                result = router.preview(principal, form.capability.data, form.strategy.data or None)
            except InvalidInput as exc:
                errors = {"Strategy": [exc.message]}
    else:
        errors = labelled_errors(form)
    defaults = {row["capability"]: row for row in capabilities}
    return render_region(
        "ui/routing/index.html",
        "ui/routing/_result.html",
        status=422 if errors else 200,
        form=form,
        result=result,
        errors=errors,
        setting=defaults.get(result["capability"]) if result else None,
        chosen_strategy=form.strategy.data or None,
        capabilities=capabilities,
        strategies=router.STRATEGIES,
        server_default=settings.routing_default_strategy,
    )


def agent_count(count: int) -> str:
    return f"{count} agent{'s' if count != 1 else ''}"


@bp.post("/routing/defaults")
@login_required
@requires(OperatorRole.ADMIN)
def set_routing_default() -> BaseResponse:
    form = DefaultStrategyForm()
    if not form.validate_on_submit():
        flash(f"Default not changed: {describe_errors(form)}.", "error")
        return redirect(url_for("ui.routing"))
    capability, strategy = form.capability.data or "", form.strategy.data or None
    try:
        router.set_default_strategy(acting_operator(), capability, strategy)
    except InvalidInput as exc:
        flash(f"Default not changed: {exc.message}.", "error")
        return redirect(url_for("ui.routing"))
    if strategy:
        flash(
            f"Tasks of {capability} now route with {strategy} unless they ask otherwise.",
            "success",
        )
    else:
        flash(
            f"{capability} follows the server default ({settings.routing_default_strategy}) again.",
            "success",
        )
    return redirect(url_for("ui.routing", capability=capability))
