"""``memory://``: an in-process store for tests and experiments, with the same semantics as the others.

Nothing survives the process. Events are kept serialized, so what a reader gets is a fresh copy that the
caller cannot change behind the store's back.
"""

from __future__ import annotations

import bisect
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from meshlog._validation import AppendRequest
from meshlog.errors import StoreError
from meshlog.events import RecordedEvent, StreamInfo
from meshlog.query import EventFilter, Order
from meshlog.registry import Instance, InstanceChange
from meshlog.stats import (
    LLM_CALL_TYPE,
    LLM_RESULT_TYPES,
    EventStats,
    TraceSummary,
    bucket_index,
    build_stats,
    event_tokens,
    is_failure_type,
    sort_traces,
    trace_agents,
)
from meshlog.store import AppendOutcome
from meshlog.stores._planning import Duplicate, Planned, plan_append, recorded
from meshlog.tokens import ApiToken

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Row:
    event: RecordedEvent
    data_json: str
    metadata_json: str

    def load(self) -> RecordedEvent:
        return self.event._replace(data=json.loads(self.data_json), metadata=json.loads(self.metadata_json))


@dataclass(slots=True)
class _Stream:
    rows: list[_Row]
    created_at: datetime
    updated_at: datetime


class MemoryStore:
    """A store held in this process's memory. Thread-safe."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.RLock()  # re-entrant: plan_append reads through the public methods
        self._appended = threading.Condition(self._lock)
        self._rows: list[_Row] = []  # position == index + 1
        self._by_id: dict[str, _Row] = {}
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._keys: dict[tuple[str, str], _Row] = {}
        self._checkpoints: dict[tuple[str, str], int] = {}
        self._children: dict[str, list[_Row]] = {}
        self._referrers: dict[str, list[_Row]] = {}
        self._snapshots: dict[tuple[str, str, str], tuple[int, int, str]] = {}
        self._heads: dict[str, int] = {}
        self._tokens: dict[str, ApiToken] = {}
        self._instances: dict[tuple[str, str], Instance] = {}

    # -- StateReader (plan_append calls these with the lock held) ----------------------------------------
    def stream_version(self, tenant: str, stream: str) -> int:
        with self._lock:
            s = self._streams.get((tenant, stream))
            return len(s.rows) if s else 0

    def events_by_keys(self, tenant: str, keys: Sequence[str]) -> dict[str, RecordedEvent]:
        with self._lock:
            rows = ((key, self._keys.get((tenant, key))) for key in keys)
            return {key: row.load() for key, row in rows if row is not None}

    def lineage_of(self, tenant: str, event_id: str) -> tuple[str, int] | None:
        with self._lock:
            row = self._by_id.get(event_id)
            if row is None or row.event.tenant != tenant:
                return None
            return row.event.root_id, row.event.depth

    def id_exists(self, event_id: str) -> bool:
        with self._lock:
            return event_id in self._by_id

    # -- Store ---------------------------------------------------------------------------------------------
    def migrate(self) -> None:
        return None

    def append(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        outcomes: list[AppendOutcome] = []
        with self._lock:
            for request in requests:
                plan = plan_append(request, self)
                if isinstance(plan, Duplicate):
                    outcomes.append(plan.events)
                    continue
                if not isinstance(plan, Planned):
                    outcomes.append(plan)
                    continue
                now = datetime.now(UTC)
                events = []
                for p in plan.events:
                    event = recorded(request.tenant, p, len(self._rows) + 1, now)
                    row = _Row(event, p.event.data_json, p.event.metadata_json)
                    self._rows.append(row)
                    self._by_id[event.id] = row
                    stream = self._streams.setdefault((request.tenant, event.stream), _Stream([], now, now))
                    stream.rows.append(row)
                    stream.updated_at = now
                    if event.idempotency_key is not None:
                        self._keys[(request.tenant, event.idempotency_key)] = row
                    if event.parent_id is not None:
                        self._children.setdefault(event.parent_id, []).append(row)
                    for target in event.related:
                        self._referrers.setdefault(target, []).append(row)
                    events.append(row.load())
                if events:
                    self._heads[request.tenant] = events[-1].position
                outcomes.append(events)
            self._appended.notify_all()
        return outcomes

    def get(self, tenant: str, event_id: str) -> RecordedEvent | None:
        with self._lock:
            row = self._by_id.get(event_id)
            return row.load() if row is not None and row.event.tenant == tenant else None

    def _scan(self, tenant: str, flt: EventFilter, order: Order) -> list[_Row]:
        rows = self._rows
        if flt.stream is not None:
            s = self._streams.get((tenant, flt.stream))
            rows = s.rows if s else []
        lo = (
            0
            if flt.after_position is None
            else bisect.bisect_right(rows, flt.after_position, key=lambda r: r.event.position)
        )
        hi = (
            len(rows)
            if flt.before_position is None
            else bisect.bisect_left(rows, flt.before_position, key=lambda r: r.event.position)
        )
        window = rows[lo:hi]
        return window if order == "asc" else window[::-1]

    def query(self, tenant: str, flt: EventFilter, *, order: Order, limit: int) -> list[RecordedEvent]:
        out: list[RecordedEvent] = []
        with self._lock:
            for row in self._scan(tenant, flt, order):
                if row.event.tenant == tenant and flt.matches(row.event):
                    out.append(row.load())
                    if len(out) >= limit:
                        break
        return out

    def count(self, tenant: str, flt: EventFilter) -> int:
        with self._lock:
            return sum(1 for r in self._scan(tenant, flt, "asc") if r.event.tenant == tenant and flt.matches(r.event))

    def stats(self, tenant: str, since: datetime, until: datetime, bucket_seconds: int) -> EventStats:
        buckets: dict[int, int] = {}
        types: dict[str, int] = {}
        agents: dict[str | None, int] = {}
        with self._lock:
            for row in self._rows:
                e = row.event
                if e.tenant != tenant or not since <= e.recorded_at < until:
                    continue
                index = bucket_index(since, e.recorded_at, bucket_seconds)
                buckets[index] = buckets.get(index, 0) + 1
                types[e.type] = types.get(e.type, 0) + 1
                agents[e.agent_id] = agents.get(e.agent_id, 0) + 1
        return build_stats(
            since, until, bucket_seconds, buckets=buckets.items(), by_type=types.items(), by_agent=agents.items()
        )

    def traces(
        self, tenant: str, since: datetime, until: datetime, limit: int, agent_id: str | None
    ) -> list[TraceSummary]:
        found: dict[str, list[RecordedEvent]] = {}
        tokens: dict[str, int] = {}
        with self._lock:
            for row in self._rows:
                e = row.event
                if e.tenant == tenant and e.trace_id is not None and since <= e.recorded_at < until:
                    found.setdefault(e.trace_id, []).append(e)
                    if e.type in LLM_RESULT_TYPES:
                        counted = event_tokens(e.type, json.loads(row.data_json))
                        tokens[e.trace_id] = tokens.get(e.trace_id, 0) + counted
        summaries = [
            TraceSummary(
                trace_id=trace_id,
                started=min(e.recorded_at for e in events),
                last=max(e.recorded_at for e in events),
                events=len(events),
                agents=trace_agents(e.agent_id for e in events),
                llm_calls=sum(1 for e in events if e.type == LLM_CALL_TYPE),
                tokens=tokens.get(trace_id, 0),
                failures=sum(1 for e in events if is_failure_type(e.type)),
            )
            for trace_id, events in found.items()
            if agent_id is None or any(e.agent_id == agent_id for e in events)
        ]
        return sort_traces(summaries)[:limit]

    def read_stream(
        self,
        tenant: str,
        stream: str,
        *,
        from_version: int,
        to_version: int | None,
        backwards: bool,
        limit: int,
    ) -> list[RecordedEvent]:
        with self._lock:
            s = self._streams.get((tenant, stream))
            rows = s.rows if s else []
            end = len(rows) if to_version is None else min(to_version, len(rows))
            window = rows[max(from_version, 1) - 1 : end]
            if backwards:
                window = window[::-1]
            return [r.load() for r in window[:limit]]

    def list_streams(self, tenant: str, *, prefix: str | None, after: str | None, limit: int) -> list[StreamInfo]:
        with self._lock:
            names = sorted(
                name
                for (t, name) in self._streams
                if t == tenant and (prefix is None or name.startswith(prefix)) and (after is None or name > after)
            )[:limit]
            out = []
            for name in names:
                s = self._streams[(tenant, name)]
                out.append(StreamInfo(name, len(s.rows), s.rows[-1].event.position, s.created_at, s.updated_at))
            return out

    def head_position(self, tenant: str) -> int:
        with self._lock:
            return self._heads.get(tenant, 0)

    def wait_for_events(self, tenant: str, after_position: int, timeout: float) -> None:
        with self._appended:
            self._appended.wait_for(lambda: self._heads.get(tenant, 0) > after_position, timeout)

    def _row(self, tenant: str, event_id: str) -> _Row | None:
        row = self._by_id.get(event_id)
        return row if row is not None and row.event.tenant == tenant else None

    def lineage(self, tenant: str, event_id: str) -> tuple[list[RecordedEvent], list[RecordedEvent]] | None:
        with self._lock:
            start = self._row(tenant, event_id)
            if start is None:
                return None
            ancestors: list[RecordedEvent] = []
            parent_id = start.event.parent_id
            while parent_id is not None and (parent := self._row(tenant, parent_id)) is not None:
                ancestors.append(parent.load())
                parent_id = parent.event.parent_id
            descendants: list[_Row] = []
            frontier = [start]
            while frontier:
                children = [c for r in frontier for c in self._children.get(r.event.id, ()) if c.event.tenant == tenant]
                descendants.extend(children)
                frontier = children
            descendants.sort(key=lambda r: r.event.position)
            return ancestors[::-1], [r.load() for r in descendants]

    def graph(
        self, tenant: str, event_id: str, *, max_depth: int, limit: int
    ) -> tuple[list[tuple[RecordedEvent, int]], bool]:
        with self._lock:
            start = self._row(tenant, event_id)
            if start is None:
                return [], False
            distance = {start.event.id: 0}
            found = [start]
            frontier = [start]
            for hop in range(1, max_depth + 1):
                step = []
                for row in frontier:
                    e = row.event
                    neighbours = [self._row(tenant, e.parent_id)] if e.parent_id else []
                    neighbours += self._children.get(e.id, [])
                    neighbours += [self._row(tenant, r) for r in e.related]
                    neighbours += self._referrers.get(e.id, [])
                    for n in neighbours:
                        if n is not None and n.event.tenant == tenant and n.event.id not in distance:
                            distance[n.event.id] = hop
                            step.append(n)
                found.extend(step)
                frontier = step
            found.sort(key=lambda r: (distance[r.event.id], r.event.position))
            return [(r.load(), distance[r.event.id]) for r in found[:limit]], len(found) > limit

    def save_snapshot(
        self, tenant: str, stream: str, projection: str, projection_version: int, stream_version: int, state: str
    ) -> None:
        with self._lock:
            self._snapshots[(tenant, stream, projection)] = (projection_version, stream_version, state)

    def load_snapshot(
        self, tenant: str, stream: str, projection: str, projection_version: int
    ) -> tuple[int, str] | None:
        with self._lock:
            snap = self._snapshots.get((tenant, stream, projection))
            if snap is None or snap[0] != projection_version:
                return None
            return snap[1], snap[2]

    def get_checkpoint(self, tenant: str, consumer: str) -> int | None:
        with self._lock:
            return self._checkpoints.get((tenant, consumer))

    def set_checkpoint(self, tenant: str, consumer: str, position: int) -> None:
        with self._lock:
            self._checkpoints[(tenant, consumer)] = position

    def save_token(self, token: ApiToken) -> None:
        with self._lock:
            if token.id in self._tokens:
                raise StoreError(f"token id {token.id} exists")
            self._tokens[token.id] = token

    def find_token(self, token_id: str) -> ApiToken | None:
        with self._lock:
            return self._tokens.get(token_id)

    def list_tokens(self, tenant: str) -> list[ApiToken]:
        with self._lock:
            return [t for t in self._tokens.values() if t.tenant == tenant]

    def revoke_token(self, tenant: str, token_id: str) -> bool:
        with self._lock:
            token = self._tokens.get(token_id)
            if token is None or token.tenant != tenant or token.revoked_at is not None:
                return False
            self._tokens[token_id] = replace(token, revoked_at=datetime.now(UTC))
            return True

    def has_tokens(self) -> bool:
        with self._lock:
            now = datetime.now(UTC)
            return any(t.active(now) for t in self._tokens.values())

    # -- instances ---------------------------------------------------------------------------------------------
    def register_instance(self, tenant: str, instance: Instance) -> InstanceChange:
        instance = replace(instance, tenant=tenant)
        with self._lock:
            previous = self._instances.get((tenant, instance.id))
            self._instances[(tenant, instance.id)] = instance
            return InstanceChange(previous, instance)

    def heartbeat_instance(
        self, tenant: str, instance_id: str, at: datetime, *, event_every: float, data: Mapping[str, Any]
    ) -> InstanceChange | None:
        with self._lock:
            previous = self._instances.get((tenant, instance_id))
            if previous is None:
                return None
            if previous.status == "closed":
                return InstanceChange(previous, previous)
            current, due = previous.heartbeat(at, event_every)
            self._instances[(tenant, instance_id)] = current
            return InstanceChange(previous, current, heartbeat_event=due)

    def close_instance(
        self, tenant: str, instance_id: str, at: datetime, *, reason: str | None
    ) -> InstanceChange | None:
        with self._lock:
            previous = self._instances.get((tenant, instance_id))
            if previous is None:
                return None
            current = previous if previous.status == "closed" else replace(previous, status="closed", closed_at=at)
            self._instances[(tenant, instance_id)] = current
            return InstanceChange(previous, current)

    def mark_instance_stale(self, tenant: str, instance_id: str, last_heartbeat: datetime) -> InstanceChange | None:
        with self._lock:
            previous = self._instances.get((tenant, instance_id))
            if previous is None or previous.status != "active" or previous.last_heartbeat != last_heartbeat:
                return None
            current = self._instances[(tenant, instance_id)] = replace(previous, status="stale")
            return InstanceChange(previous, current)

    def get_instance(self, tenant: str, instance_id: str) -> Instance | None:
        with self._lock:
            return self._instances.get((tenant, instance_id))

    def list_instances(
        self, tenant: str, *, status: str | None, project: str | None, after: str | None, limit: int
    ) -> list[Instance]:
        with self._lock:
            found = sorted(
                (i for (t, _), i in self._instances.items() if t == tenant),
                key=lambda i: i.id,
            )
        return [
            i
            for i in found
            if (status is None or i.status == status)
            and (project is None or i.project == project)
            and (after is None or i.id > after)
        ][:limit]

    def silent_instances(self, tenant: str, before: datetime, limit: int) -> list[Instance]:
        with self._lock:
            found = [
                i
                for (t, _), i in self._instances.items()
                if (tenant == "*" or t == tenant) and i.status == "active" and i.last_heartbeat < before
            ]
        return sorted(found, key=lambda i: (i.last_heartbeat, i.tenant, i.id))[:limit]

    def close(self) -> None:
        return None
