"""The store port: the small interface every storage adapter implements.

The event log (:mod:`meshlog.log_async`) validates input and hands stores only well-formed requests; a store's
job is durability, ordering and the checks that need the stored state (versions, idempotency, lineage).
Adapters live in :mod:`meshlog.stores`, one module each; :func:`meshlog.stores.open_store` maps a URL to one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeAlias

from meshlog._validation import AppendRequest
from meshlog.errors import MeshlogError
from meshlog.events import RecordedEvent, StreamInfo
from meshlog.query import EventFilter, Order
from meshlog.registry import Instance, InstanceChange
from meshlog.stats import EventStats, TraceSummary
from meshlog.tokens import ApiToken

__all__ = ["AppendOutcome", "AsyncStore"]

AppendOutcome: TypeAlias = "list[RecordedEvent] | MeshlogError"


class AsyncStore(Protocol):
    """What meshlog needs of a storage backend."""

    url: str
    """The store's URL with any password removed."""

    async def migrate(self) -> None:
        """Create or upgrade the store's schema. Idempotent; safe when several processes run it at once."""
        ...

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        """Append each request atomically and return one outcome per request, in order.

        Contract:

        - Each request is all-or-nothing. Its outcome is the list of recorded events, or the error that
          stopped it (``WrongExpectedVersion``, ``IdempotencyConflict``, ``ValidationError`` for a missing
          parent or a reused event id). One request failing does not fail the others.
        - When the outcome is a list, its events are committed and durable as the store's durability setting
          defines ("acknowledged means durable").
        - Positions are assigned in commit order: once a reader has seen position ``p``, no event with a
          position ``<= p`` can become visible later. This is what lets subscribers never skip an event.
        - ``stream_position`` continues the stream's version without gaps; ``expected_version`` is checked
          against the version before the request's events.
        - Idempotency: when every event of a request carries an idempotency key already recorded for the
          tenant with the same type, version, stream and data, the outcome is the originally recorded events
          and nothing is written. A known key with different content, or a request in which only some keys
          are known, gives ``IdempotencyConflict``.
        - Lineage: ``root_id`` and ``depth`` derive from the parent (an earlier event of the same request, or
          a stored event of the tenant); an unknown parent is a ``ValidationError`` unless the event says
          ``external_parent``, in which case the parent is taken as the root and the event has depth 1.

        Raises ``StoreError`` only when the store itself failed; then no request of this call is
        acknowledged (callers may retry; idempotency keys make that safe).
        """
        ...

    async def get(self, tenant: str, event_id: str) -> RecordedEvent | None:
        """The event with this id in this tenant, or None."""
        ...

    async def query(self, tenant: str, flt: EventFilter, *, order: Order, limit: int) -> list[RecordedEvent]:
        """Up to ``limit`` events of the tenant matching ``flt``, by position ascending or descending.

        Positions are exclusive bounds (``after_position``, ``before_position``); a reader that asks for
        ``after_position=p`` in ascending order gets every committed event after ``p`` (no skips).
        """
        ...

    async def count(self, tenant: str, flt: EventFilter) -> int:
        """How many events of the tenant match ``flt``."""
        ...

    async def stats(self, tenant: str, since: datetime, until: datetime, bucket_seconds: int) -> EventStats:
        """Counts of the tenant's events recorded in ``[since, until)``: per bucket of ``bucket_seconds`` (the
        buckets start at ``since``), per type and per agent, as :func:`meshlog.stats.build_stats` makes them.

        The log checks the window first (:func:`meshlog.stats.check_window`). SQL stores count with ``GROUP BY``
        over the ``recorded_at`` index and never load the events.
        """
        ...

    async def traces(
        self, tenant: str, since: datetime, until: datetime, limit: int, agent_id: str | None
    ) -> Sequence[TraceSummary]:
        """Summaries of the tenant's traces with events recorded in ``[since, until)``, each over those events
        only (:class:`meshlog.stats.TraceSummary`): the ``limit`` last active first (latest ``recorded_at``, then
        by trace id), events without a trace left out. With ``agent_id``, only the traces in which that agent
        recorded an event in the window (their summaries still count every agent's events).

        The log checks the arguments first (:func:`meshlog.stats.check_trace_query`). SQL stores group by
        ``trace_id`` over the ``recorded_at`` index and never load the events.
        """
        ...

    async def read_stream(
        self,
        tenant: str,
        stream: str,
        *,
        from_version: int,
        to_version: int | None,
        backwards: bool,
        limit: int,
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events of one stream with ``from_version <= stream_position <= to_version``.

        Forwards this starts at ``from_version``; backwards it starts at ``to_version`` (or the stream's end)
        and goes down to ``from_version``.
        """
        ...

    async def stream_version(self, tenant: str, stream: str) -> int:
        """The stream's current version: its last ``stream_position``, 0 when it has no events."""
        ...

    async def list_streams(self, tenant: str, *, prefix: str | None, after: str | None, limit: int) -> list[StreamInfo]:
        """Streams of the tenant ordered by name, those after ``after``, optionally by name prefix."""
        ...

    async def head_position(self, tenant: str) -> int:
        """The highest committed position among the tenant's events, 0 when it has none.

        Every event of the tenant with a position up to it is visible once this returns (positions commit in
        order), which is what lets a subscriber catch up to it without skipping.
        """
        ...

    async def wait_for_events(self, tenant: str, after_position: int, timeout: float) -> None:
        """Return when an event of the tenant after ``after_position`` may have been committed, or after
        ``timeout`` seconds. A hint only: callers re-query, so a spurious return is harmless."""
        ...

    async def lineage(self, tenant: str, event_id: str) -> tuple[list[RecordedEvent], list[RecordedEvent]] | None:
        """The event's ancestors (its root first, its parent last) and all its descendants (by position),
        following ``parent_id`` within the tenant; None when the tenant has no such event."""
        ...

    async def graph(
        self, tenant: str, event_id: str, *, max_depth: int, limit: int
    ) -> tuple[list[tuple[RecordedEvent, int]], bool]:
        """The tenant's events reachable from ``event_id`` within ``max_depth`` hops, each with its distance.

        A hop follows a parent link or a ``related`` link, in either direction. Every event appears once, at its
        shortest distance (the start at 0); cycles are harmless. Ordered by distance, then position; the first
        ``limit`` of them, and whether there were more. Empty when the tenant has no such event.
        """
        ...

    async def save_snapshot(
        self, tenant: str, stream: str, projection: str, projection_version: int, stream_version: int, state: str
    ) -> None:
        """Keep ``state`` (JSON text) as the snapshot of ``projection`` over ``stream`` at ``stream_version``,
        replacing the previous one."""
        ...

    async def load_snapshot(
        self, tenant: str, stream: str, projection: str, projection_version: int
    ) -> tuple[int, str] | None:
        """The stream version and JSON state of the snapshot saved for this projection and version, or None."""
        ...

    async def get_checkpoint(self, tenant: str, consumer: str) -> int | None:
        """The position a consumer saved, or None."""
        ...

    async def set_checkpoint(self, tenant: str, consumer: str, position: int) -> None:
        """Save a consumer's position (durably; last write wins)."""
        ...

    async def save_token(self, token: ApiToken) -> None:
        """Store a new API token (its id is new)."""
        ...

    async def find_token(self, token_id: str) -> ApiToken | None:
        """The token with this id, of any tenant (to authenticate a request), or None."""
        ...

    async def list_tokens(self, tenant: str) -> list[ApiToken]:
        """The tenant's tokens, revoked ones included, oldest first."""
        ...

    async def revoke_token(self, tenant: str, token_id: str) -> bool:
        """Mark the tenant's token revoked; False when the tenant has no such token (or it was revoked)."""
        ...

    async def has_tokens(self) -> bool:
        """Whether any tenant has a token that is neither revoked nor expired."""
        ...

    # -- the instance registry (see meshlog.registry) --------------------------------------------------------------
    # Stores keep one row per (tenant, instance id) and apply each change atomically; they never read a clock (the
    # log passes every time, so tests can drive them). The log writes the events of a change after the store
    # made it, unless the change says ``events_recorded`` (a remote server wrote them).

    async def register_instance(self, tenant: str, instance: Instance) -> InstanceChange:
        """Insert the instance, or replace the tenant's row with its id (a new registration: status active,
        heartbeat times from ``instance``). The change's ``previous`` is the replaced row or None."""
        ...

    async def heartbeat_instance(
        self, tenant: str, instance_id: str, at: datetime, *, event_every: float, data: Mapping[str, Any]
    ) -> InstanceChange | None:
        """Record a heartbeat at ``at`` atomically: ``last_heartbeat`` becomes the later of it and the stored one,
        a stale instance becomes active, and when no heartbeat event was written in the last ``event_every``
        seconds ``heartbeat_event_at`` becomes ``at`` and the change says ``heartbeat_event``, so that of
        concurrent heartbeats exactly one gets the event. A closed instance is left as it is (the change's
        ``current`` is then closed). None when the tenant has no such instance. ``data`` is what the heartbeat
        reports; only a remote store uses it (it forwards the whole heartbeat)."""
        ...

    async def close_instance(
        self, tenant: str, instance_id: str, at: datetime, *, reason: str | None
    ) -> InstanceChange | None:
        """Mark the instance closed at ``at`` (no-op when it is closed already); None when there is none.
        ``reason`` only travels to a remote store."""
        ...

    async def mark_instance_stale(
        self, tenant: str, instance_id: str, last_heartbeat: datetime
    ) -> InstanceChange | None:
        """Compare and set: mark the instance stale only if it is active and its ``last_heartbeat`` is still the
        given one. None when it is not (a heartbeat came, another detector was first, it was closed): of
        concurrent detectors exactly one marks a lapse."""
        ...

    async def get_instance(self, tenant: str, instance_id: str) -> Instance | None:
        """The tenant's instance with this id, or None."""
        ...

    async def list_instances(
        self, tenant: str, *, status: str | None, project: str | None, after: str | None, limit: int
    ) -> list[Instance]:
        """The tenant's instances ordered by id (those after ``after``), optionally of one status or project."""
        ...

    async def silent_instances(self, tenant: str, before: datetime, limit: int) -> list[Instance]:
        """Active instances whose last heartbeat is before ``before``, oldest heartbeat first, of the tenant or,
        with tenant ``"*"``, of every tenant (for the server's stale detector)."""
        ...

    async def close(self) -> None:
        """Release connections. The store is unusable afterwards."""
        ...
