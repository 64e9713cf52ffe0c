"""A task's neighbourhood in the dependency DAG, for the operator console to draw.

``task_graph`` walks a few levels up (the tasks it waits for, theirs, ...) and down (the
tasks waiting for it, ...) with two queries a level each way, so a task with thousands of
dependents costs the same as one with three; past ``limit`` tasks the rest are counted,
not loaded. It then lays the tasks out in layers, left to right: a node's layer is its
longest path to the task (so every edge points right), and each layer is ordered to keep
edges short (barycentre sweeps, the usual heuristic of layered drawings).

``task_links`` adds what the page lists beside the drawing: the direct dependencies and
dependents, with the "still blocking" flags of services/dependencies, and the chain the
task is a step of.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from sqlalchemy import ColumnElement, func, select

from app.extensions import db
from app.models import Task, TaskChain, TaskDependency, TaskStatus
from app.services import chains
from app.services.dependencies import list_dependencies, list_dependents, satisfies
from app.services.dispatch import visible_task
from app.services.errors import NotFound
from app.services.principal import Principal

DEPTH = 2
LIMIT = 60
# Tasks drawn per level and side: a column taller than this is no longer readable.
LEVEL_LIMIT = 8
# The direct neighbours listed under the drawing (dependencies are capped at 100 anyway).
LIST_LIMIT = 50
SWEEPS = 4


@dataclass(frozen=True)
class GraphNode:
    id: str
    task_type: str
    capability: str
    status: str
    layer: int  # < 0 for what the task waits for, 0 for the task, > 0 for what waits for it
    row: int = 0  # place within the layer, top first


@dataclass(frozen=True)
class GraphEdge:
    source: str  # the dependency
    target: str  # the task that waits for it
    waiting: bool  # the target is BLOCKED and this dependency still holds it back


@dataclass(frozen=True)
class TaskGraph:
    task_id: str
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    # Tasks found at a layer but not loaded because of the limit, by layer.
    hidden: dict[int, int] = field(default_factory=dict)
    # Dependencies (dependents) exist beyond the levels walked.
    more_before: bool = False
    more_after: bool = False

    @property
    def hidden_total(self) -> int:
        return sum(self.hidden.values())

    @property
    def is_empty(self) -> bool:
        """Only the task itself: it neither waits for nor is waited for by anything."""
        return len(self.nodes) <= 1 and not self.hidden

    def layers(self) -> dict[int, list[GraphNode]]:
        """The nodes of each layer in row order, layers left to right."""
        found: dict[int, list[GraphNode]] = defaultdict(list)
        for node in sorted(self.nodes, key=lambda n: (n.layer, n.row)):
            found[node.layer].append(node)
        for layer in self.hidden:
            found.setdefault(layer, [])
        return dict(sorted(found.items()))


@dataclass(frozen=True)
class Row:
    id: str
    task_type: str
    capability: str
    status: str
    on_dependency_failure: str


COLUMNS = (
    Task.id,
    Task.task_type,
    Task.capability_required,
    Task.status,
    Task.on_dependency_failure,
)


def as_row(values: Any) -> Row:
    return Row(values[0], values[1], values[2], values[3], values[4] or "cancel")


def visible(principal: Principal) -> list[ColumnElement[bool]]:
    # Dependencies never cross clients; the condition keeps a client's view its own anyway.
    return [] if principal.is_admin else [Task.client_id == principal.client_id]


def next_level(
    principal: Principal, frontier: Sequence[str], seen: set[str], *, upward: bool, take: int
) -> tuple[list[Row], int]:
    """Up to ``take`` unseen neighbours of ``frontier`` (oldest first) and how many exist."""
    near, far = (
        (TaskDependency.task_id, TaskDependency.depends_on_id)
        if upward
        else (TaskDependency.depends_on_id, TaskDependency.task_id)
    )
    conditions = [
        Task.id.in_(select(far).where(near.in_(frontier))),
        Task.id.notin_(seen),
        *visible(principal),
    ]
    total = db.session.scalar(select(func.count()).select_from(Task).where(*conditions)) or 0
    if not total or take <= 0:
        return [], total
    rows = db.session.execute(
        select(*COLUMNS).where(*conditions).order_by(Task.created_at, Task.id).limit(take)
    )
    return [as_row(r) for r in rows], total


def goes_further(frontier: Sequence[str], seen: set[str], *, upward: bool) -> bool:
    """Whether some task past the last level walked is linked to it."""
    if not frontier:
        return False
    near, far = (
        (TaskDependency.task_id, TaskDependency.depends_on_id)
        if upward
        else (TaskDependency.depends_on_id, TaskDependency.task_id)
    )
    found = db.session.execute(
        select(far).where(near.in_(frontier), far.notin_(seen)).limit(1)
    ).first()
    return found is not None


def task_graph(
    principal: Principal,
    task_id: str,
    *,
    depth: int = DEPTH,
    limit: int = LIMIT,
    level_limit: int = LEVEL_LIMIT,
) -> TaskGraph:
    """The task, ``depth`` levels of what it waits for and of what waits for it, laid out.

    At most ``limit`` tasks, the task included, and ``level_limit`` a level each way;
    levels are filled nearest first, taking turns up and down, so both sides show when a
    limit bites. Each level's walk goes on from the tasks drawn, not from those counted.
    """
    root = visible_task(principal, task_id)
    rows: dict[str, Row] = {root.id: as_row([getattr(root, c.key) for c in COLUMNS])}
    side: dict[str, int] = {root.id: 0}  # -1 above the task, +1 below
    hidden: dict[int, int] = {}
    frontiers = {True: [root.id], False: [root.id]}
    for level in range(1, depth + 1):
        for upward in (True, False):
            frontier = frontiers[upward]
            if not frontier:
                continue
            take = min(level_limit, limit - len(rows))
            found, total = next_level(principal, frontier, set(rows), upward=upward, take=take)
            for row in found:
                rows[row.id] = row
                side[row.id] = -1 if upward else 1
            if total > len(found):
                hidden[-level if upward else level] = total - len(found)
            frontiers[upward] = [row.id for row in found]
    ids = list(rows)
    pairs: list[tuple[str, str]] = []
    if len(ids) > 1:
        links = db.session.execute(
            select(TaskDependency.depends_on_id, TaskDependency.task_id).where(
                TaskDependency.task_id.in_(ids), TaskDependency.depends_on_id.in_(ids)
            )
        )
        pairs = [(source, target) for source, target in links]
    layer = assign_layers(side, pairs)
    rank = order_layers(layer, pairs, ids)
    nodes = [
        GraphNode(
            id=row.id,
            task_type=row.task_type,
            capability=row.capability,
            status=row.status,
            layer=layer[row.id],
            row=rank[row.id],
        )
        for row in rows.values()
    ]
    edges = [
        GraphEdge(
            source=source,
            target=target,
            waiting=rows[target].status == TaskStatus.BLOCKED
            and not satisfies(rows[source].status, rows[target].on_dependency_failure),
        )
        for source, target in sorted(pairs, key=lambda p: (rank[p[0]], rank[p[1]]))
    ]
    seen = set(rows)
    return TaskGraph(
        task_id=root.id,
        nodes=nodes,
        edges=edges,
        hidden=hidden,
        more_before=goes_further(frontiers[True], seen, upward=True),
        more_after=goes_further(frontiers[False], seen, upward=False),
    )


def assign_layers(side: dict[str, int], pairs: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Each node's layer: minus its longest path to the task (``side`` 0) above it, plus
    it below.

    Longest paths (not the levels of the walk) make every edge point right: a task that
    the root needs directly and through another dependency sits left of that dependency.
    """
    pairs = list(pairs)
    distance = dict.fromkeys(side, 0)
    for _ in range(len(side)):
        changed = False
        for source, target in pairs:
            if side[source] < 0 and side[target] <= 0:  # above the task (or into it)
                node, reach = source, distance[target] + 1
            elif side[target] > 0 and side[source] >= 0:  # below it (or out of it)
                node, reach = target, distance[source] + 1
            else:
                continue
            if reach > distance[node]:
                distance[node], changed = reach, True
        if not changed:
            break
    return {node: side[node] * distance[node] for node in side}


def order_layers(
    layer: dict[str, int], pairs: Sequence[tuple[str, str]], ids: Sequence[str]
) -> dict[str, int]:
    """A row for each node within its layer: sweeps that sort by the mean of the
    neighbours' rows in the layer just swept, starting from the order found (oldest first).
    """
    layers: dict[int, list[str]] = defaultdict(list)
    for node in ids:
        layers[layer[node]].append(node)
    neighbours: dict[str, list[str]] = defaultdict(list)
    for source, target in pairs:
        neighbours[source].append(target)
        neighbours[target].append(source)

    def centred(nodes: list[str]) -> dict[str, float]:
        middle = (len(nodes) - 1) / 2
        return {node: i - middle for i, node in enumerate(nodes)}

    keys = sorted(layers)
    for sweep in range(SWEEPS):
        order = keys if sweep % 2 == 0 else keys[::-1]
        for previous, current in pairwise(order):
            placed, here = centred(layers[previous]), centred(layers[current])
            weight: dict[str, float] = {}
            for node in layers[current]:
                near = [placed[n] for n in neighbours[node] if n in placed]
                weight[node] = sum(near) / len(near) if near else here[node]
            layers[current].sort(key=weight.__getitem__)
    return {node: i for nodes in layers.values() for i, node in enumerate(nodes)}


# ---------------------------------------------------------------------------------------
# What the task page lists beside the drawing
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkedTask:
    id: str
    task_type: str
    status: str
    blocking: bool


@dataclass(frozen=True)
class TaskLinks:
    graph: TaskGraph
    dependencies: list[LinkedTask]
    dependents: list[LinkedTask]
    dependents_total: int
    chain: TaskChain | None

    @property
    def has_graph(self) -> bool:
        return not self.graph.is_empty


def linked(entries: list[dict[str, Any]]) -> list[LinkedTask]:
    """The services' {task_id, status, blocking} entries, with each task's type."""
    ids = [e["task_id"] for e in entries]
    types = dict(db.session.execute(select(Task.id, Task.task_type).where(Task.id.in_(ids))).all())
    return [
        LinkedTask(e["task_id"], types.get(e["task_id"], "?"), e["status"], e["blocking"])
        for e in entries
    ]


def chain_of(principal: Principal, task: Task) -> TaskChain | None:
    if task.chain_id is None:
        return None
    try:
        return chains.visible_chain(principal, task.chain_id)
    except NotFound:
        return None


def task_links(
    principal: Principal,
    task: Task,
    *,
    depth: int = DEPTH,
    limit: int = LIMIT,
    level_limit: int = LEVEL_LIMIT,
    list_limit: int = LIST_LIMIT,
) -> TaskLinks:
    """The task's graph, its direct dependencies and dependents, and its chain."""
    graph = task_graph(principal, task.id, depth=depth, limit=limit, level_limit=level_limit)
    chain = chain_of(principal, task)
    if graph.is_empty:
        return TaskLinks(graph, [], [], 0, chain)
    dependencies = list_dependencies(principal, task.id)["dependencies"]
    dependents = list_dependents(principal, task.id, limit=list_limit)
    return TaskLinks(
        graph=graph,
        dependencies=linked(dependencies),
        dependents=linked(dependents["dependents"]),
        dependents_total=dependents["total"],
        chain=chain,
    )
