"""Projections: fold a stream of events into state.

A projection is anything with ``initial()`` and ``apply(state, event)``; ``apply`` returns the new state
(it may also mutate and return the same object). Plain functions work too, through :class:`FunctionProjection`::

    class CountByType:
        def initial(self) -> dict[str, int]:
            return {}

        def apply(self, state: dict[str, int], event: RecordedEvent) -> dict[str, int]:
            state[event.type] = state.get(event.type, 0) + 1
            return state

    result = log.replay("task:42", CountByType())
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from meshlog.events import RecordedEvent

__all__ = ["FunctionProjection", "Projection", "Replay", "SnapshotProjection", "supports_snapshots"]

S = TypeVar("S")


class Projection(Protocol[S]):
    """Builds state from events: ``apply`` is called once per event, in stream order."""

    def initial(self) -> S:
        """The state before any event."""
        ...

    def apply(self, state: S, event: RecordedEvent) -> S:
        """The state after ``event``."""
        ...


@runtime_checkable
class SnapshotProjection(Projection[S], Protocol):
    """A projection whose state can be saved, so that replay can start from the last snapshot.

    ``name`` and ``version`` identify the snapshots; bump ``version`` when ``apply`` changes, and older
    snapshots are ignored.
    """

    name: str
    version: int

    def to_snapshot(self, state: S) -> dict[str, Any]:
        """The state as a JSON object."""
        ...

    def from_snapshot(self, data: dict[str, Any]) -> S:
        """The state back from :meth:`to_snapshot`'s output."""
        ...


def supports_snapshots(projection: object) -> bool:
    """Whether ``projection`` implements :class:`SnapshotProjection`."""
    return all(hasattr(projection, name) for name in ("name", "version", "to_snapshot", "from_snapshot"))


@dataclass(frozen=True, slots=True)
class FunctionProjection(Generic[S]):
    """A projection made of an initial-state factory and a reducer function."""

    initial_factory: Callable[[], S]
    reducer: Callable[[S, RecordedEvent], S]

    def initial(self) -> S:
        return self.initial_factory()

    def apply(self, state: S, event: RecordedEvent) -> S:
        return self.reducer(state, event)


@dataclass(frozen=True, slots=True)
class Replay(Generic[S]):
    """The outcome of replaying a stream through a projection."""

    state: S
    events_replayed: int
    last_version: int
    """The stream position of the last event applied (0 when none was)."""
    duration_ms: float
    snapshot_version: int | None = None
    """The stream version of the snapshot the replay started from; ``events_replayed`` counts only the events
    read after it. None when no snapshot was used."""
