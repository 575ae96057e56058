"""Run a sync store behind the async port: blocking calls go to a worker thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from meshlog._validation import AppendRequest
from meshlog.events import RecordedEvent, StreamInfo
from meshlog.query import EventFilter, Order
from meshlog.registry import Instance, InstanceChange
from meshlog.stats import EventStats, TraceSummary
from meshlog.store import Store
from meshlog.store_async import AppendOutcome
from meshlog.tokens import ApiToken

P = ParamSpec("P")
T = TypeVar("T")


class AsyncThreadedStore:
    """The async face of a sync store (SQLite, memory).

    With ``offload`` (SQLite) each call runs in the default executor so the event loop never blocks on disk;
    without it (memory) calls run inline. Waiting for new events polls ``head_position`` with ``asyncio.sleep``
    rather than parking a thread per subscriber.
    """

    def __init__(self, store: Store, *, offload: bool, poll_interval: float) -> None:
        self.sync_store = store
        self.url = store.url
        self._offload = offload
        self._poll = poll_interval

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._offload:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    async def migrate(self) -> None:
        await self._call(self.sync_store.migrate)

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        return await self._call(self.sync_store.append, requests)

    async def get(self, tenant: str, event_id: str) -> RecordedEvent | None:
        return await self._call(self.sync_store.get, tenant, event_id)

    async def query(self, tenant: str, flt: EventFilter, *, order: Order, limit: int) -> list[RecordedEvent]:
        return await self._call(self.sync_store.query, tenant, flt, order=order, limit=limit)

    async def count(self, tenant: str, flt: EventFilter) -> int:
        return await self._call(self.sync_store.count, tenant, flt)

    async def stats(self, tenant: str, since: datetime, until: datetime, bucket_seconds: int) -> EventStats:
        return await self._call(self.sync_store.stats, tenant, since, until, bucket_seconds)

    async def traces(
        self, tenant: str, since: datetime, until: datetime, limit: int, agent_id: str | None
    ) -> Sequence[TraceSummary]:
        return await self._call(self.sync_store.traces, tenant, since, until, limit, agent_id)

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
        return await self._call(
            self.sync_store.read_stream,
            tenant,
            stream,
            from_version=from_version,
            to_version=to_version,
            backwards=backwards,
            limit=limit,
        )

    async def stream_version(self, tenant: str, stream: str) -> int:
        return await self._call(self.sync_store.stream_version, tenant, stream)

    async def list_streams(self, tenant: str, *, prefix: str | None, after: str | None, limit: int) -> list[StreamInfo]:
        return await self._call(self.sync_store.list_streams, tenant, prefix=prefix, after=after, limit=limit)

    async def head_position(self, tenant: str) -> int:
        return await self._call(self.sync_store.head_position, tenant)

    async def wait_for_events(self, tenant: str, after_position: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while await self.head_position(tenant) <= after_position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, self._poll))

    async def lineage(self, tenant: str, event_id: str) -> tuple[list[RecordedEvent], list[RecordedEvent]] | None:
        return await self._call(self.sync_store.lineage, tenant, event_id)

    async def graph(
        self, tenant: str, event_id: str, *, max_depth: int, limit: int
    ) -> tuple[list[tuple[RecordedEvent, int]], bool]:
        return await self._call(self.sync_store.graph, tenant, event_id, max_depth=max_depth, limit=limit)

    async def save_snapshot(
        self, tenant: str, stream: str, projection: str, projection_version: int, stream_version: int, state: str
    ) -> None:
        await self._call(
            self.sync_store.save_snapshot, tenant, stream, projection, projection_version, stream_version, state
        )

    async def load_snapshot(
        self, tenant: str, stream: str, projection: str, projection_version: int
    ) -> tuple[int, str] | None:
        return await self._call(self.sync_store.load_snapshot, tenant, stream, projection, projection_version)

    async def get_checkpoint(self, tenant: str, consumer: str) -> int | None:
        return await self._call(self.sync_store.get_checkpoint, tenant, consumer)

    async def set_checkpoint(self, tenant: str, consumer: str, position: int) -> None:
        await self._call(self.sync_store.set_checkpoint, tenant, consumer, position)

    async def save_token(self, token: ApiToken) -> None:
        await self._call(self.sync_store.save_token, token)

    async def find_token(self, token_id: str) -> ApiToken | None:
        return await self._call(self.sync_store.find_token, token_id)

    async def list_tokens(self, tenant: str) -> list[ApiToken]:
        return await self._call(self.sync_store.list_tokens, tenant)

    async def revoke_token(self, tenant: str, token_id: str) -> bool:
        return await self._call(self.sync_store.revoke_token, tenant, token_id)

    async def has_tokens(self) -> bool:
        return await self._call(self.sync_store.has_tokens)

    async def register_instance(self, tenant: str, instance: Instance) -> InstanceChange:
        return await self._call(self.sync_store.register_instance, tenant, instance)

    async def heartbeat_instance(
        self, tenant: str, instance_id: str, at: datetime, *, event_every: float, data: Mapping[str, Any]
    ) -> InstanceChange | None:
        return await self._call(
            self.sync_store.heartbeat_instance, tenant, instance_id, at, event_every=event_every, data=data
        )

    async def close_instance(
        self, tenant: str, instance_id: str, at: datetime, *, reason: str | None
    ) -> InstanceChange | None:
        return await self._call(self.sync_store.close_instance, tenant, instance_id, at, reason=reason)

    async def mark_instance_stale(
        self, tenant: str, instance_id: str, last_heartbeat: datetime
    ) -> InstanceChange | None:
        return await self._call(self.sync_store.mark_instance_stale, tenant, instance_id, last_heartbeat)

    async def get_instance(self, tenant: str, instance_id: str) -> Instance | None:
        return await self._call(self.sync_store.get_instance, tenant, instance_id)

    async def list_instances(
        self, tenant: str, *, status: str | None, project: str | None, after: str | None, limit: int
    ) -> list[Instance]:
        return await self._call(
            self.sync_store.list_instances, tenant, status=status, project=project, after=after, limit=limit
        )

    async def silent_instances(self, tenant: str, before: datetime, limit: int) -> list[Instance]:
        return await self._call(self.sync_store.silent_instances, tenant, before, limit)

    async def close(self) -> None:
        await self._call(self.sync_store.close)
