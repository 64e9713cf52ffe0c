"""Where each step of a chain stands, for the console's progress bars and stepper.

A chain records a step's outcome when its task finishes (``step_results``); the step
running now is read from its task, and steps not reached yet have no task at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select

from app.extensions import db
from app.models import ChainStatus, Task, TaskChain, TaskStatus

# Step states besides a task's status: not reached yet, or never to run (the chain ended).
WAITING = "WAITING"
SKIPPED = "SKIPPED"


@dataclass(frozen=True)
class StepView:
    index: int
    task_type: str
    capability: str
    template_id: str | None
    state: str  # the outcome recorded for the step, else its task's status, else WAITING/SKIPPED
    task: Task | None
    result_data: Any
    error: str | None

    @property
    def number(self) -> int:
        return self.index + 1


def recorded(chain: TaskChain) -> dict[int, dict[str, Any]]:
    """The outcome that decided each finished step (a later requeue does not change it)."""
    return {r["step"]: r for r in chain.step_results or []}


def unreached(chain: TaskChain) -> str:
    return SKIPPED if chain.status in ChainStatus.TERMINAL else WAITING


def chain_steps(chain: TaskChain) -> list[StepView]:
    """Every step of one chain with its task (one query)."""
    tasks = {
        task.chain_step: task
        for task in db.session.scalars(
            select(Task).where(Task.chain_id == chain.id).order_by(Task.created_at)
        )
    }
    outcomes = recorded(chain)
    views = []
    for index, step in enumerate(chain.steps or []):
        task, outcome = tasks.get(index), outcomes.get(index)
        if outcome is not None:
            state = outcome["status"]
        elif task is not None:
            state = task.status
        else:
            state = unreached(chain)
        if outcome is not None:
            result, error = outcome.get("result_data"), outcome.get("error_message")
        elif task is not None and task.status == TaskStatus.COMPLETED:
            result, error = task.result_data, None
        else:
            result, error = None, task.error_message if task is not None else None
        views.append(
            StepView(
                index=index,
                task_type=step.get("task_type") or "?",
                capability=step.get("capability_required") or "?",
                template_id=step.get("template_id"),
                state=state,
                task=task,
                result_data=result,
                error=error,
            )
        )
    return views


def step_states(chains: Sequence[TaskChain]) -> dict[str, list[str]]:
    """The state of every step of each chain, for a page of chains (one query)."""
    running = [c for c in chains if c.current_step < len(c.steps or [])]
    current: dict[tuple[str, int], str] = {}
    if running:
        rows = db.session.execute(
            select(Task.chain_id, Task.chain_step, Task.status).where(
                or_(
                    *(
                        and_(Task.chain_id == c.id, Task.chain_step == c.current_step)
                        for c in running
                    )
                )
            )
        )
        current = {(chain_id, step): status for chain_id, step, status in rows}
    states = {}
    for chain in chains:
        outcomes = recorded(chain)
        states[chain.id] = [
            outcomes[i]["status"]
            if i in outcomes
            else current.get((chain.id, i)) or unreached(chain)
            for i in range(len(chain.steps or []))
        ]
    return states
