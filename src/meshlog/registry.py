"""The instance registry's model: who is working (an instance: a running agent session), since when, and whether
it is still alive. I/O-free; :mod:`meshlog.instances_async` is the API over a store.

An :class:`Instance` is one row per instance id and tenant. Its life::

    register ──► active ──(no heartbeat for stale_after)──► stale ──(heartbeat)──► active
                   │                                          │
                   └──────────────────── close ───────────────┴──► closed   (register again to reopen)

Every change is also an event in the stream ``instance:<id>`` (:func:`stream_of`): ``instance_registered``,
``instance_heartbeat`` (at most one per ``heartbeat_event_every`` seconds: heartbeats are frequent, their events
need not be), ``instance_stale`` (once per lapse), ``instance_recovered`` and ``instance_closed``. Each of these
events carries an idempotency key derived from the change (:func:`event_key`), so writing one twice, from two
server replicas or after a retry, records it once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeAlias

from meshlog.errors import ValidationError

__all__ = [
    "INSTANCE_EVENT_TYPES",
    "STATUSES",
    "Instance",
    "InstanceChange",
    "InstanceStatus",
    "check_instance_id",
    "event_key",
    "stream_of",
]

InstanceStatus: TypeAlias = Literal["active", "stale", "closed"]
STATUSES: Final[tuple[InstanceStatus, ...]] = ("active", "stale", "closed")
INSTANCE_EVENT_TYPES: Final = (
    "instance_registered",
    "instance_heartbeat",
    "instance_stale",
    "instance_recovered",
    "instance_closed",
)
"""The event types the registry writes, all to the instance's stream."""
STREAM_PREFIX: Final = "instance:"
_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}")
MAX_TEXT: Final = 200
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def check_instance_id(value: object, field_name: str = "instance_id") -> str:
    """``value`` if it is a valid instance id: 1 to 200 letters, digits and ``. _ : @ + -``, starting with a letter
    or digit (so it can stand in a URL path and a stream name as it is); ValidationError otherwise."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise ValidationError(
            f"{field_name} must be 1 to 200 letters, digits or . _ : @ + - (starting with a letter or digit), "
            f"got {value!r}",
            field=field_name,
            rule="pattern",
        )
    return value


def check_text(value: object, field_name: str) -> str | None:
    """An optional short label (name, project, host): None, or a string of at most 200 characters without NUL."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or "\x00" in value:
        raise ValidationError(
            f"{field_name} must be a string of at most {MAX_TEXT} characters", field=field_name, rule="type"
        )
    return value


def check_status(value: object) -> InstanceStatus | None:
    if value is None:
        return None
    if value not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}, got {value!r}", field="status")
    return value


def stream_of(instance_id: str) -> str:
    """The stream of an instance's events: ``instance:<id>``."""
    return STREAM_PREFIX + instance_id


def micros(value: datetime) -> int:
    """Microseconds since the epoch (the form of times in idempotency keys and SQLite columns)."""
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def event_key(instance_id: str, change: str, at: datetime) -> str:
    """The idempotency key of a registry event: one per instance, kind of change and moment that identifies it
    (the registration time, a heartbeat's time, the last heartbeat before a lapse)."""
    return f"{STREAM_PREFIX}{instance_id}:{change}:{micros(at)}"


@dataclass(frozen=True, slots=True)
class Instance:
    """One registered instance (a running session of an agent)."""

    id: str
    tenant: str
    status: InstanceStatus
    registered_at: datetime
    last_heartbeat: datetime
    name: str | None = None
    project: str | None = None
    host: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    heartbeat_event_at: datetime | None = None
    """When the last ``instance_heartbeat`` event was written (heartbeat events are coalesced)."""
    closed_at: datetime | None = None

    @property
    def stream(self) -> str:
        """The stream of its events, ``instance:<id>``."""
        return stream_of(self.id)

    def silent_for(self, now: datetime) -> float:
        """Seconds since its last heartbeat."""
        return (now - self.last_heartbeat).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 strings."""
        return {
            "id": self.id,
            "name": self.name,
            "project": self.project,
            "host": self.host,
            "status": self.status,
            "registered_at": self.registered_at.isoformat(),
            "last_heartbeat": self.last_heartbeat.isoformat(),
            "closed_at": None if self.closed_at is None else self.closed_at.isoformat(),
            "metadata": dict(self.metadata),
            "stream": self.stream,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, tenant: str) -> Instance:
        """The inverse of :meth:`to_dict` (the tenant is not part of the dict)."""
        closed = data.get("closed_at")
        return cls(
            id=data["id"],
            tenant=tenant,
            status=data["status"],
            registered_at=datetime.fromisoformat(data["registered_at"]),
            last_heartbeat=datetime.fromisoformat(data["last_heartbeat"]),
            name=data.get("name"),
            project=data.get("project"),
            host=data.get("host"),
            metadata=dict(data.get("metadata") or {}),
            closed_at=None if closed is None else datetime.fromisoformat(closed),
        )

    # -- the transitions a store applies (memory and SQLite call these; PostgreSQL does the same in SQL) --------
    def heartbeat(self, at: datetime, event_every: float) -> tuple[Instance, bool]:
        """The instance after a heartbeat at ``at``, and whether an ``instance_heartbeat`` event is due (none was
        written in the last ``event_every`` seconds). The caller refuses heartbeats of closed instances."""
        due = self.heartbeat_event_at is None or (at - self.heartbeat_event_at).total_seconds() >= event_every
        return (
            replace(
                self,
                status="active",
                last_heartbeat=max(self.last_heartbeat, at),
                heartbeat_event_at=at if due else self.heartbeat_event_at,
            ),
            due,
        )


@dataclass(frozen=True, slots=True)
class InstanceChange:
    """What a store did to an instance: the row before (None when it was new) and after, and whether a heartbeat
    event is due. ``events_recorded`` is True when the store wrote the change's events itself (a remote meshlog
    server does); otherwise the log writes them."""

    previous: Instance | None
    current: Instance
    heartbeat_event: bool = False
    events_recorded: bool = False
