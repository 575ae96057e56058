"""Lineage and related-event graphs (no I/O): what :meth:`EventLog.lineage` and :meth:`EventLog.graph` return.

Two kinds of links join events: ``parent_id`` (the event that caused this one; a tree, rooted at ``root_id``)
and ``related`` (any other event this one refers to; a graph that may have cycles). An outcome recorded later
for an event is a child of it, of type :data:`OUTCOME_TYPE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from meshlog.events import RecordedEvent

__all__ = ["DEFAULT_GRAPH_LIMIT", "MAX_GRAPH_LIMIT", "OUTCOME_TYPE", "Edge", "Graph", "GraphNode", "Lineage"]

OUTCOME_TYPE: Final = "outcome.recorded"
"""The type of the events :meth:`EventLog.record_outcome` appends."""


@dataclass(frozen=True, slots=True)
class Lineage:
    """An event with its causal chain: ``ancestors`` from the root down to its parent, and every event
    descended from it (children, grandchildren …) in position order."""

    event: RecordedEvent
    ancestors: list[RecordedEvent]
    descendants: list[RecordedEvent]

    @property
    def root(self) -> RecordedEvent:
        return self.ancestors[0] if self.ancestors else self.event

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event.to_dict(),
            "ancestors": [e.to_dict() for e in self.ancestors],
            "descendants": [e.to_dict() for e in self.descendants],
        }


DEFAULT_GRAPH_LIMIT: Final = 1000
"""How many events a graph holds unless asked for another number (the nearest first)."""
MAX_GRAPH_LIMIT: Final = 10_000


@dataclass(frozen=True, slots=True)
class GraphNode:
    event: RecordedEvent
    distance: int
    """Hops from the start event (0 for the start itself)."""


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    """The id of the event that holds the link (the child, or the event listing ``related`` ids)."""
    target: str
    """The id it points to (the parent, or the related event)."""
    kind: Literal["parent", "related"]


@dataclass(frozen=True, slots=True)
class Graph:
    """The events within ``max_depth`` hops of ``start`` (through parent and related links, both directions)
    and the links between them."""

    start: str
    nodes: list[GraphNode]
    edges: list[Edge]
    truncated: bool = False
    """More events were within reach than the limit let in (the nearest were kept)."""

    @classmethod
    def build(cls, start: str, found: list[tuple[RecordedEvent, int]], *, truncated: bool = False) -> Graph:
        nodes = [GraphNode(event, distance) for event, distance in found]
        ids = {node.event.id for node in nodes}
        edges = []
        for node in nodes:
            e = node.event
            if e.parent_id in ids:
                assert e.parent_id is not None
                edges.append(Edge(e.id, e.parent_id, "parent"))
            edges.extend(Edge(e.id, target, "related") for target in e.related if target in ids)
        return cls(start, nodes, edges, truncated)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "nodes": [{"distance": n.distance, "event": n.event.to_dict()} for n in self.nodes],
            "edges": [{"source": e.source, "target": e.target, "kind": e.kind} for e in self.edges],
            "truncated": self.truncated,
        }
