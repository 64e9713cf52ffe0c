"""Agents: the list, the trust leaderboard, and one agent with its trust history and tasks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from flask import Response, flash, redirect, request, url_for
from flask_login import login_required
from werkzeug.wrappers import Response as BaseResponse
from wtforms import FloatField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, ValidationError

from app.lib.clock import utcnow
from app.models import Agent, OperatorRole
from app.services import task_search, trust
from app.services.agents import count_agents, list_agents
from app.services.dashboard import agent_fleet, heartbeat_silence, is_online
from app.services.errors import InvalidInput
from app.services.principal import visible_agent
from app.ui import bp
from app.ui.access import requires
from app.ui.auth import acting_operator
from app.ui.filters import stripped
from app.ui.forms import ServiceForm
from app.ui.htmx import render_region
from app.ui.sparkline import Sparkline, sparkline

REFRESH_SECONDS = 10
MINUS = "\u2212"  # a real minus sign, as wide as the plus beside it
LEADERBOARD_SIZE = 50
# Each row draws a trust sparkline: a page of 50 renders in a few ms, 200 took ~90 ms.
AGENTS_PER_PAGE = 50
TRUST_RECORDS = 50
RECENT_TASKS = 50
SPARKLINE_POINTS = 30
DETAIL_SPARKLINE_POINTS = 60
LEVEL_DESCRIPTIONS = {level: text for _, level, text in trust.LEVELS}
LEVEL_FLOORS = {level: floor for floor, level, _ in trust.LEVELS}
EVENT_LABELS = {
    "task_completed": "Task completed",
    "task_failed": "Task failed",
    "task_timed_out": "Task timed out",
    "agent_lost": "Agent lost",
    "poison_refund": "Poison refund",
    "manual_adjustment": "Manual adjustment",
}


class DeltaField(FloatField):
    """A signed number; its error says what to type, and NaN or infinity do not pass."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        if not valuelist or not str(valuelist[0]).strip():
            self.data = None
            return
        raw = str(valuelist[0]).strip().replace(MINUS, "-")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            self.data = None
            raise ValueError(f"{raw!r} is not a number; type one like 0.1 or -0.05")
        self.data = value


class TrustAdjustForm(ServiceForm):
    delta = DeltaField(
        "Change (-1 to 1)",
        validators=[InputRequired(message="type a change from -1 to 1, e.g. 0.1 or -0.05")],
    )
    reason = TextAreaField(
        "Reason",
        filters=[stripped],
        validators=[
            DataRequired(message="say why the score changes (it goes into the trust record)"),
            Length(
                max=trust.MAX_REASON_LENGTH,
                message=f"must be at most {trust.MAX_REASON_LENGTH} characters",
            ),
        ],
    )

    def validate_delta(self, field: DeltaField) -> None:
        if field.data is None:  # not a number: its own error says so
            return
        if not -1 <= field.data <= 1:
            raise ValidationError(f"must be from -1 to 1, got {field.data:g}")
        if field.data == 0:
            raise ValidationError("a change of 0 changes nothing; type one like 0.1 or -0.05")


# ---------------------------------------------------------------------------------------
# Template helpers
# ---------------------------------------------------------------------------------------


@bp.app_template_global("trust_level")
def trust_level(score: float | None) -> str:
    return trust.trust_level(score if score is not None else trust.INITIAL_SCORE)


@bp.app_template_global("trust_level_description")
def trust_level_description(level: str) -> str:
    return LEVEL_DESCRIPTIONS.get(level, "")


@bp.app_template_filter("success_rate")
def success_rate(agent: Agent) -> float | None:
    return trust.success_rate(agent)


@bp.app_template_filter("percent")
def percent(value: float | None) -> str:
    """0.925 as '92.5 %', 1.0 as '100 %'; a dash for None."""
    if value is None:
        return "—"
    text = f"{value * 100:.1f}".removesuffix(".0")
    return f"{text} %"


@bp.app_template_filter("seconds")
def seconds(value: float | None) -> str:
    """An average time: '0.42 s', '7.5 s', '2 min'; a dash for None."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value:.2f} s"
    if value < 10:
        return f"{value:.1f} s"
    if value < 60:
        return f"{value:.0f} s"
    minutes = value / 60
    return f"{minutes:.1f} min" if minutes < 10 else f"{minutes:.0f} min"


@bp.app_template_filter("signed")
def signed(value: float | None, digits: int = 2) -> str:
    """'+0.02', '\u22120.05' (with MINUS), '±0.00'."""
    if value is None:
        return "—"
    text = f"{abs(value):.{digits}f}"
    if float(text) == 0:
        return f"±{text}"
    return f"+{text}" if value > 0 else f"{MINUS}{text}"


@bp.app_template_global("trust_event_label")
def trust_event_label(event_type: str) -> str:
    return EVENT_LABELS.get(event_type, event_type.replace("_", " ").capitalize())


def sparklines(agent_ids: Sequence[str], *, limit: int = SPARKLINE_POINTS) -> dict[str, Sparkline]:
    """Each agent's trust history as a small sparkline, from one query."""
    points = trust.sparkline_points(agent_ids, limit=limit)
    return {agent_id: sparkline(points.get(agent_id, [])) for agent_id in agent_ids}


# ---------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------


@bp.get("/agents")
@login_required
def agents() -> Response:
    now = utcnow()
    principal = acting_operator()
    total = count_agents(principal)
    pages = max(1, -(-total // AGENTS_PER_PAGE))
    # A page past the end (an old link, a hand-typed number) shows the last one.
    number = min(max(1, request.args.get("page", 1, type=int) or 1), pages)
    agents = list_agents(principal, limit=AGENTS_PER_PAGE, offset=(number - 1) * AGENTS_PER_PAGE)
    return render_region(
        "ui/agents/index.html",
        "ui/agents/_table.html",
        agents=agents,
        total=total,
        fleet=agent_fleet(now),
        number=number,
        pages=pages,
        lines=sparklines([agent.id for agent in agents]),
        online={agent.id for agent in agents if is_online(agent, now)},
        silence_seconds=heartbeat_silence().total_seconds(),
        refresh_seconds=REFRESH_SECONDS,
    )


@bp.get("/agents/leaderboard")
@login_required
def leaderboard() -> Response:
    ranks = trust.leaderboard(acting_operator(), limit=LEADERBOARD_SIZE)
    return render_region(
        "ui/agents/leaderboard.html",
        "ui/agents/_leaderboard.html",
        ranks=ranks,
        lines=sparklines([row["agent_id"] for row in ranks]),
        levels=trust.LEVELS,
        limit=LEADERBOARD_SIZE,
        refresh_seconds=REFRESH_SECONDS,
    )


def detail_page(agent_id: str, form: TrustAdjustForm) -> Response:
    principal = acting_operator()
    agent = visible_agent(principal, agent_id)
    points = trust.sparkline_points([agent.id], limit=DETAIL_SPARKLINE_POINTS)[agent.id]
    tasks = task_search.list_tasks(
        principal, task_search.TaskFilters(agent_id=agent.id), limit=RECENT_TASKS
    ).tasks
    level = trust.trust_level(agent.trust_score)
    return render_region(
        "ui/agents/detail.html",
        "ui/agents/detail.html",
        status=422 if form.failed else 200,
        agent=agent,
        level=level,
        level_floor=LEVEL_FLOORS[level],
        online=is_online(agent, utcnow()),
        line=sparkline(points, width=320, height=72),
        records=trust.trust_history(agent.id, limit=TRUST_RECORDS),
        tasks=tasks,
        form=form,
        record_limit=TRUST_RECORDS,
        task_limit=RECENT_TASKS,
    )


@bp.get("/agents/<agent_id>")
@login_required
def agent_detail(agent_id: str) -> Response:
    return detail_page(agent_id, TrustAdjustForm(formdata=None))


@bp.post("/agents/<agent_id>/trust")
@login_required
@requires(OperatorRole.ADMIN)
def adjust_agent_trust(agent_id: str) -> BaseResponse:
    form = TrustAdjustForm()
    if form.validate_on_submit():
        try:
            record = trust.adjust_trust(
                acting_operator(), agent_id, float(form.delta.data), form.reason.data or ""
            )
        except InvalidInput as exc:
            form.take_errors(exc)
        else:
            before, after = record.trust_score_before, record.trust_score_after
            exact = math.isclose(record.trust_delta, form.delta.data, abs_tol=1e-4)
            clamped = "" if exact else " (clamped at the bound)"
            flash(
                f"Trust changed {before:.2f} → {after:.2f} "
                f"({signed(record.trust_delta)}{clamped}), now {trust.trust_level(after)}.",
                "success",
            )
            return redirect(url_for("ui.agent_detail", agent_id=agent_id))
    return detail_page(agent_id, form)
