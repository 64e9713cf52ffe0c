"""Task chains: steps run one after another, each fed the previous step's result.

Creating a chain validates every step and creates the first step's task at once. After
that the chain moves only when one of its tasks finishes: ``advance_chains`` is a
workflows reaction, so it runs in the very transaction that finished the task. A completed
step creates the next step's task in that commit (claimable the moment it commits, no
polling), a failed or expired one (after its retries) fails the chain, a cancelled one
cancels it. Steps are numbered from 0, as ``current_step`` and ``Task.chain_step`` are.

Templates are resolved when the chain is created: ``steps`` stores each step as it will
run (template defaults, the step's own fields on top, the template's version), so editing
or deleting a template later does not change chains already created.

Locks: task row first, chain row second (a report locks the task, then its reaction locks
the chain); ``cancel_chain`` takes them in the same order, so the two cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_

from app.extensions import db
from app.lib.clock import isoformat, utcnow
from app.lib.tokens import new_id
from app.models import ChainStatus, Role, Task, TaskChain, TaskStatus
from app.services import cancellation, workflows
from app.services.dispatch import build_task, resolve_client_id
from app.services.errors import Conflict, InvalidInput, NotFound, invalid
from app.services.principal import Principal
from app.services.templates import task_fields_from_template

MAX_STEPS = 50
# What a stored step keeps: the fields its task is built from, and where they came from.
STEP_FIELDS = (
    "task_type",
    "capability_required",
    "input_data",
    "priority",
    "max_retries",
    "retry_policy",
    "timeout_seconds",
    "retry_on_timeout",
    "expires_in_seconds",
    "routing_strategy",
    "template_id",
    "template_version",
)
# Cancelling retries this often when the chain moves on between reading and locking it.
CANCEL_TRIES = 5


def chain_runner(chain_id: str) -> Principal:
    """A chain creating its step's task: admin rights, written as ``chain:<id>``."""
    return Principal(role=Role.ADMIN, name="chain", acting_as=f"chain:{chain_id}")


# ---------------------------------------------------------------------------------------
# Create
# ---------------------------------------------------------------------------------------


def plan_step(
    principal: Principal, client_id: str, index: int, step: dict[str, Any]
) -> dict[str, Any]:
    """The fields step ``index`` will run with: its own, or a template's with its on top."""
    prefix = f"steps.{index}"
    template_id = step.get("template_id")
    if template_id:
        for name in ("task_type", "capability_required"):
            if step.get(name) is not None:
                raise invalid(f"{prefix}.{name}", "comes from the template: leave it out")
        overrides = {k: v for k, v in step.items() if k in STEP_FIELDS and k != "template_id"}
        try:
            fields = task_fields_from_template(
                principal, template_id, {**overrides, "client_id": client_id}
            )
        except NotFound as exc:
            raise invalid(f"{prefix}.template_id", exc.message) from None
        except InvalidInput as exc:
            raise InvalidInput(
                f"{prefix}: {exc.message}",
                [{**d, "field": step_field(prefix, d.get("field"))} for d in exc.details]
                or [{"field": prefix, "message": exc.message}],
            ) from None
    else:
        for name in ("task_type", "capability_required"):
            if not step.get(name):
                raise invalid(f"{prefix}.{name}", "required when the step has no template_id")
        fields = step
    planned = {name: fields.get(name) for name in STEP_FIELDS}
    planned["input_data"] = dict(planned["input_data"] or {})
    planned["retry_on_timeout"] = bool(planned["retry_on_timeout"])
    return planned


def step_field(prefix: str, field: str | None) -> str:
    """A template's error about a task field, as the field of the step it came from."""
    if not field:
        return prefix
    if field == "client_id":  # the chain's client may not use another client's template
        return f"{prefix}.template_id"
    return f"{prefix}.{field}"


def create_chain(
    principal: Principal,
    name: str,
    steps: Sequence[dict[str, Any]],
    *,
    client_id: str | None = None,
    now: datetime | None = None,
) -> TaskChain:
    """A RUNNING chain with its first step's task; every step is validated first.

    ``steps`` are task fields with the API's defaults filled in, or, for a step with a
    ``template_id``, only the fields the client gave (they override the template's).
    """
    now = now or utcnow()
    principal.require_role(Role.CLIENT)
    client_id = resolve_client_id(principal, client_id)
    if not 1 <= len(steps) <= MAX_STEPS:
        raise invalid("steps", f"a chain has 1 to {MAX_STEPS} steps, got {len(steps)}")
    # Steps that use a template count a use on its row: take those row locks in one order
    # (by template id) so two chains naming the same templates in another order cannot
    # deadlock; the steps keep their own order.
    order = sorted(range(len(steps)), key=lambda i: (str(steps[i].get("template_id") or ""), i))
    by_index = {i: plan_step(principal, client_id, i, steps[i]) for i in order}
    planned = [by_index[i] for i in range(len(steps))]
    chain = TaskChain(
        id=new_id("chain"),
        client_id=client_id,
        name=name,
        status=ChainStatus.RUNNING,
        current_step=0,
        steps=planned,
        step_results=[],
        created_by=principal.actor,
        created_at=now,
        updated_at=now,
        started_at=now,
    )
    db.session.add(chain)
    start_step(chain, 0, None, now)
    db.session.commit()
    return chain


def start_step(
    chain: TaskChain, index: int, previous_output: dict[str, Any] | None, now: datetime
) -> Task:
    """Create step ``index``'s task; after the first, its input carries previous_output."""
    fields = dict(chain.steps[index])
    input_data = dict(fields.get("input_data") or {})
    if index > 0:
        input_data["previous_output"] = previous_output
    fields.update(input_data=input_data, client_id=chain.client_id)
    task = build_task(chain_runner(chain.id), fields, now=now)
    task.chain_id = chain.id
    task.chain_step = index
    chain.current_step = index
    chain.updated_at = now
    return task


# ---------------------------------------------------------------------------------------
# React to a step's task finishing
# ---------------------------------------------------------------------------------------


@workflows.reaction
def advance_chains(finished: list[Task]) -> None:
    """Move each chain whose step's task just finished (in the same transaction)."""
    for task in sorted(
        (t for t in finished if t.chain_id is not None), key=lambda t: (t.chain_id, t.chain_step)
    ):
        # The task row is locked by whoever finished it; the chain row comes second.
        chain = db.session.scalars(
            db.select(TaskChain)
            .where(TaskChain.id == task.chain_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).first()
        if chain is not None and task.chain_step is not None:
            settle_step(chain, task, task.updated_at or utcnow())


def settle_step(chain: TaskChain, task: Task, now: datetime) -> None:
    """Record the step's outcome; then start the next step, or end the chain."""
    step = task.chain_step
    assert step is not None
    if any(r["step"] == step for r in chain.step_results or []):
        return  # the outcome that decided this step stands (e.g. a later dead-letter requeue)
    chain.step_results = [
        *(chain.step_results or []),
        {
            "step": step,
            "task_id": task.id,
            "status": task.status,
            "result_data": task.result_data if task.status == TaskStatus.COMPLETED else None,
            "error_message": step_error(task),
        },
    ]
    chain.updated_at = now
    if chain.status in ChainStatus.TERMINAL or step != chain.current_step:
        return  # cancelled meanwhile (its running step just ended): nothing more starts
    if task.status == TaskStatus.COMPLETED:
        if step + 1 < len(chain.steps):
            start_step(chain, step + 1, task.result_data or {}, now)
            return
        chain.status = ChainStatus.COMPLETED
        chain.current_step = len(chain.steps)
    elif task.status == TaskStatus.CANCELLED:
        chain.status = ChainStatus.CANCELLED
        chain.cancelled_at = now
        why = f": {task.cancellation_reason}" if task.cancellation_reason else ""
        chain.cancellation_reason = (
            f"step {step}'s task {task.id} was cancelled by {task.cancelled_by or 'the system'}"
            + why
        )
    else:  # FAILED (retries spent or not retryable), or EXPIRED before it was claimed
        chain.status = ChainStatus.FAILED
        chain.error_message = f"step {step} ({task.task_type}, task {task.id}) {task.status}: " + (
            task.error_message or "no error message"
        )
    chain.completed_at = now


def step_error(task: Task) -> str | None:
    if task.status == TaskStatus.COMPLETED:
        return None
    if task.status == TaskStatus.CANCELLED:
        return task.cancellation_reason or "cancelled"
    return task.error_message


# ---------------------------------------------------------------------------------------
# Cancel
# ---------------------------------------------------------------------------------------


def cancel_chain(
    principal: Principal, chain_id: str, reason: str | None, *, now: datetime | None = None
) -> TaskChain:
    """Cancel the chain: no further step starts, the running step's task is cancelled.

    A waiting step task ends CANCELLED at once; a running one is asked to stop (its agent
    confirms, or the grace period ends it). A finished chain is a 409.
    """
    now = now or utcnow()
    for _ in range(CANCEL_TRIES):
        step = visible_chain(principal, chain_id).current_step
        # Task first, then the chain: the order the reaction to a finishing task takes.
        task = db.session.scalars(
            db.select(Task)
            .where(Task.chain_id == chain_id, Task.chain_step == step)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).first()
        chain = visible_chain(principal, chain_id, lock=True)
        if chain.status in ChainStatus.TERMINAL:
            status = chain.status
            db.session.rollback()
            raise Conflict(f"chain {chain_id!r} is already {status}")
        if chain.current_step == step:
            break
        db.session.rollback()  # the step finished and the next one started meanwhile
    else:
        raise Conflict(f"chain {chain_id!r} kept moving on while being cancelled; try again")
    chain.status = ChainStatus.CANCELLED
    chain.cancelled_at = now
    chain.completed_at = now
    chain.cancellation_reason = reason
    chain.updated_at = now
    if task is not None and not task.is_terminal and task.cancel_requested_at is None:
        why = f"chain {chain_id} cancelled" + (f": {reason}" if reason else "")
        cancellation.cancel_task(principal, task.id, why, now=now)  # commits the chain too
    else:
        db.session.commit()
    return chain


# ---------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------


def visible_chain(principal: Principal, chain_id: str, *, lock: bool = False) -> TaskChain:
    """A chain the principal may see: clients their own (others are 404), admins all."""
    principal.require_role(Role.CLIENT)
    query = db.select(TaskChain).where(TaskChain.id == chain_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    chain = db.session.scalars(query).first()
    if chain is None or (not principal.is_admin and chain.client_id != principal.client_id):
        db.session.rollback()
        raise NotFound(f"chain {chain_id!r} not found")
    return chain


@dataclass(frozen=True)
class ChainPage:
    chains: list[TaskChain]
    total: int


def list_chains(
    principal: Principal,
    *,
    client_id: str | None = None,
    status: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> ChainPage:
    """Chains the principal may see, newest first."""
    principal.require_role(Role.CLIENT)
    query = db.select(TaskChain)
    if not principal.is_admin:
        query = query.where(TaskChain.client_id == principal.client_id)
    if client_id:
        query = query.where(TaskChain.client_id == client_id)
    if status:
        query = query.where(TaskChain.status == status)
    total = db.session.scalar(db.select(func.count()).select_from(query.subquery())) or 0
    chains = list(
        db.session.scalars(
            query.order_by(TaskChain.created_at.desc(), TaskChain.id.desc())
            .limit(limit)
            .offset(offset)
        )
    )
    return ChainPage(chains, total)


def current_task_ids(chains: Sequence[TaskChain]) -> dict[str, str]:
    """The task of each chain's current step (none once a chain has completed)."""
    if not chains:
        return {}
    rows = db.session.execute(
        db.select(Task.chain_id, Task.id).where(
            or_(*(and_(Task.chain_id == c.id, Task.chain_step == c.current_step) for c in chains))
        )
    )
    return {chain_id: task_id for chain_id, task_id in rows}


def chain_dict(chain: TaskChain, current: dict[str, str] | None = None) -> dict[str, Any]:
    """The API shape of a chain; ``current``: ``current_task_ids`` of a page of chains."""
    if current is None:
        current = current_task_ids([chain])
    return {
        "chain_id": chain.id,
        "name": chain.name,
        "client_id": chain.client_id,
        "status": chain.status,
        "current_step": chain.current_step,
        "total_steps": len(chain.steps or []),
        "steps": chain.steps or [],
        "step_results": chain.step_results or [],
        "current_task_id": current.get(chain.id),
        "error_message": chain.error_message,
        "created_by": chain.created_by,
        "created_at": isoformat(chain.created_at),
        "updated_at": isoformat(chain.updated_at),
        "started_at": isoformat(chain.started_at),
        "completed_at": isoformat(chain.completed_at),
        "cancelled_at": isoformat(chain.cancelled_at),
        "cancellation_reason": chain.cancellation_reason,
    }
