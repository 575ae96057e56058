"""The event model: what callers append (:class:`NewEvent`) and what the store records (:class:`RecordedEvent`).

One envelope serves every source (agent tracing, session continuity, user events, shell scripts). The caller
gives the type, the payload and the correlation ids; the store assigns the global ``position``, the
``stream_position``, the lineage (``root_id``, ``depth``) and ``recorded_at``.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, NamedTuple, TypeAlias

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "ExpectedVersion",
    "NewEvent",
    "RecordedEvent",
    "StreamInfo",
    "StreamState",
    "default_stream",
    "uuid7",
]


class StreamState(enum.Enum):
    """Expectations about a stream that are not an exact version."""

    ANY = "any"
    """Append whatever the stream's version (the default)."""
    NO_STREAM = "no_stream"
    """Append only if the stream has no events yet."""
    STREAM_EXISTS = "stream_exists"
    """Append only if the stream already has at least one event."""

    def __repr__(self) -> str:
        return f"meshlog.{self.name}"


ANY: Final = StreamState.ANY
NO_STREAM: Final = StreamState.NO_STREAM
STREAM_EXISTS: Final = StreamState.STREAM_EXISTS

ExpectedVersion: TypeAlias = "int | StreamState"
"""An exact stream version (0 means "no events yet") or one of :data:`ANY`, :data:`NO_STREAM`,
:data:`STREAM_EXISTS`."""


def default_stream(task_id: str | None, trace_id: str | None, agent_id: str | None) -> str:
    """The stream of an event that names none: ``task:<task_id>``, else ``trace:<trace_id>``, else
    ``agent:<agent_id>``, else ``default``."""
    if task_id:
        return f"task:{task_id}"
    if trace_id:
        return f"trace:{trace_id}"
    if agent_id:
        return f"agent:{agent_id}"
    return "default"


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """An event to append. Only ``type`` and ``data`` are required.

    ``data`` and ``metadata`` must be JSON objects (``dict`` with ``str`` keys and JSON values). ``stream``
    defaults by :func:`default_stream`. ``id`` defaults to a fresh UUIDv7. ``parent_id`` names the event that
    caused this one; the store derives ``root_id`` and ``depth`` from it. With ``external_parent=True`` the
    parent may live outside this store (its id is then taken as the root, at depth 1).
    """

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    stream: str | None = None
    metadata: Mapping[str, Any] | None = None
    trace_id: str | None = None
    task_id: str | None = None
    agent_id: str | None = None
    parent_id: str | None = None
    related: Sequence[str] = ()
    idempotency_key: str | None = None
    version: int = 1
    occurred_at: datetime | None = None
    id: str | None = None
    external_parent: bool = False


class RecordedEvent(NamedTuple):
    """An event as the store recorded it. Immutable: a later fact about it is a new event.

    ``position`` is the global order, strictly increasing in commit order (not necessarily gapless);
    ``stream_position`` is 1, 2, 3 ... within the stream, without gaps; ``root_id`` is the first event of this
    event's causal chain (the event itself when it has no parent) and ``depth`` its distance from it.

    A named tuple: immutable, compared by value, and cheap to build for every row a query returns.
    """

    id: str
    position: int
    stream: str
    stream_position: int
    type: str
    version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    trace_id: str | None
    task_id: str | None
    agent_id: str | None
    parent_id: str | None
    root_id: str
    depth: int
    related: tuple[str, ...]
    idempotency_key: str | None
    tenant: str
    occurred_at: datetime | None
    recorded_at: datetime
    outcome: dict[str, Any] | None = None
    """The latest outcome recorded for this event, when read with ``with_outcome=True`` (else None)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601 strings)."""
        return {
            "id": self.id,
            "position": self.position,
            "stream": self.stream,
            "stream_position": self.stream_position,
            "type": self.type,
            "version": self.version,
            "data": self.data,
            "metadata": self.metadata,
            "trace_id": self.trace_id,
            "task_id": self.task_id,
            "agent_id": self.agent_id,
            "parent_id": self.parent_id,
            "root_id": self.root_id,
            "depth": self.depth,
            "related": list(self.related),
            "idempotency_key": self.idempotency_key,
            "tenant": self.tenant,
            "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
            "recorded_at": self.recorded_at.isoformat(),
            "outcome": self.outcome,
        }


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream and its current version."""

    stream: str
    version: int
    last_position: int
    created_at: datetime
    updated_at: datetime


_uuid7_lock = threading.Lock()
_uuid7_last_ms = 0
_uuid7_last_rand = 0
_RAND_BITS: Final = 74
_RAND_MAX: Final = (1 << _RAND_BITS) - 1
_RANDOM_BYTES: Final = 4000
_random_pool = b""
_random_offset = 0


def _random_part() -> int:
    """74 bits from the operating system's CSPRNG, read 4,000 bytes (400 ids) at a time: ``os.urandom`` releases
    the interpreter lock, and a thread that gives it up waits for whichever thread takes it (up to the switch
    interval, 5 ms) to get it back, so reading it once per id put that wait on the path of every traced call.
    Called under ``_uuid7_lock``."""
    global _random_pool, _random_offset
    if _random_offset + 10 > len(_random_pool):
        _random_pool, _random_offset = os.urandom(_RANDOM_BYTES), 0
    start = _random_offset
    _random_offset += 10
    return int.from_bytes(_random_pool[start : start + 10]) & _RAND_MAX


def _forget_after_fork() -> None:
    """A forked child must not draw the parent's remaining random bytes or continue its sequence: both would
    make the ids the parent makes next."""
    global _uuid7_lock, _uuid7_last_ms, _uuid7_last_rand, _random_pool, _random_offset
    _uuid7_lock = threading.Lock()
    _uuid7_last_ms = _uuid7_last_rand = _random_offset = 0
    _random_pool = b""


os.register_at_fork(after_in_child=_forget_after_fork)


def uuid7() -> str:
    """A new UUIDv7 (RFC 9562) as a string, strictly increasing within this process.

    48 bits of Unix milliseconds, then 74 random bits; within one millisecond the random part is
    incremented instead of redrawn (RFC 9562 §6.2, method 2), so ids sort in the order they were made.
    """
    global _uuid7_last_ms, _uuid7_last_rand
    ms = time.time_ns() // 1_000_000
    with _uuid7_lock:
        if ms > _uuid7_last_ms:
            rand = _random_part()
        else:
            ms = _uuid7_last_ms
            rand = _uuid7_last_rand + 1
            if rand > _RAND_MAX:
                ms += 1
                rand = _random_part()
        _uuid7_last_ms, _uuid7_last_rand = ms, rand
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62 | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
