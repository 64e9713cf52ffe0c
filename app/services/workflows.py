"""Reactions to tasks finishing, inside the transaction that finished them.

``Task.transition`` notes every task that reaches a terminal status in the session; before
the session commits, ``settle`` hands them to the registered reactions (dependents unblock
or are cancelled, a chain starts its next step or fails). A reaction may finish more tasks
(a cascade); they are handled in the same commit, round after round, until none is left.
So a dependent is claimable the moment its last dependency's completion commits, with no
sweep in between, and a rolled-back transaction leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.models import FINISHED_TASKS, Task

# A cascade deeper than this is a bug (the graph is acyclic by construction).
MAX_ROUNDS = 10_000

Reaction = Callable[[list[Task]], None]
REACTIONS: list[Reaction] = []


def reaction(func: Reaction) -> Reaction:
    """Register ``func(finished_tasks)`` to run before each commit that finished tasks."""
    REACTIONS.append(func)
    return func


def settle(session: Session) -> None:
    """Run the reactions on the tasks finished in this transaction, cascades included."""
    for _ in range(MAX_ROUNDS):
        finished = session.info.pop(FINISHED_TASKS, None)
        if not finished:
            return
        unique = list({id(t): t for t in finished}.values())
        for react in REACTIONS:
            react(unique)
    raise RuntimeError(f"task reactions did not settle within {MAX_ROUNDS} rounds")


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    if session.info.get(FINISHED_TASKS):
        settle(session)
    # Then the tasks that became claimable (released dependents included) are routed.
    routing.route_recorded(session)
    # Last, every transition above (routing's included) goes to the metrics (counted after
    # the commit) and to the webhook outbox.
    metrics.note_task_events(session)
    webhooks.write_outbox(session)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    metrics.write_committed(session)  # first: it never raises
    wakeups.notify_agents(routing.winners_committed(session))
    webhooks.queue_committed(session)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    # What a rolled-back transaction finished or routed never happened.
    session.info.pop(FINISHED_TASKS, None)
    routing.forget(session)
    webhooks.forget(session)


# The modules whose reactions register on import (after REACTIONS exists: they import us).
from app.services import chains, dependencies, metrics, routing, webhooks  # noqa: E402,F401
from app.services.wakeups import wakeups  # noqa: E402
