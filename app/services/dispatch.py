"""Submit and claim: the front half of the dispatch loop (reports.py is the back half)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.lib.clock import epoch_micros, utcnow
from app.lib.tokens import new_id
from app.models import (
    ROUTABLE_TASKS,
    AgentStatus,
    Role,
    Task,
    TaskStatus,
)
from app.services import routing
from app.services.attempts import open_attempt, stop_notices
from app.services.errors import Conflict, InvalidInput, NotFound, NotPermitted
from app.services.principal import Principal, require_agent
from app.services.settings import settings
from app.services.wakeups import wakeups

if TYPE_CHECKING:
    from app.services.dependencies import BatchScope

# With aging switched off, a priority level is worth ~4 months of waiting: priority rules.
NO_AGING_LEVEL_MICROS = 10**13


def queue_key(priority: int, enqueued_at: datetime, aging_seconds_per_level: int) -> int:
    """Claim order key: smaller is claimed first.

    effective priority = priority + waited / aging period, so ordering by it descending is
    ordering by (enqueued - priority x aging period) ascending: a static, indexable value.
    """
    level = aging_seconds_per_level * 1_000_000 or NO_AGING_LEVEL_MICROS
    return epoch_micros(enqueued_at) - priority * level


# Submit fields added after release: left out of the fingerprint at their defaults, so a
# replay of a body first sent before the upgrade still matches it.
LATER_DEFAULTS: dict[str, Any] = {"depends_on": [], "on_dependency_failure": "cancel"}


def fingerprint_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k not in LATER_DEFAULTS or v != LATER_DEFAULTS[k]}


def request_fingerprint(fields: dict[str, Any]) -> str:
    """Stable hash of a submit body, to tell a replay from a reused Idempotency-Key."""
    fields = fingerprint_fields(fields)
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def resolve_client_id(principal: Principal, client_id: str | None) -> str:
    """Clients submit for themselves; admins must name the client."""
    principal.require_role(Role.CLIENT)
    if principal.role == Role.CLIENT:
        if client_id is not None and client_id != principal.client_id:
            raise NotPermitted(
                f"this key submits for client {principal.client_id!r}, not {client_id!r}"
            )
        assert principal.client_id is not None
        return principal.client_id
    if not client_id:
        raise InvalidInput(
            "client_id is required", [{"field": "client_id", "message": "Field required"}]
        )
    return client_id


def build_task(
    principal: Principal,
    fields: dict[str, Any],
    *,
    now: datetime,
    sequence: int = 0,
    batch: BatchScope | None = None,
) -> Task:
    """A new task (PENDING, or BLOCKED on its dependencies) and its creation event, added
    to the session; in a batch, ``sequence`` is the item's index."""
    # Imported here: dependencies registers a workflows reaction, and workflows imports the
    # reaction modules, which import this one.
    from app.services import dependencies

    client_id = resolve_client_id(principal, fields.get("client_id"))
    plan = dependencies.plan_dependencies(client_id, fields, batch=batch, index=sequence)
    enqueued_at = now + timedelta(microseconds=sequence)
    task = Task(
        id=new_id("task"),
        client_id=client_id,
        task_type=fields["task_type"],
        capability_required=fields["capability_required"],
        input_data=plan.input_data if plan else fields.get("input_data") or {},
        priority=fields["priority"],
        queue_key=queue_key(fields["priority"], enqueued_at, settings.aging_seconds_per_level),
        enqueued_at=enqueued_at,
        max_retries=fields["max_retries"],
        retry_count=0,
        retry_policy=fields["retry_policy"],
        timeout_seconds=fields["timeout_seconds"],
        retry_on_timeout=fields.get("retry_on_timeout", False),
        expires_at=(
            now + timedelta(seconds=fields["expires_in_seconds"])
            if fields.get("expires_in_seconds")
            else None
        ),
        routing_strategy=fields.get("routing_strategy"),
        on_dependency_failure=fields.get("on_dependency_failure") or "cancel",
        template_id=fields.get("template_id"),
        template_version=fields.get("template_version"),
        attempt=0,
        created_by=principal.actor,
        created_at=now,
        updated_at=now,
    )
    db.session.add(task)
    if plan is not None:
        dependencies.attach(task, plan, actor=principal.actor, now=now)
        return task
    # status is still unset here, so the creation event reads None → PENDING.
    task.transition(TaskStatus.PENDING, actor=principal.actor, now=now, reason="submitted")
    return task


def submit_task(
    principal: Principal,
    fields: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> tuple[Task, bool]:
    """Create one task; return it and whether it was new (False: an idempotent replay)."""
    now = now or utcnow()
    # Fingerprint with the client resolved, so naming your own client_id or leaving it out
    # is the same request.
    fields = {**fields, "client_id": resolve_client_id(principal, fields.get("client_id"))}
    fingerprint = request_fingerprint(fields)
    if idempotency_key:
        existing = find_idempotent(fields["client_id"], [idempotency_key], fingerprint, now)
        if existing:
            return existing[0], False
    task = build_task(principal, fields, now=now)
    task.idempotency_key = idempotency_key
    task.request_hash = fingerprint if idempotency_key else None
    try:
        commit_keeping_state()
    except IntegrityError:
        # Two submits raced with the same Idempotency-Key: the other one won.
        db.session.rollback()
        if idempotency_key:
            existing = find_idempotent(fields["client_id"], [idempotency_key], fingerprint, now)
            if existing:
                return existing[0], False
        raise
    return task, True


def commit_keeping_state() -> None:
    """Commit without expiring the session's objects.

    A submit's response shows the tasks as this transaction wrote them: every column is
    set here or by routing, which runs before the commit on these same objects, and no
    column has a server-side default. Expiring them would make the response read each
    task back, one SELECT per task (100 for a full batch).
    """
    session = db.session()
    keep = session.expire_on_commit
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = keep


def find_idempotent(
    client_id: str | None, keys: Sequence[str], fingerprint: str, now: datetime, *, actor: str = ""
) -> list[Task]:
    """The live tasks earlier submits with these keys created, in key order.

    A key older than the idempotency TTL is released (so it may be used again); a key used
    with a different body is refused. Batches pass ``client_id=None`` and their actor, as
    an admin's batch may span clients.
    """
    query = db.select(Task).where(Task.idempotency_key.in_(keys))
    if client_id is not None:
        query = query.where(Task.client_id == client_id)
    else:
        query = query.where(Task.created_by == actor)
    found = list(db.session.scalars(query))
    oldest_live = now - timedelta(seconds=settings.idempotency_ttl_seconds)
    live = [t for t in found if t.created_at >= oldest_live]
    if len(live) < len(found):
        for task in found:
            if task.created_at < oldest_live:
                task.idempotency_key = None
        db.session.flush()  # free the keys before a new task takes them
    if any(t.request_hash != fingerprint for t in live):
        db.session.rollback()
        raise InvalidInput(
            "Idempotency-Key was already used with a different request body",
            [{"field": "Idempotency-Key", "message": "reused with a different body"}],
        )
    order = {key: i for i, key in enumerate(keys)}
    return sorted(live, key=lambda t: order.get(t.idempotency_key or "", 0))


@dataclass
class BatchOutcome:
    """Per-item results of a batch submit."""

    submitted: list[tuple[int, Task]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    replayed: bool = False


def batch_item_key(key: str, index: int) -> str:
    """The Idempotency-Key stored on item ``index`` of a batch submitted with ``key``."""
    return f"{key}#batch#{index}"


def submit_batch(
    principal: Principal,
    items: Sequence[dict[str, Any] | InvalidInput],
    *,
    atomic: bool,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> BatchOutcome:
    """Create the valid items; with ``atomic`` any invalid item creates nothing.

    ``items`` holds, per index, the validated fields or the InvalidInput that the API's
    validation raised for that item. With ``idempotency_key``, a replay of the same batch
    returns the tasks the first call created.
    """
    from app.services import dependencies  # see build_task

    now = now or utcnow()
    fingerprint = request_fingerprint(
        {
            "atomic": atomic,
            "items": [
                i.message if isinstance(i, InvalidInput) else fingerprint_fields(i) for i in items
            ],
        }
    )
    keys = (
        [batch_item_key(idempotency_key, i) for i in range(len(items))] if idempotency_key else []
    )
    outcome = BatchOutcome()
    if idempotency_key:
        scope = principal.client_id if principal.role == Role.CLIENT else None
        existing = find_idempotent(scope, keys, fingerprint, now, actor=principal.actor)
        if existing:
            by_key = {t.idempotency_key: t for t in existing}
            outcome.replayed = True
            outcome.submitted = [(i, by_key[k]) for i, k in enumerate(keys) if k in by_key]
    # Items are built after the items they depend on ("@index"), so they can name them.
    order, dependency_errors = dependencies.batch_order(items)
    scope = dependencies.batch_scope(items)
    scope.built.update(outcome.submitted)
    for index in order:
        item = items[index]
        if outcome.replayed and index in scope.built:
            continue
        if isinstance(item, InvalidInput) or index in dependency_errors:
            error = item if isinstance(item, InvalidInput) else dependency_errors[index]
            outcome.failed.append(
                {"index": index, "error": error.message, "details": error.details}
            )
            continue
        if outcome.replayed:
            # The first call did not create this item: report why, as it did then.
            try:
                client_id = resolve_client_id(principal, item.get("client_id"))
                dependencies.plan_dependencies(client_id, item, batch=scope, index=index)
            except (InvalidInput, NotPermitted) as exc:
                outcome.failed.append(
                    {"index": index, "error": exc.message, "details": exc.details}
                )
            continue
        try:
            task = build_task(principal, item, now=now, sequence=index, batch=scope)
        except (InvalidInput, NotPermitted) as exc:
            outcome.failed.append({"index": index, "error": exc.message, "details": exc.details})
            continue
        if idempotency_key:
            task.idempotency_key = keys[index]
            task.request_hash = fingerprint
        scope.built[index] = task
        outcome.submitted.append((index, task))
    outcome.submitted.sort(key=lambda pair: pair[0])
    outcome.failed.sort(key=lambda failure: failure["index"])
    if outcome.replayed:
        db.session.rollback()
        return outcome
    if atomic and outcome.failed:
        db.session.rollback()
        details = [{"field": f"tasks[{f['index']}]", "message": f["error"]} for f in outcome.failed]
        raise InvalidInput(
            f"{len(outcome.failed)} of {len(items)} tasks are invalid; nothing was created",
            details,
        )
    try:
        commit_keeping_state()
    except IntegrityError:
        # The same batch raced itself: the other call created the tasks.
        db.session.rollback()
        if not idempotency_key:
            raise
        return submit_batch(principal, items, atomic=atomic, idempotency_key=idempotency_key)
    return outcome


# An agent's reservations not expired, in queue order (bound: agent_id, now, limit).
_RESERVED = (
    Task.status == TaskStatus.ASSIGNED,
    Task.assigned_agent_id == bindparam("agent_id"),
    (Task.expires_at.is_(None)) | (Task.expires_at > bindparam("now")),
)
LOCK_ASSIGNED = (
    db.select(Task)
    .where(*_RESERVED)
    .order_by(Task.queue_key)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)


def lock_assigned(agent_id: str, limit: int, now: datetime) -> list[Task]:
    """Up to ``limit`` tasks routed to this agent, locked, in queue order.

    SKIP LOCKED: a task being cancelled or routed again right now is left to that writer.
    (The statement is built once: a claim runs it on every look.)
    """
    if limit <= 0:
        return []
    params = {"agent_id": agent_id, "now": now, "limit": limit}
    return list(db.session.scalars(LOCK_ASSIGNED, params))


RESERVATION_KEYS = (
    db.select(Task.queue_key).where(*_RESERVED).order_by(Task.queue_key).limit(bindparam("limit"))
)


def route_for_claim(principal: Principal, agent_id: str, max_tasks: int, now: datetime) -> bool:
    """Before a claim: when work waits unassigned that the agent could take (a slot its
    reservations leave free, or work better than they are), route it and commit, in a
    transaction of its own.

    A capability's routing lock serialises every routing pass of it (submits, claims,
    heartbeats, the sweep). Held through the whole claim (the agent's lock, the routing
    pass, then the claim's own writes) it made the other claims queue: the S2 drain spent
    a hundred milliseconds waiting for it per claim, and submits, completions and
    heartbeats queued behind the agent locks those waiting claims held. Committed first,
    the pass holds it for its assignments alone, and no agent lock is held while waiting
    for it. The claim that follows starts what was reserved for the agent. (A task routed
    to the claiming agent is so written twice: ASSIGNED, then ACTIVE.)

    Reads only, and leaves the transaction open, when nothing is to be routed. Returns
    True when work waits but the agent, read without a lock, had no free slot or was
    INACTIVE (a report or heartbeat in flight may change that before the claim's look).
    """
    waiting = routing.best_waiting_for(agent_id, now)
    if waiting is None:
        return False
    agent = require_agent(principal, agent_id)  # not locked: the claim locks it next
    slots = min(max_tasks, agent.max_concurrent_tasks - agent.active_tasks)
    keys: list[int] = []
    if agent.status != AgentStatus.INACTIVE and slots > 0:
        params = {"agent_id": agent_id, "now": now, "limit": slots}
        keys = list(db.session.scalars(RESERVATION_KEYS, params))
    unseen = agent.status == AgentStatus.INACTIVE or slots <= 0
    if unseen or (len(keys) == slots and keys[-1] < waiting):
        # Nothing to route for it (or its slots are reserved for better work than what
        # waits). The claim's locked read must see the row as it is then, not as here.
        db.session.expire(agent)
        return unseen
    if keys and keys[-1] > waiting:
        # Reservations behind the waiting work go back: routed again in queue order, so
        # no task starts before a better one.
        routing.give_back(agent_id, waiting, now)
    routing.route(agent.capability_names, now)
    db.session.info.pop(ROUTABLE_TASKS, None)  # routed just now: no second pass at commit
    # The claim that follows takes up to ``slots`` of what was routed to this agent.
    routing.spare_wakeups(db.session(), agent_id, slots)
    db.session.commit()
    return False


def claim_tasks(
    principal: Principal,
    agent_id: str,
    max_tasks: int,
    *,
    now: datetime | None = None,
) -> list[Task]:
    """Start up to ``max_tasks`` of the tasks routed to this agent, within its free slots.

    Tasks wait unassigned when no agent had a free slot as they became claimable. A claim
    that finds such work (and room for it, or reservations queued behind it) routes it
    first, which may hand some of it to better candidates, who are woken.
    """
    return claim_or_full(principal, agent_id, max_tasks, now=now).tasks


@dataclass
class ClaimPass:
    """One look at the queue for a claim: the tasks started, whether the agent had no free
    slot, and (when the pass ends the claim: tasks, or full) its stop notices, read in the
    same transaction."""

    tasks: list[Task]
    full: bool = False
    notices: dict[str, list[str]] | None = None


def claim_or_full(
    principal: Principal,
    agent_id: str,
    max_tasks: int,
    *,
    now: datetime | None = None,
    last: bool = False,
) -> ClaimPass:
    """``claim_tasks``, and whether the agent had no free slot (nothing can be routed to it
    until it reports a result, so a long poll need not wait). ``last``: the claim ends with
    this pass whatever it finds (no wait), so it reads the stop notices even when empty."""
    pinned = now is not None
    now = now or utcnow()
    for look in range(2):
        unseen = route_for_claim(principal, agent_id, max_tasks, now)
        # Locking the agent row serialises claims of one agent, so two concurrent polls
        # cannot both see the same free slot and exceed max_concurrent_tasks.
        agent = require_agent(principal, agent_id, lock=True)
        if agent.status == AgentStatus.INACTIVE:
            db.session.rollback()
            raise Conflict(f"agent {agent_id!r} is INACTIVE: send a heartbeat before claiming")
        slots = min(max_tasks, agent.max_concurrent_tasks - agent.active_tasks)
        if slots <= 0:
            notices = stop_notices(agent.id, now)
            db.session.rollback()
            return ClaimPass([], full=True, notices=notices)
        tasks = lock_assigned(agent.id, slots, now)
        if unseen and len(tasks) < slots and look == 0:
            # Work waits, and a slot freed (or the agent came back) between the unlocked
            # read that skipped routing and this locked one: route, then look again.
            db.session.rollback()
            continue
        break
    if not tasks:
        notices = stop_notices(agent.id, now) if last else None
        db.session.rollback()  # it wrote nothing
        return ClaimPass([], notices=notices)
    actor = f"agent:{agent.id}"
    # Stamp the claim after the rows are locked: a task is visible only once its submit
    # committed, so claimed_at can never precede its created_at.
    now = now if pinned else utcnow()
    for task in tasks:
        open_attempt(task, agent.id, now)
        task.transition(
            TaskStatus.ACTIVE,
            actor=actor,
            now=now,
            reason="claimed",
            data={"attempt": task.attempt},
        )
    agent.active_tasks += len(tasks)
    notices = stop_notices(agent.id, now)
    # The rows were read under lock and every change is made here: the answer shows them as
    # written, with no read-back (as submits do).
    commit_keeping_state()
    return ClaimPass(tasks, notices=notices)


def claim_tasks_waiting(
    principal: Principal,
    agent_id: str,
    max_tasks: int,
    wait_seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> ClaimPass:
    """Long poll: return as soon as tasks are claimed, or empty after ``wait_seconds``;
    with the agent's stop notices.

    The agent's wake-up tokens are dropped before each look at the database: a task routed
    to it after the look pushes its token after the drop, so the wait that follows sees it.
    An idle poll therefore costs one claim and one wait; one that ends at its timeout with
    no token does not look again (a token Redis lost only delays the task to the next
    poll, which looks first). A full agent answers at once (nothing can be routed to it),
    as does a process shutting down (``wakeups.closing``). The notices come from the last
    look's transaction when it found tasks or a full agent, or was the only look (no
    wait), else from one read at the end.
    """
    deadline = clock() + wait_seconds
    if wait_seconds <= 0 or wakeups.closing.is_set():
        found = claim_or_full(principal, agent_id, max_tasks, last=True)
    else:
        wakeups.clear(agent_id)
        found = claim_or_full(principal, agent_id, max_tasks)
        while not (found.tasks or found.full or wakeups.closing.is_set()):
            remaining = deadline - clock()
            if remaining <= 0:
                break
            woken = wakeups.wait(agent_id, remaining)
            if not woken and deadline - clock() <= 0:
                break  # timed out with no token
            wakeups.clear(agent_id)
            found = claim_or_full(principal, agent_id, max_tasks)
    if found.notices is None:
        found.notices = claim_notices(agent_id)
    return found


def claim_notices(agent_id: str) -> dict[str, list[str]]:
    """The stop notices a claim response carries (the agent was authorised by the claim)."""
    notices = stop_notices(agent_id, utcnow())
    db.session.rollback()
    return notices


def visible_task(principal: Principal, task_id: str, *, lock: bool = False) -> Task:
    """A task the principal may see; others are 404 so ids do not leak."""
    query = db.select(Task).where(Task.id == task_id)
    if lock:
        query = query.with_for_update()
    task = db.session.scalars(query).first()
    if task is None or not principal.can_see_task(task):
        db.session.rollback()
        raise NotFound(f"task {task_id!r} not found")
    return task


def update_priority(
    principal: Principal, task_id: str, priority: int, *, now: datetime | None = None
) -> Task:
    """Change a waiting task's priority; its place in the queue follows at once."""
    now = now or utcnow()
    principal.require_role(Role.CLIENT)
    task = visible_task(principal, task_id, lock=True)
    if task.is_terminal:
        status = task.status
        db.session.rollback()
        raise Conflict(f"task {task_id!r} is already {status}")
    apply_priority(principal, task, priority, now=now)
    db.session.commit()
    return task


def apply_priority(principal: Principal, task: Task, priority: int, *, now: datetime) -> None:
    """Give one locked, unfinished task a new priority and queue place, without committing."""
    old = task.priority
    task.priority = priority
    task.queue_key = queue_key(priority, task.enqueued_at, settings.aging_seconds_per_level)
    task.transition(
        task.status,
        actor=principal.actor,
        now=now,
        reason=f"priority {old} → {priority}",
        data={"priority_from": old, "priority_to": priority},
    )
