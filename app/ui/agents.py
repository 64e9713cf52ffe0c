"""The agents list: who is online, what they can do, how they have done."""

from __future__ import annotations

from flask import Response
from flask_login import login_required

from app.lib.clock import utcnow
from app.services.agents import list_agents
from app.services.dashboard import heartbeat_silence, is_online
from app.ui import bp
from app.ui.auth import acting_operator
from app.ui.htmx import render_region

REFRESH_SECONDS = 10


@bp.get("/agents")
@login_required
def agents() -> Response:
    now = utcnow()
    agents = list_agents(acting_operator())
    return render_region(
        "ui/agents/index.html",
        "ui/agents/_table.html",
        agents=agents,
        online={agent.id for agent in agents if is_online(agent, now)},
        silence_seconds=heartbeat_silence().total_seconds(),
        refresh_seconds=REFRESH_SECONDS,
    )
