"""The dependency graph as inline SVG geometry: boxes in columns, curved edges between them.

services/graph decides the layers and the order within each; this module only turns them
into pixels, so the template draws what it is given and needs no script.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.services.graph import GraphEdge, GraphNode, TaskGraph

NODE_WIDTH = 176
NODE_HEIGHT = 50
COLUMN_GAP = 60
ROW_GAP = 14
MARGIN = 4  # room for the current node's thicker outline
ARROW_GAP = 3  # the arrowhead stops short of the box it points at
LABEL_CHARS = 19


@dataclass(frozen=True)
class PlacedNode:
    node: GraphNode
    x: float
    y: float
    current: bool

    @property
    def label(self) -> str:
        """The task type, cut to what fits in the box (the full one is in its title)."""
        name = self.node.task_type
        return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1].rstrip() + "…"


@dataclass(frozen=True)
class PlacedEdge:
    edge: GraphEdge
    path: str


@dataclass(frozen=True)
class MoreMarker:
    """'+N more': tasks of a layer that the limit left out."""

    count: int
    x: float
    y: float


@dataclass(frozen=True)
class Drawing:
    width: float
    height: float
    nodes: list[PlacedNode]
    edges: list[PlacedEdge]
    more: list[MoreMarker]
    node_width: int = NODE_WIDTH
    node_height: int = NODE_HEIGHT


def draw(graph: TaskGraph) -> Drawing:
    """Place each layer in a column, left to right, each column centred on the tallest."""
    layers = graph.layers()
    step = NODE_HEIGHT + ROW_GAP
    slots = {
        layer: len(nodes) + (1 if graph.hidden.get(layer) else 0) for layer, nodes in layers.items()
    }
    tallest = max(slots.values(), default=1)
    nodes: list[PlacedNode] = []
    more: list[MoreMarker] = []
    where: dict[str, tuple[float, float]] = {}
    for column, (layer, members) in enumerate(layers.items()):
        x = MARGIN + column * (NODE_WIDTH + COLUMN_GAP)
        top = MARGIN + (tallest - slots[layer]) * step / 2
        for row, node in enumerate(members):
            y = top + row * step
            where[node.id] = (x, y)
            nodes.append(PlacedNode(node, x, y, current=node.id == graph.task_id))
        if graph.hidden.get(layer):
            more.append(MoreMarker(graph.hidden[layer], x, top + len(members) * step))
    edges = [
        PlacedEdge(edge, curve(where[edge.source], where[edge.target])) for edge in graph.edges
    ]
    columns = len(layers)
    return Drawing(
        width=2 * MARGIN + columns * NODE_WIDTH + (columns - 1) * COLUMN_GAP,
        height=2 * MARGIN + tallest * step - ROW_GAP,
        nodes=nodes,
        edges=edges,
        more=more,
    )


def curve(source: tuple[float, float], target: tuple[float, float]) -> str:
    """From the middle of the source's right side to the target's left, as an S-curve."""
    x1, y1 = source[0] + NODE_WIDTH, source[1] + NODE_HEIGHT / 2
    x2, y2 = target[0] - ARROW_GAP, target[1] + NODE_HEIGHT / 2
    bend = max((x2 - x1) / 2, 24)
    return f"M{x1:g} {y1:g} C{x1 + bend:g} {y1:g} {x2 - bend:g} {y2:g} {x2:g} {y2:g}"
