"""The instance registry over an event log (async; :mod:`meshlog.instances` is its generated sync twin).

``log.instances`` registers instances (running agent sessions), records their heartbeats, closes them and finds
the ones that went silent; every change is a row in the store and an event in the stream ``instance:<id>`` (see
:mod:`meshlog.registry` for the life of an instance)::

    log.instances.register("odin3-ps", project="shop", host="odin3")
    log.instances.heartbeat("odin3-ps", {"current_epic": "epic-003"})
    log.instances.detect_stale()          # marks instances silent for stale_after seconds
    log.instances.resume("odin3-ps")      # where it stands and what to do next

Order of writes: the store changes the row atomically (of concurrent heartbeats or stale detectors exactly one
wins each transition), then the log appends the change's events with idempotency keys derived from the change,
so a retry or a second server replica never records one twice.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from meshlog.errors import NotFound, ValidationError
from meshlog.events import NewEvent
from meshlog.registry import (
    Instance,
    InstanceChange,
    check_instance_id,
    check_status,
    check_text,
    event_key,
    stream_of,
)
from meshlog.resume import Resume

if TYPE_CHECKING:
    from meshlog.log_async import AsyncEventLog

__all__ = ["DEFAULT_HEARTBEAT_EVENT_EVERY", "DEFAULT_STALE_AFTER", "AsyncInstances"]

DEFAULT_HEARTBEAT_EVENT_EVERY: Final = 60.0
"""Seconds: at most one ``instance_heartbeat`` event per instance in this interval (every heartbeat updates the
instance's ``last_heartbeat`` all the same)."""
DEFAULT_STALE_AFTER: Final = 300.0
"""Seconds of silence after which an active instance counts as stale."""
_ALL_TENANTS: Final = "*"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AsyncInstances:
    """The instance registry of one tenant of a log.

    ``heartbeat_event_every`` coalesces heartbeat events (seconds), ``stale_after`` is the silence after which
    :meth:`detect_stale` marks an instance stale (seconds), ``clock`` returns the current time (tests pass their
    own to control it).
    """

    def __init__(
        self,
        log: AsyncEventLog,
        *,
        heartbeat_event_every: float = DEFAULT_HEARTBEAT_EVENT_EVERY,
        stale_after: float = DEFAULT_STALE_AFTER,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        for name, value in (("heartbeat_event_every", heartbeat_event_every), ("stale_after", stale_after)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValidationError(f"{name} must be a number of seconds >= 0, got {value!r}", field=name)
        self.log = log
        self.heartbeat_event_every = float(heartbeat_event_every)
        self.stale_after = float(stale_after)
        self.clock = clock or _utc_now

    def _now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise ValidationError("the registry's clock must return timezone-aware times", field="clock")
        return now.astimezone(UTC)

    async def register(
        self,
        instance_id: str,
        *,
        name: str | None = None,
        project: str | None = None,
        host: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Instance:
        """Register the instance (again: a new registration replaces the old one and reopens a closed instance)
        and write ``instance_registered``. Returns the registered instance."""
        check_instance_id(instance_id)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ValidationError("metadata must be a JSON object", field="metadata", rule="type")
        now = self._now()
        instance = Instance(
            id=instance_id,
            tenant=self.log.tenant,
            status="active",
            registered_at=now,
            last_heartbeat=now,
            name=check_text(name, "name"),
            project=check_text(project, "project"),
            host=check_text(host, "host"),
            metadata=dict(metadata or {}),
        )
        change = await self.log.store.register_instance(self.log.tenant, instance)
        if not change.events_recorded:
            data: dict[str, Any] = {"instance_id": instance_id}
            for key, value in (("name", name), ("project", project), ("hostname", host)):
                if value is not None:
                    data[key] = value
            if metadata:
                data["metadata"] = dict(metadata)
            await self.log.emit(
                "instance_registered",
                data,
                stream=stream_of(instance_id),
                idempotency_key=event_key(instance_id, "registered", now),
                occurred_at=now,
            )
        return change.current

    async def heartbeat(self, instance_id: str, data: Mapping[str, Any] | None = None) -> Instance:
        """Record that the instance is alive. Its ``last_heartbeat`` is updated every time; an
        ``instance_heartbeat`` event (with ``data``: status, current_epic, context_percent …) is written when
        none was in the last ``heartbeat_event_every`` seconds, and ``instance_recovered`` when it was stale.
        Raises NotFound for an unregistered instance, ValidationError for a closed one."""
        check_instance_id(instance_id)
        if data is not None and not isinstance(data, Mapping):
            raise ValidationError("data must be a JSON object", field="data", rule="type")
        now = self._now()
        change = await self.log.store.heartbeat_instance(
            self.log.tenant, instance_id, now, event_every=self.heartbeat_event_every, data=data or {}
        )
        if change is None:
            raise NotFound(f"no instance {instance_id!r}: register it first")
        if change.current.status == "closed":
            raise ValidationError(
                f"instance {instance_id!r} is closed: register it again", field="instance_id", rule="closed"
            )
        events = [] if change.events_recorded else self._heartbeat_events(change, now, data or {})
        if events:
            await self.log.emit_batch(events)
        return change.current

    def _heartbeat_events(self, change: InstanceChange, now: datetime, data: Mapping[str, Any]) -> list[NewEvent]:
        instance = change.current
        events = []
        previous = change.previous
        if previous is not None and previous.status == "stale":
            events.append(
                NewEvent(
                    type="instance_recovered",
                    data={
                        "instance_id": instance.id,
                        "last_heartbeat_at": previous.last_heartbeat.isoformat(),
                        "silent_seconds": round(previous.silent_for(now), 3),
                    },
                    stream=instance.stream,
                    idempotency_key=event_key(instance.id, "recovered", previous.last_heartbeat),
                    occurred_at=now,
                )
            )
        if change.heartbeat_event:
            events.append(
                NewEvent(
                    type="instance_heartbeat",
                    data={**data, "instance_id": instance.id},
                    stream=instance.stream,
                    idempotency_key=event_key(instance.id, "heartbeat", now),
                    occurred_at=now,
                )
            )
        return events

    async def close(self, instance_id: str, *, reason: str | None = None) -> Instance:
        """Mark the instance closed (it stops counting as alive or stale) and write ``instance_closed`` (with
        ``reason``); closing a closed instance changes nothing. Raises NotFound."""
        check_instance_id(instance_id)
        check_text(reason, "reason")
        now = self._now()
        change = await self.log.store.close_instance(self.log.tenant, instance_id, now, reason=reason)
        if change is None:
            raise NotFound(f"no instance {instance_id!r}")
        previous = change.previous
        if not change.events_recorded and previous is not None and previous.status != "closed":
            await self.log.emit(
                "instance_closed",
                {"instance_id": instance_id} if reason is None else {"instance_id": instance_id, "reason": reason},
                stream=stream_of(instance_id),
                idempotency_key=event_key(instance_id, "closed", previous.registered_at),
                occurred_at=now,
            )
        return change.current

    async def get(self, instance_id: str) -> Instance:
        """The instance. Raises NotFound."""
        check_instance_id(instance_id)
        found = await self.log.store.get_instance(self.log.tenant, instance_id)
        if found is None:
            raise NotFound(f"no instance {instance_id!r}")
        return found

    async def list(
        self,
        *,
        status: str | None = None,
        project: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Instance]:
        """Instances by id (those after ``after``), optionally of one ``status`` (active, stale, closed) or
        ``project``; at most ``limit`` (1..1000)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValidationError("limit must be an integer from 1 to 1000", field="limit", rule="range")
        return await self.log.store.list_instances(
            self.log.tenant,
            status=check_status(status),
            project=check_text(project, "project"),
            after=check_text(after, "after"),
            limit=limit,
        )

    async def detect_stale(
        self, *, now: datetime | None = None, all_tenants: bool = False, limit: int = 1000
    ) -> builtins.list[Instance]:
        """Mark stale every active instance silent for ``stale_after`` seconds (by ``now``, default the clock)
        and write one ``instance_stale`` for each; returns the instances marked. With ``all_tenants`` it covers
        every tenant of the store (the server's detector does). Safe to run concurrently: each lapse is marked
        and recorded once."""
        moment = (now or self._now()).astimezone(UTC)
        before = moment.timestamp() - self.stale_after
        cutoff = datetime.fromtimestamp(before, UTC)
        tenant = _ALL_TENANTS if all_tenants else self.log.tenant
        marked: builtins.list[Instance] = []
        for silent in await self.log.store.silent_instances(tenant, cutoff, limit):
            change = await self.log.store.mark_instance_stale(silent.tenant, silent.id, silent.last_heartbeat)
            if change is None:
                continue  # a heartbeat came, or another detector marked it first
            log = self.log if silent.tenant == self.log.tenant else self.log.for_tenant(silent.tenant)
            await log.emit(
                "instance_stale",
                {
                    "instance_id": silent.id,
                    "last_heartbeat_at": silent.last_heartbeat.isoformat(),
                    "stale_after_seconds": self.stale_after,
                },
                stream=silent.stream,
                idempotency_key=event_key(silent.id, "stale", silent.last_heartbeat),
                occurred_at=moment,
            )
            marked.append(change.current)
        return marked

    async def resume(self, instance_id: str, *, now: datetime | None = None) -> Resume:
        """Where the instance's session stands and what to do next: :meth:`AsyncEventLog.resume` of its stream.
        Works for any instance id with events, registered or not."""
        check_instance_id(instance_id)
        return await self.log.resume(stream_of(instance_id), now=now)
