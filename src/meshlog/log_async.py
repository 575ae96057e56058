"""The event log: meshlog's API over any store (async; :mod:`meshlog.log` is its generated sync twin)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Final, TypeVar, cast

from meshlog._commit_async import AsyncGroupCommitter
from meshlog._validation import DEFAULT_MAX_EVENT_BYTES, check_tenant, prepare_request
from meshlog.errors import MeshlogError, NotFound, ValidationError
from meshlog.events import ANY, ExpectedVersion, NewEvent, RecordedEvent, StreamInfo
from meshlog.instances_async import AsyncInstances
from meshlog.lineage import DEFAULT_GRAPH_LIMIT, MAX_GRAPH_LIMIT, OUTCOME_TYPE, Graph, Lineage
from meshlog.narrative import render_narrative
from meshlog.projections import Projection, Replay, SnapshotProjection, supports_snapshots
from meshlog.query import EventFilter, Order, Page, check_limit, check_order, make_page, resolve_page_request
from meshlog.resume import Resume, ResumeRules, suggest
from meshlog.session import SessionState
from meshlog.stats import (
    DEFAULT_BUCKET_SECONDS,
    DEFAULT_TRACE_LIMIT,
    EventStats,
    TraceSummary,
    check_trace_query,
    check_window,
)
from meshlog.store_async import AsyncStore
from meshlog.stores import open_async_store
from meshlog.tokens import ApiToken, check_token_id, issue_token, parse_token
from meshlog.types import MODES, EventType, Mode, TypeRegistry, register_own_types, registry_of

__all__ = ["AsyncEventLog", "connect_async", "resolve_url"]

S = TypeVar("S")

DEFAULT_URL: Final = "sqlite:///./meshlog.db"
URL_VARIABLES: Final = ("MESHLOG_URL", "DATABASE_URL", "PG_PRIMARY_URL")
PAGE_SIZE: Final = 1000


def resolve_url(url: str | None = None) -> str:
    """The store URL: ``url``, else ``$MESHLOG_URL``, ``$DATABASE_URL``, ``$PG_PRIMARY_URL``, else
    ``sqlite:///./meshlog.db``."""
    if url:
        return url
    for name in URL_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value
    return DEFAULT_URL


class AsyncEventLog:
    """Append, query, read, replay and subscribe to events of one tenant in one store.

    Create it with :func:`connect_async` (or ``meshlog.connect`` for the sync :class:`~meshlog.EventLog`).
    Safe to share between tasks; concurrent appends are group-committed (see :mod:`meshlog._commit_async`).
    """

    def __init__(
        self,
        store: AsyncStore,
        *,
        tenant: str = "default",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        types: TypeRegistry | None = None,
        validation: Mode = "known",
    ) -> None:
        self.store = store
        self.tenant = check_tenant(tenant)
        if validation not in MODES:
            raise ValidationError(f"validation must be one of {MODES}, got {validation!r}", field="validation")
        self.validation: Mode = validation
        self.types = TypeRegistry() if types is None else types
        """The event types this log knows: emit validates against them, reads upcast to their current version."""
        register_own_types(self.types)
        if isinstance(max_event_bytes, bool) or not isinstance(max_event_bytes, int) or max_event_bytes < 1:
            raise ValidationError("max_event_bytes must be a positive integer", field="max_event_bytes")
        self.max_event_bytes = max_event_bytes
        self._committer = AsyncGroupCommitter(store)
        self._owns_store = True

    @property
    def queue_depth(self) -> int:
        """Appends waiting while a group commit is in flight (for metrics)."""
        return self._committer.queue_depth

    @property
    def url(self) -> str:
        """The store's URL, without password."""
        return self.store.url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} tenant={self.tenant!r}>"

    async def __aenter__(self) -> AsyncEventLog:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def for_tenant(self, tenant: str) -> AsyncEventLog:
        """This log's view of another tenant: the same store, types and validation, and the same group committer
        (so the tenants' concurrent appends share transactions). Closing the view does not close the store."""
        view = AsyncEventLog.__new__(AsyncEventLog)
        view.__dict__.update(self.__dict__)
        view.tenant = check_tenant(tenant)
        view._owns_store = False
        return view

    @property
    def instances(self) -> AsyncInstances:
        """The instance registry of this tenant, with the default intervals (see :mod:`meshlog.instances_async`;
        ``AsyncInstances(log, stale_after=..., clock=...)`` for others)."""
        return AsyncInstances(self)

    async def close(self) -> None:
        """Close the store's connections (a :meth:`for_tenant` view leaves them to the log it came from)."""
        if self._owns_store:
            await self.store.close()

    async def migrate(self) -> None:
        """Create or upgrade the store's schema (safe to run concurrently and repeatedly)."""
        await self.store.migrate()

    # -- writing ------------------------------------------------------------------------------------------------
    async def emit(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        stream: str | None = None,
        expected_version: ExpectedVersion = ANY,
        trace_id: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
        parent_id: str | None = None,
        related: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        version: int = 1,
        occurred_at: datetime | None = None,
        id: str | None = None,
        external_parent: bool = False,
    ) -> RecordedEvent:
        """Append one event and return it as recorded; it is durable when this returns.

        Raises ``ValidationError`` for bad input, ``WrongExpectedVersion`` when ``expected_version`` does not
        hold, ``IdempotencyConflict`` when ``idempotency_key`` was used for different content. A retry with the
        same ``idempotency_key`` returns the first recorded event and writes nothing.
        """
        event = NewEvent(
            type=type,
            data={} if data is None else data,
            stream=stream,
            metadata=metadata,
            trace_id=trace_id,
            task_id=task_id,
            agent_id=agent_id,
            parent_id=parent_id,
            related=related,
            idempotency_key=idempotency_key,
            version=version,
            occurred_at=occurred_at,
            id=id,
            external_parent=external_parent,
        )
        return await self.append(event, expected_version=expected_version)

    async def append(self, event: NewEvent, *, expected_version: ExpectedVersion = ANY) -> RecordedEvent:
        """Append one event already made as a :class:`~meshlog.events.NewEvent`: :meth:`emit` without its keyword
        arguments (for code that receives events, such as the server and the ingesters)."""
        (recorded,) = await self._append([event], expected_version, single=True)
        return recorded

    async def emit_batch(
        self, events: Sequence[NewEvent], *, expected_version: ExpectedVersion = ANY
    ) -> list[RecordedEvent]:
        """Append several events atomically (all or none), in the given order, possibly to several streams.

        ``expected_version`` (when not ``ANY``) needs every event in one stream and is checked before the first.
        """
        return await self._append(events, expected_version, single=False)

    async def _append(
        self, events: Sequence[NewEvent], expected_version: object, *, single: bool
    ) -> list[RecordedEvent]:
        request = prepare_request(
            self.tenant,
            events,
            expected_version=expected_version,
            max_event_bytes=self.max_event_bytes,
            single=single,
            check=self._check,
        )
        outcome = await self._committer.submit(request)
        if isinstance(outcome, MeshlogError):
            raise outcome
        return outcome

    def _check(self, event: NewEvent, index: int | None) -> NewEvent:
        return self.types.check(event, self.validation, index=index)

    def _up(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """Events as their types' current versions (upcast through the registry's upcasters)."""
        if not self.types.has_upcasters:
            return events
        upcast = self.types.upcast
        return [upcast(e) for e in events]

    def event_types(self, category: str | None = None) -> list[EventType]:
        """The event types this log knows (``EventType.to_dict()`` gives type, description, category,
        required_fields, optional_fields, version, important)."""
        return self.types.types(category)

    # -- reading ------------------------------------------------------------------------------------------------
    async def get(self, event_id: str, *, with_outcome: bool = False, raw: bool = False) -> RecordedEvent:
        """The event with this id. Raises ``NotFound``.

        With ``with_outcome=True`` its ``outcome`` field holds the latest outcome recorded for it (see
        :meth:`record_outcome`), or stays None. Events are upcast to their type's current version unless
        ``raw=True``, which returns them as stored.
        """
        event = await self.store.get(self.tenant, _event_id(event_id))
        if event is None:
            raise NotFound(f"no event {event_id}")
        if not raw and self.types.has_upcasters:
            event = self.types.upcast(event)
        if with_outcome:
            latest = await self.store.query(
                self.tenant, EventFilter(parent_id=event.id, types=(OUTCOME_TYPE,)), order="desc", limit=1
            )
            if latest:
                event = event._replace(outcome=latest[0].data.get("outcome"))
        return event

    async def record_outcome(
        self,
        event_id: str,
        outcome: Mapping[str, Any],
        *,
        agent_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> RecordedEvent:
        """Record what came of an event, later: appends an ``outcome.recorded`` event to the same stream, a child
        of the original (``parent_id``) that also names it in ``related``. The original stays untouched; read it
        with ``get(event_id, with_outcome=True)`` to see the latest outcome folded in."""
        original = await self.get(event_id)
        return await self.emit(
            OUTCOME_TYPE,
            {"outcome": dict(outcome) if isinstance(outcome, Mapping) else outcome},
            stream=original.stream,
            trace_id=original.trace_id,
            task_id=original.task_id,
            agent_id=agent_id or original.agent_id,
            parent_id=original.id,
            related=(original.id,),
            metadata=metadata,
            idempotency_key=idempotency_key,
        )

    async def lineage(self, event_id: str) -> Lineage:
        """The event, its ancestors (root first) and all its descendants. Raises ``NotFound``."""
        event = await self.get(event_id)
        found = await self.store.lineage(self.tenant, event.id)
        if found is None:
            raise NotFound(f"no event {event_id}")
        return Lineage(event, self._up(found[0]), self._up(found[1]))

    async def graph(self, event_id: str, *, max_depth: int = 3, limit: int = DEFAULT_GRAPH_LIMIT) -> Graph:
        """The events within ``max_depth`` hops of the event through parent and related links, in both
        directions, with the links between them: the ``limit`` nearest (1 to 10,000; by distance, then position),
        ``truncated`` when there were more. Raises ``NotFound``."""
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or not 0 <= max_depth <= 50:
            raise ValidationError("max_depth must be an integer from 0 to 50", field="max_depth", rule="range")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_GRAPH_LIMIT:
            raise ValidationError(f"limit must be an integer from 1 to {MAX_GRAPH_LIMIT}", field="limit", rule="range")
        canonical = _event_id(event_id)
        found, truncated = await self.store.graph(self.tenant, canonical, max_depth=max_depth, limit=limit)
        if not found:
            raise NotFound(f"no event {event_id}")
        if self.types.has_upcasters:
            found = [(self.types.upcast(e), distance) for e, distance in found]
        return Graph.build(canonical, found, truncated=truncated)

    async def query(
        self,
        *,
        stream: str | None = None,
        types: Sequence[str] | str | None = None,
        trace_id: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_position: int | None = None,
        before_position: int | None = None,
        text: str | None = None,
        parent_id: str | None = None,
        order: Order | None = None,
        limit: int = 100,
        cursor: str | None = None,
        total_count: bool = False,
        raw: bool = False,
    ) -> Page:
        """One page of matching events in position order: ``"asc"`` (the default) or ``"desc"`` (latest first).

        ``limit`` is 1..1000. When ``page.has_more``, pass ``cursor=page.next_cursor`` (alone, or with the
        same filters) for the next page; keyset paging, so pages neither skip nor repeat events.
        ``total_count=True`` also counts every match (a second, slower query). ``raw=True`` returns events as
        stored, without upcasting them to their type's current version.
        """
        flt = EventFilter(
            stream=stream,
            types=None if types is None else ((types,) if isinstance(types, str) else tuple(types)),
            trace_id=trace_id,
            task_id=task_id,
            agent_id=agent_id,
            since=since,
            until=until,
            after_position=after_position,
            before_position=before_position,
            text=text,
            parent_id=parent_id,
        )
        check_limit(limit)
        flt, run, resolved = resolve_page_request(flt, None if order is None else check_order(order), cursor)
        rows = await self.store.query(self.tenant, run, order=resolved, limit=limit + 1)
        if not raw:
            rows = self._up(rows)
        total = await self.store.count(self.tenant, flt) if total_count else None
        return make_page(rows, limit, flt, resolved, total)

    async def stats(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        bucket: timedelta = timedelta(seconds=DEFAULT_BUCKET_SECONDS),
    ) -> EventStats:
        """Counts of the events recorded in ``[since, until)``: per ``bucket`` (a timeline that starts at
        ``since``, empty buckets included), per type, per agent, and the failures (by type, see
        :func:`meshlog.stats.is_failure_type`). ``until`` defaults to now and ``since`` to an hour before
        ``until``. The window is at most 7 days and 10,080 buckets; a bucket is a whole number of seconds.
        Raises ValidationError otherwise."""
        if not isinstance(bucket, timedelta):
            raise ValidationError("bucket must be a timedelta", field="bucket", rule="type")
        seconds = bucket.total_seconds()
        if seconds != int(seconds):
            raise ValidationError("bucket must be a whole number of seconds", field="bucket", rule="whole_seconds")
        end = until if until is not None else datetime.now(UTC)
        start = since if since is not None else end - timedelta(hours=1)
        check_window(start, end, int(seconds))
        return await self.store.stats(self.tenant, start, end, int(seconds))

    async def traces(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = DEFAULT_TRACE_LIMIT,
        agent_id: str | None = None,
    ) -> list[TraceSummary]:
        """The traces with events recorded in ``[since, until)``, the last active first, at most ``limit`` (1 to
        500, default 50): each with its first and last ``recorded_at`` in the window, its number of events, agents
        (at most 10), LLM calls, tokens (:func:`meshlog.stats.event_tokens`) and failures (by type, see
        :func:`meshlog.stats.is_failure_type`), counted over the window's events only. ``agent_id`` keeps the
        traces that agent recorded events in. ``until`` defaults to now and ``since`` to an hour before ``until``;
        the window is at most 7 days. Raises ValidationError otherwise."""
        end = until if until is not None else datetime.now(UTC)
        start = since if since is not None else end - timedelta(hours=1)
        check_trace_query(start, end, limit, agent_id)
        return list(await self.store.traces(self.tenant, start, end, limit, agent_id))

    async def read_stream(
        self,
        stream: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        backwards: bool = False,
        raw: bool = False,
    ) -> AsyncIterator[RecordedEvent]:
        """The events of one stream in stream order (``backwards=True`` for newest first), read in pages,
        upcast to their types' current versions unless ``raw=True``."""
        _check_version("from_version", from_version)
        if to_version is not None:
            _check_version("to_version", to_version)
        low, high = from_version, to_version
        while high is None or low <= high:
            rows = await self.store.read_stream(
                self.tenant, stream, from_version=low, to_version=high, backwards=backwards, limit=PAGE_SIZE
            )
            for event in rows if raw else self._up(rows):
                yield event
            if len(rows) < PAGE_SIZE:
                return
            if backwards:
                high = rows[-1].stream_position - 1
            else:
                low = rows[-1].stream_position + 1

    async def stream_version(self, stream: str) -> int:
        """The stream's version (its last ``stream_position``); 0 when it has no events."""
        return await self.store.stream_version(self.tenant, stream)

    async def list_streams(
        self, *, prefix: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        """Streams by name (those after ``after``, optionally starting with ``prefix``), at most ``limit``."""
        check_limit(limit)
        return await self.store.list_streams(self.tenant, prefix=prefix, after=after, limit=limit)

    async def head_position(self) -> int:
        """The position of the tenant's last committed event (0 when it has none)."""
        return await self.store.head_position(self.tenant)

    async def replay(
        self,
        stream: str,
        projection: Projection[S],
        *,
        to_version: int | None = None,
        snapshot_every: int | None = None,
    ) -> Replay[S]:
        """Fold the stream (up to ``to_version``) through ``projection`` and return the state with figures.

        With ``snapshot_every=N`` and a projection that supports snapshots (``name``, ``version``,
        ``to_snapshot``, ``from_snapshot``), replay starts from the last saved snapshot and saves a new one
        when at least N events were applied since, so a long stream is read only past its last snapshot.
        """
        started = time.perf_counter()
        if to_version is not None:
            _check_version("to_version", to_version)
        snapshots = snapshot_every is not None and supports_snapshots(projection)
        snap_projection = cast("SnapshotProjection[S]", projection)
        if snapshot_every is not None and (isinstance(snapshot_every, bool) or snapshot_every < 1):
            raise ValidationError("snapshot_every must be an integer >= 1", field="snapshot_every", rule="min")
        state = projection.initial()
        last = 0
        base: int | None = None
        saved: int | None = None
        if snapshots:
            snap = await self.store.load_snapshot(self.tenant, stream, snap_projection.name, snap_projection.version)
            if snap is not None:
                saved = snap[0]
                if to_version is None or snap[0] <= to_version:
                    base = last = snap[0]
                    state = snap_projection.from_snapshot(json.loads(snap[1]))
        count = 0
        async for event in self.read_stream(stream, from_version=last + 1, to_version=to_version):
            state = projection.apply(state, event)
            count += 1
            last = event.stream_position
        if snapshots and snapshot_every is not None and last - (base or 0) >= snapshot_every and last > (saved or 0):
            blob = json.dumps(snap_projection.to_snapshot(state), separators=(",", ":"))
            await self.store.save_snapshot(
                self.tenant, stream, snap_projection.name, snap_projection.version, last, blob
            )
        return Replay(state, count, last, (time.perf_counter() - started) * 1000.0, base)

    async def resume(
        self,
        stream: str,
        *,
        now: datetime | None = None,
        rules: ResumeRules | None = None,
        snapshot_every: int = 500,
    ) -> Resume:
        """Replay ``stream`` through :class:`~meshlog.session.SessionState` (from its last snapshot) and suggest
        what to do next, by the built-in resume rules or ``rules`` (see :mod:`meshlog.resume`)."""
        replayed = await self.replay(stream, SessionState(), snapshot_every=snapshot_every)
        moment = now or datetime.now(UTC)
        return Resume(stream, replayed.state, suggest(replayed.state, now=moment, rules=rules), replayed.last_version)

    async def narrative(
        self,
        *,
        trace_id: str | None = None,
        stream: str | None = None,
        title: str | None = None,
        now: datetime | None = None,
        limit: int = 10_000,
    ) -> str:
        """A Markdown timeline of one trace or one stream: who did what and when, why (user intent), how long it
        took, what failed and what followed, outcomes. At most ``limit`` events (the first ones) are told."""
        if (trace_id is None) == (stream is None):
            raise ValidationError("give exactly one of trace_id and stream", field="trace_id", rule="one_of")
        events: list[RecordedEvent] = []
        if stream is not None:
            async for event in self.read_stream(stream):
                events.append(event)
                if len(events) >= limit:
                    break
        else:
            page = await self.query(trace_id=trace_id, limit=PAGE_SIZE)
            events.extend(page)
            while page.has_more and len(events) < limit:
                page = await self.query(cursor=page.next_cursor, limit=PAGE_SIZE)
                events.extend(page)
        default = f"Trace {trace_id}" if trace_id is not None else f"Stream {stream}"
        return render_narrative(events[:limit], title=title or default, now=now)

    async def subscribe(
        self,
        after_position: int | None = None,
        *,
        filter: EventFilter | None = None,
        consumer: str | None = None,
        batch_size: int = 500,
        poll_interval: float = 1.0,
    ) -> AsyncIterator[RecordedEvent]:
        """Every event after ``after_position`` (default: from the start, or ``consumer``'s checkpoint),
        then each new one as it is committed, forever, in position order, exactly once.

        Correct under concurrent writers because stores commit in position order: everything up to the head
        position read before a catch-up query is visible to that query. ``poll_interval`` bounds how long a
        change made by another process can go unnoticed where the store has no push notification.
        """
        flt = filter or EventFilter()
        position = after_position
        if position is None and consumer is not None:
            position = await self.checkpoint(consumer)
        position = max(position or 0, flt.after_position or 0)
        limit = check_limit(batch_size)
        while True:
            head = await self.store.head_position(self.tenant)
            if flt.before_position is not None:
                head = min(head, flt.before_position - 1)
            if head > position:
                low = position
                while True:
                    run = replace(flt, after_position=low, before_position=head + 1)
                    rows = await self.store.query(self.tenant, run, order="asc", limit=limit)
                    for event in self._up(rows):
                        yield event
                    if len(rows) < limit:
                        break
                    low = rows[-1].position
                position = head
            elif flt.before_position is not None and position >= flt.before_position - 1:
                return
            else:
                await self.store.wait_for_events(self.tenant, position, poll_interval)

    async def checkpoint(self, consumer: str) -> int | None:
        """The position ``consumer`` saved with :meth:`save_checkpoint`, or None."""
        return await self.store.get_checkpoint(self.tenant, _consumer(consumer))

    async def save_checkpoint(self, consumer: str, position: int) -> None:
        """Remember that ``consumer`` has processed every event up to ``position``."""
        _check_version("position", position)
        await self.store.set_checkpoint(self.tenant, _consumer(consumer), position)

    # -- API tokens ---------------------------------------------------------------------------------------------
    async def create_token(
        self, scopes: str | Sequence[str], *, name: str | None = None, expires_in: timedelta | None = None
    ) -> tuple[str, ApiToken]:
        """A new API token of this tenant for a meshlog server: its text, to hand to its holder (only a digest is
        stored, so it cannot be shown again), and its record. ``scopes``: ``"read"``, ``"write"`` (includes read)
        or ``"admin"`` (includes both)."""
        text, record = issue_token(
            self.tenant, [scopes] if isinstance(scopes, str) else scopes, name=name, expires_in=expires_in
        )
        await self.store.save_token(record)
        return text, record

    async def tokens(self) -> list[ApiToken]:
        """This tenant's API tokens (revoked and expired ones included), oldest first."""
        return await self.store.list_tokens(self.tenant)

    async def revoke_token(self, token_id: str) -> None:
        """Revoke one of this tenant's tokens. Raises NotFound when the tenant has no such active token."""
        if not await self.store.revoke_token(self.tenant, check_token_id(token_id)):
            raise NotFound(f"no active token {token_id!r} in tenant {self.tenant!r}")

    async def authenticate(self, token: str) -> ApiToken | None:
        """The active token (of any tenant) whose text ``token`` is, or None: not a meshlog token, unknown,
        a wrong secret, revoked or expired."""
        parsed = parse_token(token) if isinstance(token, str) else None
        if parsed is None:
            return None
        record = await self.store.find_token(parsed[0])
        if record is None or not record.matches(parsed[1]) or not record.active():
            return None
        return record

    async def has_tokens(self) -> bool:
        """Whether the store holds any active API token (a server then requires one on every request)."""
        return await self.store.has_tokens()


def _event_id(value: object) -> str:
    """The canonical form of an event id; NotFound for anything that is not a UUID (no such event can exist)."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise NotFound(f"no event {value!r} (not a UUID)") from None


def _check_version(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**63 - 1:
        raise ValidationError(f"{name} must be an integer >= 0, got {value!r}", field=name, rule="min")


def _consumer(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 200 or "\x00" in name:
        raise ValidationError("consumer must be a non-empty string", field="consumer", rule="type")
    return name


async def connect_async(
    url: str | None = None,
    *,
    tenant: str | None = None,
    migrate: bool = True,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    types: TypeRegistry | Sequence[str] | None = None,
    validation: Mode = "known",
) -> AsyncEventLog:
    """Open the store at ``url`` (see :func:`resolve_url`) and return an event log for ``tenant``
    (default ``$MESHLOG_TENANT`` or ``"default"``). With ``migrate`` the schema is created or upgraded first.

    URLs: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``postgresql://user@host/db`` (option
    ``?schema=name``, default ``meshlog``), ``memory://``.

    ``types`` is a :class:`~meshlog.types.TypeRegistry`, or names of built-in catalogues (``"agent-mesh"``,
    ``"session"``, ``"documentable"``) and paths of catalogue files to load into a new one; by default no type
    is known. ``validation`` is ``"known"`` (validate known types, accept others), ``"strict"`` (reject unknown
    types too) or ``"off"``.
    """
    registry = types if isinstance(types, TypeRegistry) or types is None else registry_of(types)
    store = await open_async_store(resolve_url(url))
    try:
        log = AsyncEventLog(
            store,
            tenant=tenant or os.environ.get("MESHLOG_TENANT") or "default",
            max_event_bytes=max_event_bytes,
            types=registry,
            validation=validation,
        )
        if migrate:
            await store.migrate()
    except BaseException:
        await store.close()
        raise
    return log
