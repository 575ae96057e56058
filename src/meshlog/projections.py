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
from typing import Generic, Protocol, TypeVar

from meshlog.events import RecordedEvent

__all__ = ["FunctionProjection", "Projection", "Replay"]

S = TypeVar("S")


class Projection(Protocol[S]):
    """Builds state from events: ``apply`` is called once per event, in stream order."""

    def initial(self) -> S:
        """The state before any event."""
        ...

    def apply(self, state: S, event: RecordedEvent) -> S:
        """The state after ``event``."""
        ...


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
