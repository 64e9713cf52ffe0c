"""Trust: how far each agent can be relied on, learnt from how its attempts end.

Scores run from 0.0 to 1.0; new agents start at 0.5. A completed attempt adds 0.02; a
failed, timed-out or lost one takes 0.05; cancellations change nothing; admins adjust by
hand. Every change writes one TrustRecord (before, after, applied delta, reason, task).

A task that fails on ``settings.poison_agent_count`` different agents is poison: it ends
FAILED and the trust those agents lost on it is refunded, so a bad task cannot ruin good
agents.

Locks: callers hold the task row; agent rows are locked after it, and several agent rows
only in one ``ORDER BY id FOR UPDATE``, so two transactions never wait on each other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, true

from app.extensions import db
from app.lib.clock import isoformat, utcnow
from app.models import Agent, AttemptOutcome, Role, Task, TaskAttempt, TrustEvent, TrustRecord
from app.models.base import plain_insert
from app.services import audit
from app.services.errors import NotFound, invalid
from app.services.principal import Principal, visible_agent
from app.services.settings import settings

INITIAL_SCORE = 0.5
COMPLETED_DELTA = 0.02
FAILED_DELTA = -0.05
MAX_REASON_LENGTH = 500
# Scores are stored rounded, so repeated +0.02/-0.05 steps do not drift.
SCORE_DECIMALS = 4

# Seed 004's table, best first: (lowest score of the level, level, what it means).
LEVELS: list[tuple[float, str, str]] = [
    (0.9, "excellent", "Top-tier agents, priority routing"),
    (0.7, "high", "Reliable agents, regular routing"),
    (0.5, "medium", "Average agents, standard routing"),
    (0.3, "low", "Probationary agents, limited tasks"),
    (0.0, "very_low", "High-risk agents, manual approval"),
]

# How each failed attempt outcome is written into the trust records.
FAILURE_EVENTS = {
    AttemptOutcome.FAILED: TrustEvent.TASK_FAILED,
    AttemptOutcome.TIMED_OUT: TrustEvent.TASK_TIMED_OUT,
    AttemptOutcome.AGENT_LOST: TrustEvent.AGENT_LOST,
}


def trust_level(score: float) -> str:
    """The seed's level of a score: excellent, high, medium, low or very_low."""
    # Rounded first: 0.7 reached through float steps (0.6999999999) is still "high".
    rounded = round(score, 6)
    for minimum, level, _ in LEVELS:
        if rounded >= minimum:
            return level
    return LEVELS[-1][1]


def success_rate(agent: Agent) -> float | None:
    """Completed attempts over completed and failed ones; None before any outcome."""
    completed = agent.total_tasks_completed or 0
    failed = agent.total_tasks_failed or 0
    if completed + failed == 0:
        return None
    return round(completed / (completed + failed), 4)


def trust_summary(agent: Agent) -> dict[str, Any]:
    """GET /ains/agents/{id}/trust as seed 004 shows it."""
    return {
        "agent_id": agent.id,
        "display_name": agent.display_name,
        "trust_score": agent.trust_score,
        "trust_level": trust_level(agent.trust_score),
        "metrics": {
            "total_tasks_completed": agent.total_tasks_completed,
            "total_tasks_failed": agent.total_tasks_failed,
            "success_rate": success_rate(agent),
            "avg_completion_time_seconds": agent.avg_completion_time_seconds,
            "last_task_completed_at": isoformat(agent.last_task_completed_at),
        },
    }


def get_trust(principal: Principal, agent_id: str, *, limit: int = 50) -> dict[str, Any]:
    """An agent's trust summary and its newest ``limit`` trust records (newest first)."""
    agent = visible_agent(principal, agent_id)
    records = trust_history(agent.id, limit=limit)
    return {**trust_summary(agent), "records": [r.to_dict() for r in records]}


def trust_history(agent_id: str, *, limit: int = 50) -> list[TrustRecord]:
    """The agent's newest ``limit`` trust records, newest first."""
    return list(
        db.session.scalars(
            db.select(TrustRecord)
            .where(TrustRecord.agent_id == agent_id)
            .order_by(TrustRecord.created_at.desc(), TrustRecord.id.desc())
            .limit(limit)
        )
    )


def leaderboard(principal: Principal, *, limit: int = 50) -> list[dict[str, Any]]:
    """Visible agents by trust (then completed tasks, then id), ranked from 1."""
    query = (
        db.select(Agent)
        .order_by(Agent.trust_score.desc(), Agent.total_tasks_completed.desc(), Agent.id)
        .limit(limit)
    )
    if principal.role == Role.AGENT:  # agent keys see only their own agents
        if principal.agent_id is not None:
            query = query.where(Agent.id == principal.agent_id)
        else:
            query = query.where(Agent.registered_by_key_id == principal.key_id)
    return [
        {
            "rank": rank,
            "agent_id": agent.id,
            "display_name": agent.display_name,
            "trust_score": agent.trust_score,
            "trust_level": trust_level(agent.trust_score),
            "total_tasks_completed": agent.total_tasks_completed,
            "total_tasks_failed": agent.total_tasks_failed,
            "success_rate": success_rate(agent),
            "avg_completion_time_seconds": agent.avg_completion_time_seconds,
            "status": agent.status,
        }
        for rank, agent in enumerate(db.session.scalars(query), start=1)
    ]


def sparkline_points(agent_ids: Sequence[str], *, limit: int = 30) -> dict[str, list[float]]:
    """Each agent's last ``limit`` scores, oldest first, after the score they started from.

    An agent without records gets an empty list. One query for all agents.
    """
    points: dict[str, list[float]] = {agent_id: [] for agent_id in agent_ids}
    if not points or limit < 1:
        return points
    if db.session.get_bind().dialect.name == "postgresql":
        rows = newest_per_agent(list(points), limit)
    else:
        rows = newest_by_window(list(points), limit)
    for agent_id, before, after in rows:
        series = points[agent_id]
        if not series:
            series.append(before)
        series.append(after)
    return points


def newest_per_agent(agent_ids: list[str], limit: int) -> Any:
    """(agent, before, after) of each agent's newest ``limit`` records, oldest first.

    A LATERAL join walks ix_trust_records_agent_created backwards ``limit`` rows per
    agent, so the cost does not grow with the agents' histories (one record per task
    ended: about a million at a million tasks), as numbering every record would.
    """
    agents = db.select(Agent.id.label("agent_id")).where(Agent.id.in_(agent_ids)).subquery()
    recent = (
        db.select(
            TrustRecord.trust_score_before,
            TrustRecord.trust_score_after,
            TrustRecord.created_at,
            TrustRecord.id,
        )
        .where(TrustRecord.agent_id == agents.c.agent_id)
        .order_by(TrustRecord.created_at.desc(), TrustRecord.id.desc())
        .limit(limit)
        .lateral()
    )
    return db.session.execute(
        db.select(agents.c.agent_id, recent.c.trust_score_before, recent.c.trust_score_after)
        .select_from(agents.join(recent, true()))
        .order_by(agents.c.agent_id, recent.c.created_at, recent.c.id)
    )


def newest_by_window(agent_ids: list[str], limit: int) -> Any:
    """The same rows by numbering each agent's records (SQLite has no LATERAL)."""
    newest_first = (
        func.row_number()
        .over(
            partition_by=TrustRecord.agent_id,
            order_by=(TrustRecord.created_at.desc(), TrustRecord.id.desc()),
        )
        .label("n")
    )
    recent = (
        db.select(
            TrustRecord.agent_id,
            TrustRecord.trust_score_before,
            TrustRecord.trust_score_after,
            newest_first,
        )
        .where(TrustRecord.agent_id.in_(agent_ids))
        .subquery()
    )
    return db.session.execute(
        db.select(recent.c.agent_id, recent.c.trust_score_before, recent.c.trust_score_after)
        .where(recent.c.n <= limit)
        .order_by(recent.c.agent_id, recent.c.n.desc())
    )


def adjust_trust(
    principal: Principal,
    agent_id: str,
    delta: float,
    reason: str,
    *,
    now: datetime | None = None,
) -> TrustRecord:
    """An admin moves an agent's score by ``delta`` (-1..1, not 0), saying why."""
    principal.require_role(Role.ADMIN)
    if (
        isinstance(delta, bool)
        or not isinstance(delta, int | float)
        or not math.isfinite(delta)
        or not -1.0 <= delta <= 1.0
        or delta == 0
    ):
        raise invalid("delta", f"must be a number from -1 to 1 other than 0, got {delta!r}")
    reason = (reason or "").strip() if isinstance(reason, str) else ""
    if not reason:
        raise invalid("reason", "is required: say why the score changes")
    if len(reason) > MAX_REASON_LENGTH:
        raise invalid("reason", f"must be at most {MAX_REASON_LENGTH} characters")
    record = apply(
        agent_id,
        float(delta),
        event_type=TrustEvent.MANUAL_ADJUSTMENT,
        actor=principal.actor,
        now=now or utcnow(),
        reason=reason,
    )
    audit.note(
        target_type="agent",
        target_id=agent_id,
        before={"trust_score": record.trust_score_before},
        after={"trust_score": record.trust_score_after, "reason": reason},
    )
    db.session.commit()
    return record


def apply(
    agent_id: str,
    delta: float,
    *,
    event_type: str,
    actor: str,
    now: datetime,
    task_id: str | None = None,
    reason: str | None = None,
) -> TrustRecord:
    """Move the agent's score by ``delta`` within [0, 1] and record the change.

    The record's delta is the change applied (clamping shows). Locks the agent row (a
    no-op when the transaction holds it already); never commits.
    """
    # populate_existing: an Agent loaded earlier in this transaction may hold a score
    # another transaction has changed since; read it again under the lock.
    agent = db.session.scalars(
        db.select(Agent)
        .where(Agent.id == agent_id)
        .with_for_update(key_share=True)  # see principal.require_agent
        .execution_options(populate_existing=True)
    ).first()
    if agent is None:
        raise NotFound(f"agent {agent_id!r} not found")
    before = agent.trust_score if agent.trust_score is not None else INITIAL_SCORE
    after = round(min(1.0, max(0.0, before + delta)), SCORE_DECIMALS)
    agent.trust_score = after
    agent.updated_at = now
    record = TrustRecord(
        agent_id=agent_id,
        event_type=event_type,
        task_id=task_id,
        trust_delta=round(after - before, SCORE_DECIMALS),
        trust_score_before=before,
        trust_score_after=after,
        reason=reason,
        actor=actor,
        created_at=now,
    )
    db.session.add(record)
    return record


SCORE_LOCKED = (
    db.select(Agent.trust_score)
    .where(Agent.id == bindparam("agent_id"))
    .with_for_update(key_share=True)  # see principal.require_agent
)


# One statement for a batch's records: nothing reads them back in their transaction.
INSERT_RECORDS = plain_insert(TrustRecord)


def on_attempts_completed(
    tasks: Sequence[Task], agent_id: str, *, actor: str, now: datetime
) -> float | None:
    """Each completed attempt earns its agent +0.02, one after another as ``apply`` would.

    Locks the agent row (as ``apply`` does) and reads its score once, inserts one record
    per task, and returns the new score for the caller to write in its own UPDATE of the
    row (attempts.release_slots), so a batch of completions costs one read and one write
    of the agent. None when the agent row is gone.
    """
    row = db.session.execute(SCORE_LOCKED, {"agent_id": agent_id}).first()
    if row is None:
        return None
    score = row.trust_score if row.trust_score is not None else INITIAL_SCORE
    records = []
    for task in tasks:
        after = round(min(1.0, max(0.0, score + COMPLETED_DELTA)), SCORE_DECIMALS)
        records.append(
            {
                "agent_id": agent_id,
                "event_type": TrustEvent.TASK_COMPLETED,
                "task_id": task.id,
                "trust_delta": round(after - score, SCORE_DECIMALS),
                "trust_score_before": score,
                "trust_score_after": after,
                "reason": f"task {task.id} completed (attempt {task.attempt})",
                "actor": actor,
                "created_at": now,
            }
        )
        score = after
    if records:
        db.session.execute(INSERT_RECORDS, records)
    return score


def on_attempt_failed(
    task: Task,
    agent_id: str | None,
    outcome: str,
    error_message: str,
    *,
    actor: str,
    now: datetime,
) -> str | None:
    """A failed, timed-out or lost attempt costs its agent 0.05; poison is refunded.

    Call it once the attempt row is closed and before the agent's slot is released.
    Returns why the task is poison (it must then end FAILED), or None.
    """
    if agent_id is None or outcome not in FAILURE_EVENTS:
        return None
    failed_on = failed_agents(task.id) | {agent_id}
    poison = len(failed_on) >= settings.poison_agent_count
    if poison:
        # Every agent row this transaction will touch, in one statement in id order.
        lock_agents(failed_on | set(unrefunded_losses(task.id)))
    apply(
        agent_id,
        FAILED_DELTA,
        event_type=FAILURE_EVENTS[outcome],
        actor=actor,
        now=now,
        task_id=task.id,
        reason=failure_reason(task, outcome, error_message),
    )
    if not poison:
        return None
    task.poison = True
    why = f"failed on {len(failed_on)} different agents: treated as poison, not retried"
    for owed_agent, amount in sorted(unrefunded_losses(task.id).items()):
        apply(
            owed_agent,
            amount,
            event_type=TrustEvent.POISON_REFUND,
            actor=actor,
            now=now,
            task_id=task.id,
            reason=f"task {task.id} {why}: the trust lost on it is refunded",
        )
    return why


def failure_reason(task: Task, outcome: str, error_message: str) -> str:
    """A readable reason for a failed attempt's trust record."""
    what = {
        AttemptOutcome.FAILED: "failed",
        AttemptOutcome.TIMED_OUT: "timed out",
        AttemptOutcome.AGENT_LOST: "lost its agent",
    }[outcome]
    detail = error_message if len(error_message) <= 200 else error_message[:199] + "…"
    return f"task {task.id} {what} (attempt {task.attempt}): {detail}"


def failed_agents(task_id: str) -> set[str]:
    """The agents whose attempts at the task ended through their fault."""
    return set(
        db.session.scalars(
            db.select(TaskAttempt.agent_id)
            .where(
                TaskAttempt.task_id == task_id,
                TaskAttempt.outcome.in_(AttemptOutcome.AGENT_FAULT),
            )
            .distinct()
        )
    )


def unrefunded_losses(task_id: str) -> dict[str, float]:
    """Per agent, the trust lost on the task since its last poison refund (if any)."""
    owed: dict[str, float] = {}
    rows = db.session.execute(
        db.select(TrustRecord.agent_id, TrustRecord.event_type, TrustRecord.trust_delta)
        .where(TrustRecord.task_id == task_id)
        .order_by(TrustRecord.id)
    )
    for agent_id, event_type, delta in rows:
        if event_type == TrustEvent.POISON_REFUND:
            owed[agent_id] = 0.0  # everything lost before it is settled
        elif delta < 0:
            owed[agent_id] = owed.get(agent_id, 0.0) - delta
    return {a: round(v, SCORE_DECIMALS) for a, v in owed.items() if round(v, SCORE_DECIMALS) > 0}


def lock_agents(agent_ids: Iterable[str]) -> None:
    """Lock several agent rows at once, in id order (the order every multi-lock takes)."""
    ids = sorted(set(agent_ids))
    if ids:
        db.session.execute(
            db.select(Agent.id)
            .where(Agent.id.in_(ids))
            .order_by(Agent.id)
            .with_for_update(key_share=True)
        ).all()
