"""The append checks shared by the in-process stores (memory, SQLite), without I/O of their own.

PostgreSQL runs the same checks inside its ``append`` function, in one round trip; the conformance suite
holds all stores to the same outcomes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from meshlog._validation import AppendRequest, PreparedEvent
from meshlog.errors import IdempotencyConflict, MeshlogError, ValidationError, WrongExpectedVersion
from meshlog.events import RecordedEvent, StreamState


class StateReader(Protocol):
    """Read access to the stored state that an append is checked against (inside its write lock)."""

    def stream_version(self, tenant: str, stream: str) -> int: ...

    def events_by_keys(self, tenant: str, keys: Sequence[str]) -> dict[str, RecordedEvent]: ...

    def lineage_of(self, tenant: str, event_id: str) -> tuple[str, int] | None: ...

    def id_exists(self, event_id: str) -> bool: ...


@dataclass(slots=True)
class PlannedEvent:
    event: PreparedEvent
    stream_position: int
    root_id: str
    depth: int


@dataclass(slots=True)
class Planned:
    events: list[PlannedEvent]
    stream_versions: dict[str, int]
    """The version of each touched stream after the append."""


@dataclass(slots=True)
class Duplicate:
    events: list[RecordedEvent]


def content_difference(original: RecordedEvent, event: PreparedEvent) -> str | None:
    """What differs between a recorded event and a retried one with the same idempotency key."""
    if original.type != event.type:
        return "type"
    if original.version != event.version:
        return "version"
    if original.stream != event.stream:
        return "stream"
    if not same_json(original.data, json.loads(event.data_json)):
        return "data"
    return None


def same_json(a: object, b: object) -> bool:
    """JSON equality: like ``==``, except that booleans equal only booleans (``True`` is not ``1``), as in
    PostgreSQL's jsonb; numbers compare by value (``1 == 1.0``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def check_expected(stream: str, expected: int | StreamState, actual: int) -> WrongExpectedVersion | None:
    if expected is StreamState.ANY:
        return None
    if expected is StreamState.NO_STREAM:
        ok = actual == 0
    elif expected is StreamState.STREAM_EXISTS:
        ok = actual > 0
    else:
        ok = actual == expected
    return None if ok else WrongExpectedVersion(stream, expected, actual)


def plan_append(request: AppendRequest, reader: StateReader) -> Planned | Duplicate | MeshlogError:
    """Decide what an append writes, or why it writes nothing."""
    tenant = request.tenant
    keys = [e.idempotency_key for e in request.events if e.idempotency_key is not None]
    if keys:
        known = reader.events_by_keys(tenant, keys)
        if known:
            if len(known) != len(request.events):
                key = next(iter(known))
                return IdempotencyConflict(key, known[key].id, "request (only some of its keys are recorded)")
            originals = []
            for e in request.events:
                assert e.idempotency_key is not None
                original = known[e.idempotency_key]
                reason = content_difference(original, e)
                if reason is not None:
                    return IdempotencyConflict(e.idempotency_key, original.id, reason)
                originals.append(original)
            return Duplicate(originals)

    versions: dict[str, int] = {}
    if request.stream is not None:
        actual = reader.stream_version(tenant, request.stream)
        error = check_expected(request.stream, request.expected_version, actual)
        if error is not None:
            return error
        versions[request.stream] = actual

    in_batch: dict[str, tuple[str, int]] = {}
    planned: list[PlannedEvent] = []
    for index, e in enumerate(request.events):
        if e.id_given and reader.id_exists(e.id):
            return ValidationError(
                f"events[{index}].id {e.id} is already recorded", field=f"events[{index}].id", rule="unique"
            )
        if e.parent_id is None:
            root_id, depth = e.id, 0
        else:
            parent = in_batch.get(e.parent_id) or reader.lineage_of(tenant, e.parent_id)
            if parent is not None:
                root_id, depth = parent[0], parent[1] + 1
            elif e.external_parent:
                root_id, depth = e.parent_id, 1
            else:
                return ValidationError(
                    f"events[{index}].parent_id {e.parent_id} is not a recorded event of this tenant "
                    "(set external_parent=True for a parent stored elsewhere)",
                    field=f"events[{index}].parent_id",
                    rule="parent_exists",
                )
        in_batch[e.id] = (root_id, depth)
        version = versions.get(e.stream)
        if version is None:
            version = reader.stream_version(tenant, e.stream)
        version += 1
        versions[e.stream] = version
        planned.append(PlannedEvent(e, version, root_id, depth))
    return Planned(planned, versions)


def recorded(tenant: str, p: PlannedEvent, position: int, recorded_at: datetime) -> RecordedEvent:
    """The RecordedEvent for a planned event once the store has given it a position."""
    e = p.event
    return RecordedEvent(
        id=e.id,
        position=position,
        stream=e.stream,
        stream_position=p.stream_position,
        type=e.type,
        version=e.version,
        data=json.loads(e.data_json),
        metadata={} if e.metadata_json == "{}" else json.loads(e.metadata_json),
        trace_id=e.trace_id,
        task_id=e.task_id,
        agent_id=e.agent_id,
        parent_id=e.parent_id,
        root_id=p.root_id,
        depth=p.depth,
        related=e.related,
        idempotency_key=e.idempotency_key,
        tenant=tenant,
        occurred_at=e.occurred_at,
        recorded_at=recorded_at,
    )
