"""Routing: which agent gets a task, and why.

A task that becomes claimable (PENDING, its retry delay over) is assigned to one agent:
it goes ASSIGNED with ``assigned_agent_id`` set, and only that agent's claim takes it.
Candidates are the AVAILABLE agents with the capability, a fresh heartbeat and a free
slot (the tasks an agent holds, ASSIGNED or ACTIVE, count against its
``max_concurrent_tasks``); trust levels narrow them further (very low: last resort; low:
one task at a time), and a retry avoids the agents that already failed the task. The
strategy (the task's own, else the capability's default, else the server's) picks the
winner, and the decision (strategy, scored candidates, winner) is written in the task's
ASSIGNED event.

Routing runs inside the transaction that made the tasks claimable (a before-commit step,
see ``services.workflows``), in a claim that finds work waiting, and in the sweep, which
also routes again tasks their agent did not claim in time. A routing pass first checks,
unlocked, that some agent of the capability is available, fresh and has a slot its running
tasks leave free; when none has, it stops there (a submit while the fleet is busy costs one
read, not the lock). Locks: the capability's ``capability_routing`` row serialises its
routers, so two of them never hand out the same slot; task rows are taken with SKIP
LOCKED and agent rows are never written, so a router waits on nothing but another router,
and no other lock is taken after it. (Assigning a task takes a foreign-key share lock on
the agent row; the agent-row locks that writers take are FOR NO KEY UPDATE, which do not
block it.)
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, bindparam, func, inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.extensions import db
from app.lib.clock import utcnow
from app.models import (
    ROUTABLE_TASKS,
    Agent,
    AgentStatus,
    AttemptOutcome,
    Capability,
    CapabilityRouting,
    Role,
    Task,
    TaskAttempt,
    TaskStatus,
)
from app.services import audit
from app.services.errors import InvalidInput
from app.services.principal import Principal
from app.services.settings import settings
from app.services.trust import trust_level

STRATEGIES: dict[str, str] = {
    "round_robin": (
        "Takes turns: the candidates form a ring ordered by agent id and each task goes "
        "to the next one after the previous winner, so equal agents get equal shares."
    ),
    "least_loaded": (
        "The candidate holding the fewest tasks (assigned and running); ties go to the "
        "larger share of free slots, then round robin."
    ),
    "trust_weighted": (
        "A random draw weighted by trust score: an agent with twice the trust gets twice "
        "the share of tasks."
    ),
    "fastest_response": (
        "The candidate with the lowest average completion time; now and then "
        "(ROUTING_PROBE_RATE) an agent not yet measured gets the task so it is measured."
    ),
}
ROUTER = "system:router"
# Most tasks one routing pass locks and assigns per capability (the rest wait for the next
# pass).
ROUTE_BATCH = 500
# Candidates (and exclusions) written into each ASSIGNED event; the count says how many.
DECISION_CANDIDATES = 10
# fastest_response: completed tasks before an agent's average counts as measured.
MIN_SAMPLES = 3
# Session.info keys (besides models.ROUTABLE_TASKS): the agent to avoid per task, and the
# agents to wake once the transaction has committed (the winners, one entry per task; and
# one per capability whose routing was skipped, whose claim will route it: prepare).
AVOID = "ains_route_avoid"
WINNERS = "ains_route_winners"

rng = random.Random()


def configure_rng(seed: int | None) -> None:
    """A fixed seed makes trust_weighted and the probes reproducible (tests, simulations)."""
    rng.seed(seed)


@dataclass
class Candidate:
    """An agent as the router sees it."""

    agent_id: str
    display_name: str
    status: str
    fresh: bool
    max_slots: int
    load: int
    trust_score: float
    avg_seconds: float | None
    completed: int

    @property
    def free(self) -> int:
        return self.max_slots - self.load

    @property
    def level(self) -> str:
        return trust_level(self.trust_score)

    @property
    def measured(self) -> bool:
        return self.avg_seconds is not None and self.completed >= MIN_SAMPLES

    def exclusion(self) -> str | None:
        """Why the agent cannot take a task now (None: it can)."""
        if self.status != AgentStatus.AVAILABLE:
            return f"status {self.status}"
        if not self.fresh:
            return "no recent heartbeat"
        if self.free <= 0:
            return f"no free slot ({self.load} of {self.max_slots} held)"
        if self.level == "low" and self.load > 0:
            return "probation (low trust): one task at a time"
        return None


@dataclass
class Scored:
    candidate: Candidate
    score: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        c = self.candidate
        return {
            "agent_id": c.agent_id,
            "display_name": c.display_name,
            "score": self.score,
            "detail": self.detail,
            "trust_score": c.trust_score,
            "trust_level": c.level,
            "load": c.load,
            "max_concurrent_tasks": c.max_slots,
            "avg_completion_time_seconds": c.avg_seconds,
        }


@dataclass
class Decision:
    strategy: str
    winner: Candidate
    scored: list[Scored]
    probe: bool = False


# --- the strategies: each ranks a non-empty pool and names a winner ---------------------


def ring(pool: Sequence[Candidate], after: str | None) -> list[Candidate]:
    """The pool in turn order: by agent id, starting after ``after``."""
    ordered = sorted(pool, key=lambda c: c.agent_id)
    if after is None:
        return ordered
    split = next((i for i, c in enumerate(ordered) if c.agent_id > after), 0)
    return ordered[split:] + ordered[:split]


def round_robin(pool: Sequence[Candidate], after: str | None) -> Decision:
    order = ring(pool, after)
    n = len(order)
    scored = [
        Scored(c, round(1 - k / n, 4), "next in turn" if k == 0 else f"{k} turn(s) later")
        for k, c in enumerate(order)
    ]
    return Decision("round_robin", order[0], scored)


def least_loaded(pool: Sequence[Candidate], after: str | None) -> Decision:
    order = sorted(ring(pool, after), key=lambda c: (c.load, c.load / c.max_slots))
    scored = [
        Scored(c, round(1 / (1 + c.load), 4), f"{c.load} of {c.max_slots} slots held")
        for c in order
    ]
    return Decision("least_loaded", order[0], scored)


def trust_weighted(pool: Sequence[Candidate], after: str | None) -> Decision:
    order = ring(pool, after)
    # A floor keeps a zero-trust last resort drawable.
    weights = [max(c.trust_score, 0.01) for c in order]
    total = sum(weights)
    draw = rng.random() * total
    winner = order[-1]
    for c, w in zip(order, weights, strict=True):
        if draw < w:
            winner = c
            break
        draw -= w
    scored = sorted(
        (
            Scored(c, round(w / total, 4), f"trust {c.trust_score:.2f}: {w / total:.0%} chance")
            for c, w in zip(order, weights, strict=True)
        ),
        key=lambda s: (s.candidate is not winner, -s.score),
    )
    return Decision("trust_weighted", winner, scored)


def fastest_response(pool: Sequence[Candidate], after: str | None) -> Decision:
    order = ring(pool, after)
    measured = [c for c in order if c.measured]
    unmeasured = [c for c in order if not c.measured]
    probe = bool(unmeasured) and (not measured or rng.random() < settings.routing_probe_rate)
    winner = unmeasured[0] if probe else min(measured, key=lambda c: c.avg_seconds or 0.0)

    def score(c: Candidate) -> Scored:
        if not c.measured:
            return Scored(c, 0.0, f"not measured yet ({c.completed} of {MIN_SAMPLES} tasks)")
        avg = c.avg_seconds or 0.0
        return Scored(c, round(1 / (1 + avg), 4), f"average {avg:.2f}s over {c.completed}")

    scored = sorted((score(c) for c in order), key=lambda s: (s.candidate is not winner, -s.score))
    return Decision("fastest_response", winner, scored, probe=probe)


CHOOSERS = {
    "round_robin": round_robin,
    "least_loaded": least_loaded,
    "trust_weighted": trust_weighted,
    "fastest_response": fastest_response,
}


# --- who can take a task -----------------------------------------------------------------


# The hot statements of a routing pass, built once and bound per call (building a
# statement costs about as much as running it).
_ASSIGNED_TO_AGENT = (
    db.select(func.count())
    .where(Task.status == TaskStatus.ASSIGNED, Task.assigned_agent_id == Agent.id)
    .correlate(Agent)
    .scalar_subquery()
)
SURVEY = (
    db.select(
        Agent.id,
        Agent.display_name,
        Agent.status,
        Agent.last_heartbeat,
        Agent.max_concurrent_tasks,
        Agent.active_tasks,
        Agent.trust_score,
        Agent.avg_completion_time_seconds,
        Agent.total_tasks_completed,
        _ASSIGNED_TO_AGENT.label("assigned"),
    )
    .join(Capability, Capability.agent_id == Agent.id)
    .where(Capability.name == bindparam("capability"))
)
COULD_TAKE = (
    db.select(Agent.id)
    .join(Capability, Capability.agent_id == Agent.id)
    .where(
        Capability.name == bindparam("capability"),
        Agent.status == AgentStatus.AVAILABLE,
        Agent.last_heartbeat >= bindparam("fresh_after"),
        Agent.active_tasks < Agent.max_concurrent_tasks,
    )
    .limit(1)
)
ROUTING_STATE = (
    db.select(CapabilityRouting)
    .where(CapabilityRouting.capability == bindparam("capability"))
    .with_for_update()
)
# The same row, only if no other router holds it (see route_recorded).
ROUTING_STATE_IF_FREE = ROUTING_STATE.with_for_update(skip_locked=True)
ROUTING_STATE_EXISTS = db.select(CapabilityRouting.capability).where(
    CapabilityRouting.capability == bindparam("capability")
)
# When a routing pass is skipped: the agent to wake, whose claim routes what waits. Of
# those that might take a task, the one running the fewest (the likeliest to be polling).
WAKE_TO_ROUTE = COULD_TAKE.order_by(Agent.active_tasks, Agent.id)


def survey(capability: str, now: datetime) -> list[Candidate]:
    """Every agent with the capability, with what it holds (ASSIGNED + ACTIVE), read in one
    statement so the two counts are from the same moment (a claim moves a task from one to
    the other)."""
    fresh_after = now - timedelta(seconds=settings.lease_seconds)
    rows = db.session.execute(SURVEY, {"capability": capability}).all()
    return [
        Candidate(
            agent_id=r.id,
            display_name=r.display_name,
            status=r.status,
            fresh=r.last_heartbeat is not None and r.last_heartbeat >= fresh_after,
            max_slots=r.max_concurrent_tasks,
            load=r.active_tasks + r.assigned,
            trust_score=r.trust_score if r.trust_score is not None else 0.5,
            avg_seconds=r.avg_completion_time_seconds,
            completed=r.total_tasks_completed or 0,
        )
        for r in rows
    ]


def could_take(capability: str, now: datetime) -> bool:
    """Whether any agent of the capability might take a task: available, fresh, and with a
    slot its running tasks leave free. One indexed read, no lock: its assigned tasks only
    add to an agent's load, so False is certain as of the read."""
    return db.session.execute(COULD_TAKE, taker_params(capability, now)).first() is not None


def taker_params(capability: str, now: datetime) -> dict[str, Any]:
    """The parameters of COULD_TAKE and WAKE_TO_ROUTE."""
    fresh_after = now - timedelta(seconds=settings.lease_seconds)
    return {"capability": capability, "fresh_after": fresh_after}


def narrow(pool: list[Candidate], avoid: set[str]) -> list[Candidate]:
    """Per task: drop the agents to avoid and the very-low-trust ones, unless nobody is
    left (then very low trust is the last resort, if allowed)."""
    preferred = [c for c in pool if c.agent_id not in avoid] or pool
    trusted = [c for c in preferred if c.level != "very_low"]
    if trusted or settings.routing_very_low_trust == "never":
        return trusted
    return preferred


def failed_agents(task_ids: Sequence[str]) -> dict[str, set[str]]:
    """For tasks run before: the agents whose attempts failed through their fault."""
    found: dict[str, set[str]] = {}
    if not task_ids:
        return found
    for task_id, agent_id in db.session.execute(
        db.select(TaskAttempt.task_id, TaskAttempt.agent_id).where(
            TaskAttempt.task_id.in_(task_ids),
            TaskAttempt.outcome.in_(AttemptOutcome.AGENT_FAULT),
        )
    ):
        found.setdefault(task_id, set()).add(agent_id)
    return found


def decision_data(decision: Decision, candidates: Sequence[Candidate]) -> dict[str, Any]:
    excluded = [(c, c.exclusion()) for c in candidates]
    excluded = [(c, why) for c, why in excluded if why]
    data: dict[str, Any] = {
        "strategy": decision.strategy,
        "winner": decision.winner.agent_id,
        "winner_name": decision.winner.display_name,
        "candidates": [s.to_dict() for s in decision.scored[:DECISION_CANDIDATES]],
        "candidate_count": len(decision.scored),
        "excluded": [
            {"agent_id": c.agent_id, "display_name": c.display_name, "reason": why}
            for c, why in excluded[:DECISION_CANDIDATES]
        ],
        "excluded_count": len(excluded),
    }
    if decision.probe:
        data["probe"] = True
    return data


# --- routing ------------------------------------------------------------------------------


def lock_state(capability: str, *, wait: bool = True) -> CapabilityRouting | None:
    """The capability's routing row, created if missing, locked until commit. With
    ``wait=False``: None when another router holds it, instead of waiting for it."""
    query = ROUTING_STATE if wait else ROUTING_STATE_IF_FREE
    state = db.session.scalars(query, {"capability": capability}).first()
    if state is not None:
        return state
    # Held, not missing: no INSERT, whose conflict check would wait for a holder that has
    # updated the row (a router writes round_robin_after), as FOR UPDATE would.
    if not wait and db.session.scalar(ROUTING_STATE_EXISTS, {"capability": capability}):
        return None
    # Missing: created (waiting only for another transaction creating it now), then read.
    dialect = db.session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    db.session.execute(
        insert(CapabilityRouting)
        .values(capability=capability, updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=["capability"])
    )
    query = query.execution_options(populate_existing=True)
    return db.session.scalars(query, {"capability": capability}).first()


def effective_strategy(task_strategy: str | None, state: CapabilityRouting | None) -> str:
    return task_strategy or (state and state.default_strategy) or settings.routing_default_strategy


def waiting_now(now: datetime | BindParameter[Any]) -> list[Any]:
    """Unassigned tasks an agent could start now: PENDING, retry delay over, not expired.
    (``now`` may be a bound parameter, for a statement built once.)"""
    return [
        Task.status == TaskStatus.PENDING,
        (Task.next_retry_at.is_(None)) | (Task.next_retry_at <= now),
        (Task.expires_at.is_(None)) | (Task.expires_at > now),
    ]


def routable(capability: str | BindParameter[Any], now: datetime | BindParameter[Any]) -> Any:
    """Unassigned tasks of the capability an agent could start now."""
    return db.select(Task).where(*waiting_now(now), Task.capability_required == capability)


ROUTABLE_LOCKED = (
    routable(bindparam("capability"), bindparam("now"))
    .order_by(Task.queue_key)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)


@dataclass
class Pass:
    """One capability's share of a routing pass: its locked routing row and its agents."""

    state: CapabilityRouting
    candidates: list[Candidate]
    pool: list[Candidate]


def prepare(
    capability: str,
    now: datetime,
    agents: dict[str, Candidate],
    unwritten: Sequence[Task] = (),
    *,
    wait: bool = True,
) -> tuple[Pass, list[Task]] | None:
    """Lock the capability's routing row, survey its agents and lock its claimable tasks,
    in queue order, as many as its free slots could take. None when no agent of the
    capability could take a task: none, or none available, fresh and with a slot its
    running tasks leave free (then nothing is locked, and a submit while every agent is
    busy costs one read instead of the lock and the survey), or none left once surveyed.

    An agent with several of the capabilities has its free slots counted in each one's
    limit, so a pass may lock more waiting tasks than it can assign (SKIP LOCKED: other
    routers pass them by); the merged queue needs each capability's best, before any
    is assigned.

    ``agents``: the candidates already surveyed in this pass, by id; an agent with several
    of the capabilities is one Candidate, so a slot it gives to one is gone for the others.
    ``unwritten``: claimable tasks of this capability added to the session but not yet
    inserted (see ``route_recorded``); they take their place in the queue beside the ones
    read from the database, and one routed here is inserted already ASSIGNED.

    ``wait=False``: when another router holds the capability's routing row, None, and an
    agent that might take a task is woken once this transaction commits: its claim
    routes what waits (``route_recorded`` says why).
    """
    if not could_take(capability, now):
        return None
    state = lock_state(capability, wait=wait)
    if state is None:
        taker = db.session.scalar(WAKE_TO_ROUTE, taker_params(capability, now))
        if taker is not None:
            db.session.info.setdefault(WINNERS, []).append(taker)
        return None
    candidates = [agents.setdefault(c.agent_id, c) for c in survey(capability, now)]
    pool = [c for c in candidates if c.exclusion() is None]
    if not pool:
        return None
    limit = min(sum(c.free for c in pool), ROUTE_BATCH)
    params = {"capability": capability, "now": now, "limit": limit}
    tasks = list(db.session.scalars(ROUTABLE_LOCKED, params))
    if unwritten:
        tasks = sorted([*tasks, *unwritten], key=lambda t: t.queue_key)[:limit]
    return Pass(state, candidates, pool), tasks


def route(
    capabilities: Iterable[str],
    now: datetime,
    *,
    avoid: dict[str, str] | None = None,
    unwritten: dict[str, list[Task]] | None = None,
    wait: bool = True,
) -> list[tuple[str, str]]:
    """Assign the claimable tasks of these capabilities, in queue order across all of them,
    while slots are free; the winners are woken once the transaction commits.

    The capabilities' routing rows are locked in name order (so two routers never wait on
    each other in a cycle), then their tasks are assigned in one queue: an agent with two
    of them and one free slot gets the better task, whichever capability it needs. Runs in
    the caller's transaction (never commits); returns (task id, agent id) pairs.
    ``wait=False``: a capability another router holds is left out (see ``prepare``).
    """
    agents: dict[str, Candidate] = {}
    passes: dict[str, Pass] = {}
    queue: list[Task] = []
    for capability in sorted(set(capabilities)):
        fresh = (unwritten or {}).get(capability, ())
        prepared = prepare(capability, now, agents, fresh, wait=wait)
        if prepared is not None:
            passes[capability], tasks = prepared
            queue += tasks
    if len(passes) > 1:
        queue.sort(key=lambda t: t.queue_key)
    made = assign(queue, passes, now, avoid or {})
    if made:
        db.session.info.setdefault(WINNERS, []).extend(agent for _, agent in made)
    return made


def assign(
    queue: Sequence[Task], passes: dict[str, Pass], now: datetime, avoid: dict[str, str]
) -> list[tuple[str, str]]:
    """Give each task of the queue, in order, to the winner among its capability's agents
    that still have room (``avoid``: an agent to shun per task id)."""
    faults = failed_agents([t.id for t in queue if t.attempt > 0])
    made: list[tuple[str, str]] = []
    for task in queue:
        step = passes[task.capability_required]
        step.pool = [c for c in step.pool if c.exclusion() is None]
        if not step.pool:
            continue
        shun = set(faults.get(task.id, ()))
        if task.id in avoid:
            shun.add(avoid[task.id])
        choices = narrow(step.pool, shun)
        if not choices:
            continue
        state = step.state
        strategy = effective_strategy(task.routing_strategy, state)
        decision = CHOOSERS[strategy](choices, state.round_robin_after)
        winner = decision.winner
        # The decision as it was made: loads and exclusions before this assignment.
        data = {"routing": decision_data(decision, step.candidates)}
        winner.load += 1
        state.round_robin_after = winner.agent_id
        task.assigned_agent_id = winner.agent_id
        task.assigned_at = now
        task.transition(
            TaskStatus.ASSIGNED,
            actor=ROUTER,
            now=now,
            reason=f"routed to {winner.display_name} ({strategy})",
            data=data,
        )
        made.append((task.id, winner.agent_id))
    return made


def route_recorded(session: Session) -> None:
    """Before commit: route the capabilities of the tasks made claimable in the transaction.

    When they are all new tasks not yet inserted, and the transaction has written nothing
    else routing reads (a submit, a batch), they are routed before their INSERT, with
    autoflush off: a routed one is inserted ASSIGNED, its row written once instead of
    inserted PENDING and updated.

    A capability another router holds right now is not waited for: its tasks commit
    PENDING and an agent that might take one is woken, whose claim routes them with
    whatever else waits (a claim routes the queue before it looks). Every router of a
    capability takes its one routing row, so under load submits queued behind each other
    for it (S3 of bench/ains.py: 22 submits/s, 330 ms each, all but the lock holder
    waiting on that row). Tasks with an agent to avoid (taken back from it) wait for the
    row: the claim's pass would not know whom to avoid. Should the wake-up be lost, the
    sweep's backlog look routes them within a second.
    """
    recorded = session.info.pop(ROUTABLE_TASKS, None)
    avoid = session.info.pop(AVOID, None)
    if not recorded:
        return
    now = max(at for _, at in recorded)
    claimable = {
        id(task): task
        for task, _ in recorded
        if task.status == TaskStatus.PENDING
        and (task.next_retry_at is None or task.next_retry_at <= now)
    }
    if not claimable:
        return
    capabilities = {task.capability_required for task in claimable.values()}
    unwritten = routable_unwritten(session, list(claimable.values()), now)
    wait = bool(avoid)
    if unwritten is None:
        route(capabilities, now, avoid=avoid, wait=wait)
        return
    with session.no_autoflush:
        route(capabilities, now, avoid=avoid, unwritten=unwritten, wait=wait)


def routable_unwritten(
    session: Session, claimable: list[Task], now: datetime
) -> dict[str, list[Task]] | None:
    """The claimable tasks by capability, if every one is new (added, not yet inserted)
    and nothing routing reads waits to be flushed: the session's other pending writes are
    only new tasks and their events. None otherwise (route them the ordinary way).

    Also None when they carry an idempotency key (its unique index is then checked at the
    INSERT, which must come before the routing lock, as on the ordinary path). Several
    capabilities are fine: a routing pass counts what it gives an agent with two of them
    in the one Candidate both capabilities' surveys share.
    """
    if session.dirty or session.deleted:
        return None
    if any(task.idempotency_key is not None for task in claimable):
        return None
    if any(not isinstance(obj, Task) for obj in session.new):
        return None
    found: dict[str, list[Task]] = {}
    for task in claimable:
        if not inspect(task).pending:
            return None
        if task.expires_at is None or task.expires_at > now:
            found.setdefault(task.capability_required, []).append(task)
    return found


def spare_wakeups(session: Session, agent_id: str, count: int) -> None:
    """No wake-up token for ``count`` of the tasks routed to ``agent_id`` in this
    transaction (its claim is about to take them); the rest still wake its other polls."""
    winners = session.info.get(WINNERS)
    if not winners:
        return
    kept = []
    for winner in winners:
        if winner == agent_id and count > 0:
            count -= 1
        else:
            kept.append(winner)
    winners[:] = kept


def winners_committed(session: Session) -> list[str]:
    """After commit: the agents to wake (assigned tasks, or to route a skipped pass)."""
    return session.info.pop(WINNERS, None) or []


def forget(session: Session) -> None:
    """After rollback: nothing was routed."""
    for key in (ROUTABLE_TASKS, AVOID, WINNERS):
        session.info.pop(key, None)


def first_waiting(capability: Any) -> Any:
    """The queue key of the capability's first unassigned task claimable now (``now``
    bound per call): an index scan that stops at the first row. ``capability`` is a bound
    parameter or a column to correlate with."""
    return (
        db.select(Task.queue_key)
        .where(*waiting_now(bindparam("now")), Task.capability_required == capability)
        .order_by(Task.queue_key)
        .limit(1)
    )


# Built once (a claim runs it on every look), bound per call: per capability, its first
# waiting task, then the least of those. (``capability_required IN (the names)`` would
# make PostgreSQL read every waiting task of the capabilities and sort them: 60 ms at
# 140,000 waiting.)
FIRST_WAITING = first_waiting(bindparam("capability"))
BEST_WAITING_FOR = db.select(
    func.min(first_waiting(Capability.name).correlate(Capability).scalar_subquery())
).where(Capability.agent_id == bindparam("agent_id"))


def best_waiting(capabilities: Sequence[str], now: datetime) -> int | None:
    """The queue key of the first unassigned task of these capabilities claimable now:
    each capability's first, then the least."""
    firsts = [
        key
        for capability in sorted(set(capabilities))
        if (key := db.session.scalar(FIRST_WAITING, {"capability": capability, "now": now}))
        is not None
    ]
    return min(firsts, default=None)


def best_waiting_for(agent_id: str, now: datetime) -> int | None:
    """``best_waiting`` over the agent's capabilities, named in the same statement (a
    claim needs the names only when something waits)."""
    return db.session.scalar(BEST_WAITING_FOR, {"now": now, "agent_id": agent_id})


def has_backlog(capabilities: Sequence[str], now: datetime) -> bool:
    """Is any unassigned task of these capabilities claimable now?"""
    return best_waiting(capabilities, now) is not None


def give_back(agent_id: str, queue_key: int, now: datetime) -> None:
    """The agent's reservations queued behind ``queue_key`` go back to the queue (to be
    routed again at once), so better work waiting unassigned can take their slots."""
    behind = db.session.scalars(
        db.select(Task)
        .where(
            Task.status == TaskStatus.ASSIGNED,
            Task.assigned_agent_id == agent_id,
            Task.queue_key > queue_key,
        )
        .with_for_update(skip_locked=True)
    )
    for task in behind:
        task.assigned_agent_id = None
        task.assigned_at = None
        task.transition(
            TaskStatus.PENDING,
            actor=ROUTER,
            now=now,
            reason="slot given to a task ahead of it in the queue",
            data={"agent_id": agent_id},
        )


def route_waiting(capabilities: Sequence[str], now: datetime) -> list[tuple[str, str]]:
    """Route these capabilities if unassigned work waits (an agent just became able to
    take some: registered, added a capability, came back)."""
    if not has_backlog(capabilities, now):
        return []
    return route(capabilities, now)


# The capabilities some agent has (a small table), each with its first waiting task found
# by index: SELECT DISTINCT over the tasks would read every waiting task, every second
# (98 ms at 60,000 waiting). Work of a capability no agent has cannot be routed anyway.
_AGENT_CAPABILITIES = db.select(Capability.name).distinct().subquery()
BACKLOG_CAPABILITIES = db.select(_AGENT_CAPABILITIES.c.name).where(
    first_waiting(_AGENT_CAPABILITIES.c.name)
    .correlate(_AGENT_CAPABILITIES)
    .scalar_subquery()
    .is_not(None)
)


def backlog_capabilities(now: datetime) -> list[str]:
    """Capabilities of registered agents with unassigned tasks claimable now (the sweep
    routes these)."""
    return list(db.session.scalars(BACKLOG_CAPABILITIES, {"now": now}))


def unassign(task: Task, *, actor: str, now: datetime, reason: str, data: dict[str, Any]) -> None:
    """An ASSIGNED task goes back to PENDING (routed again before the commit, avoiding the
    agent it had when others can take it)."""
    agent_id = task.assigned_agent_id
    task.assigned_agent_id = None
    task.assigned_at = None
    if agent_id is not None:
        db.session.info.setdefault(AVOID, {})[task.id] = agent_id
    task.transition(TaskStatus.PENDING, actor=actor, now=now, reason=reason, data=data)


# --- read side: strategies, preview, per-capability defaults -----------------------------


def strategies() -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "description": text,
            "default": name == settings.routing_default_strategy,
        }
        for name, text in STRATEGIES.items()
    ]


def check_strategy(strategy: str | None, field: str) -> None:
    if strategy is not None and strategy not in STRATEGIES:
        raise InvalidInput(
            f"unknown routing strategy {strategy!r}",
            [{"field": field, "message": f"must be one of {', '.join(STRATEGIES)}"}],
        )


def preview(
    principal: Principal,
    capability: str,
    strategy: str | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Which agent would get a task of ``capability`` now, and the scores: assigns nothing.

    trust_weighted and fastest_response's probes are draws, so two previews may differ.
    """
    principal.require_role(Role.CLIENT)
    check_strategy(strategy, "strategy")
    now = now or utcnow()
    state = db.session.get(CapabilityRouting, capability)
    chosen = effective_strategy(strategy, state)
    candidates = survey(capability, now)
    pool = narrow([c for c in candidates if c.exclusion() is None], set())
    excluded = [
        {"agent_id": c.agent_id, "display_name": c.display_name, "reason": why}
        for c in candidates
        if (why := c.exclusion())
    ]
    if pool:
        kept = {c.agent_id for c in pool}
        excluded += [
            {
                "agent_id": c.agent_id,
                "display_name": c.display_name,
                "reason": "very low trust: last resort only",
            }
            for c in candidates
            if c.exclusion() is None and c.agent_id not in kept
        ]
    result: dict[str, Any] = {
        "capability": capability,
        "strategy": chosen,
        "winner": None,
        "candidates": [],
        "excluded": excluded,
    }
    if pool:
        decision = CHOOSERS[chosen](pool, state.round_robin_after if state else None)
        result["winner"] = next(
            s.to_dict() for s in decision.scored if s.candidate is decision.winner
        )
        result["candidates"] = [s.to_dict() for s in decision.scored]
        result["probe"] = decision.probe
    db.session.rollback()
    return result


def capability_settings() -> list[dict[str, Any]]:
    """Every capability agents offer or that has settings, with its default strategy."""
    counts = dict(
        db.session.execute(
            db.select(Capability.name, func.count(func.distinct(Capability.agent_id))).group_by(
                Capability.name
            )
        ).all()
    )
    configured = {row.capability: row for row in db.session.scalars(db.select(CapabilityRouting))}
    names = sorted(set(counts) | {n for n, row in configured.items() if row.default_strategy})
    result = [
        {
            "capability": name,
            "default_strategy": effective_strategy(None, configured.get(name)),
            "configured": bool(configured.get(name) and configured[name].default_strategy),
            "agents": counts.get(name, 0),
        }
        for name in names
    ]
    db.session.rollback()
    return result


def set_default_strategy(
    principal: Principal, capability: str, strategy: str | None
) -> dict[str, Any]:
    """Set (or with None, clear) a capability's default strategy. Admin only; returns the
    capability's settings as ``capability_settings`` lists them."""
    principal.require_role(Role.ADMIN)
    check_strategy(strategy, "default_strategy")
    capability = capability.strip()
    if not capability or len(capability) > 200:
        raise InvalidInput(
            "capability must be 1 to 200 characters",
            [{"field": "capability", "message": "1 to 200 characters"}],
        )
    state = lock_state(capability)
    assert state is not None  # waited for
    audit.note(
        target_type="capability",
        target_id=capability,
        before={"default_strategy": state.default_strategy},
        after={"default_strategy": strategy},
    )
    state.default_strategy = strategy
    state.updated_by = principal.actor
    state.updated_at = utcnow()
    db.session.commit()
    agents = db.session.scalar(
        db.select(func.count(func.distinct(Capability.agent_id))).where(
            Capability.name == capability
        )
    )
    db.session.rollback()
    return {
        "capability": capability,
        "default_strategy": strategy or settings.routing_default_strategy,
        "configured": strategy is not None,
        "agents": agents or 0,
    }
