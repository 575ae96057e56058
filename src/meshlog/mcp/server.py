"""meshlog's MCP tools, on the official MCP Python SDK (``MCPServer``).

Each tool takes typed arguments (the SDK publishes their JSON Schema and validates calls against it) and returns a
pydantic model (its structured result). An instance's events are the stream ``instance:<instance_id>``, so an
event's ``sequence_num`` is its position in that stream: gapless and monotonic per instance, enforced by the
store's stream version check. Every failure, bad arguments included, comes back as an error result
(``isError``) whose text says what was wrong; the server carries on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, ConfigDict, Field

import meshlog
from meshlog.errors import MeshlogError, ValidationError
from meshlog.events import RecordedEvent
from meshlog.instances_async import DEFAULT_HEARTBEAT_EVENT_EVERY, DEFAULT_STALE_AFTER, AsyncInstances
from meshlog.log_async import AsyncEventLog
from meshlog.registry import Instance, check_instance_id, stream_of
from meshlog.session import SessionState
from meshlog.types import TypeRegistry, registry_of

__all__ = ["LogFor", "McpSettings", "create_mcp_server"]

LogFor = Callable[[Context, Literal["read", "write"]], Awaitable[AsyncEventLog]]
"""How a tool gets the log to work on, for a call's context and the scope the tool needs (the HTTP transport
checks the request's API token; stdio serves one log)."""

MAX_OFFSET: Final = 100_000
_SESSION_TYPES: Final = frozenset(t.name for t in registry_of(["session"]).types())


@dataclass(frozen=True, slots=True)
class McpSettings:
    """How the MCP tools behave.

    ``require_registration``: ``emit_event`` refuses event types of the session catalogue (epic_started,
    test_passed …) for an instance that was never registered. ``heartbeat_event_every`` and ``stale_after`` are the
    registry's intervals (see :class:`~meshlog.instances_async.AsyncInstances`).
    """

    require_registration: bool = True
    heartbeat_event_every: float = DEFAULT_HEARTBEAT_EVENT_EVERY
    stale_after: float = DEFAULT_STALE_AFTER


# -- results ----------------------------------------------------------------------------------------------------
class EmitResult(BaseModel):
    success: bool
    event_id: str
    sequence_num: int = Field(description="The event's position in the instance's stream: 1, 2, 3 … without gaps.")
    timestamp: str = Field(description="When the store recorded it (ISO 8601).")
    error: str | None = None


class EventOut(BaseModel):
    event_id: str
    event_type: str
    sequence_num: int
    timestamp: str
    event_data: dict[str, Any]
    metadata: dict[str, Any] | None = None
    parent_id: str | None = None


class QueryFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_type: str | list[str] | None = Field(default=None, description="One event type or several.")
    start_date: datetime | None = Field(default=None, description="Recorded at or after (ISO 8601).")
    end_date: datetime | None = Field(default=None, description="Recorded before (ISO 8601).")
    keyword: str | None = Field(default=None, description="Text found in any string of event_data (ASCII case-folded).")


class QueryResult(BaseModel):
    events: list[EventOut]
    total_count: int
    has_more: bool


class ReplayResult(BaseModel):
    final_state: dict[str, Any]
    events_replayed: int
    duration_ms: float
    success: bool


class EventTypeOut(BaseModel):
    type: str
    description: str
    category: str
    required_fields: list[str]
    optional_fields: list[str]


class EventTypesResult(BaseModel):
    event_types: list[EventTypeOut]


class InstanceOut(BaseModel):
    instance_id: str
    name: str | None
    project: str | None
    host: str | None
    status: str
    registered_at: str
    last_heartbeat: str
    metadata: dict[str, Any]
    stream: str


class ResumeResult(BaseModel):
    instance_id: str
    stream: str
    suggestion: str
    rule: str
    state: dict[str, Any]
    last_sequence_num: int
    instance: InstanceOut | None = Field(description="The registry's record, None for an unregistered instance.")


class LineageResult(BaseModel):
    event: EventOut
    ancestors: list[EventOut]
    descendants: list[EventOut]


class NarrativeResult(BaseModel):
    markdown: str


def _event(e: RecordedEvent) -> EventOut:
    return EventOut(
        event_id=e.id,
        event_type=e.type,
        sequence_num=e.stream_position,
        timestamp=e.recorded_at.isoformat(),
        event_data=dict(e.data),
        metadata=dict(e.metadata) or None,
        parent_id=e.parent_id,
    )


def _instance(i: Instance) -> InstanceOut:
    d = i.to_dict()
    return InstanceOut(instance_id=i.id, **{k: v for k, v in d.items() if k not in {"id", "closed_at"}})


@contextmanager
def _errors() -> Iterator[None]:
    """meshlog's errors as tool errors: the client gets an error result with the message."""
    try:
        yield
    except MeshlogError as exc:
        raise ToolError(f"{type(exc).__name__}: {exc}") from exc


def _check_id(instance_id: str) -> str:
    with _errors():
        return check_instance_id(instance_id)


# -- the server -------------------------------------------------------------------------------------------------
def create_mcp_server(log: AsyncEventLog | LogFor, settings: McpSettings | None = None) -> MCPServer:
    """An MCP server whose tools work on ``log`` (one event log, or a :data:`LogFor` that picks the log per
    call). Run it with ``.run_stdio_async()``, connect to it in-process with ``mcp.Client(server)``, or serve it
    over streamable HTTP (``meshlog serve`` mounts it at ``/mcp``)."""
    config = settings or McpSettings()
    log_for: LogFor
    if isinstance(log, AsyncEventLog):
        fixed = log

        async def serve_one(ctx: Context, scope: Literal["read", "write"]) -> AsyncEventLog:
            return fixed

        log_for = serve_one
    else:
        log_for = log

    server = MCPServer(
        "meshlog",
        version=meshlog.__version__,
        log_level="WARNING",
        instructions=(
            "meshlog keeps an append-only log of what each instance (a working session) did. Register with "
            "register_instance, send heartbeat while working, record progress with emit_event (epic_started, "
            "test_passed, commit_created, checkpoint_created …; list_event_types names them), and call "
            "resume_instance to see where a previous session stopped and what to do next."
        ),
    )

    def registry(log: AsyncEventLog) -> AsyncInstances:
        return AsyncInstances(log, heartbeat_event_every=config.heartbeat_event_every, stale_after=config.stale_after)

    @server.tool()
    async def emit_event(
        instance_id: Annotated[str, Field(description="The instance (session) the event belongs to.")],
        event_type: Annotated[str, Field(description="The event type, e.g. epic_started (see list_event_types).")],
        event_data: Annotated[dict[str, Any], Field(description="The event's payload, a JSON object.")],
        ctx: Context,
        metadata: Annotated[dict[str, Any] | None, Field(description="Tags and context.")] = None,
        parent_id: Annotated[str | None, Field(description="The event that caused this one.")] = None,
    ) -> EmitResult:
        """Append an event to the instance's stream; it is durable when this returns. Its sequence_num is the
        next number of the instance's stream, without gaps. Session event types need a registered instance."""
        _check_id(instance_id)
        log = await log_for(ctx, "write")
        with _errors():
            if (
                config.require_registration
                and event_type in _SESSION_TYPES
                and await log.store.get_instance(log.tenant, instance_id) is None
            ):
                raise ValidationError(
                    f"instance {instance_id!r} is not registered: call register_instance first "
                    f"({event_type} is a session event type)",
                    field="instance_id",
                    rule="registered",
                )
            event = await log.emit(
                event_type, event_data, stream=stream_of(instance_id), metadata=metadata, parent_id=parent_id
            )
        return EmitResult(
            success=True,
            event_id=event.id,
            sequence_num=event.stream_position,
            timestamp=event.recorded_at.isoformat(),
        )

    @server.tool()
    async def query_events(
        instance_id: str,
        ctx: Context,
        filters: QueryFilters | None = None,
        limit: Annotated[int, Field(ge=1, le=1000, description="At most this many events (1 to 1000).")] = 100,
        offset: Annotated[int, Field(ge=0, le=MAX_OFFSET, description="Skip this many matches first.")] = 0,
        order: Annotated[
            Literal["desc", "asc"], Field(description="desc: newest first (the last events); asc: oldest first.")
        ] = "desc",
    ) -> QueryResult:
        """The instance's events matching the filters (event_type, start_date, end_date, keyword), newest first
        by default, with the total number of matches and whether more follow."""
        _check_id(instance_id)
        log = await log_for(ctx, "read")
        flt = filters or QueryFilters()
        with _errors():
            events, total = await _query(log, stream_of(instance_id), flt, limit, offset, order)
        return QueryResult(events=[_event(e) for e in events], total_count=total, has_more=offset + len(events) < total)

    @server.tool()
    async def replay_events(
        instance_id: str,
        ctx: Context,
        to_sequence_num: Annotated[int | None, Field(ge=0, description="Replay up to this event.")] = None,
    ) -> ReplayResult:
        """Rebuild the instance's session state by replaying its events in order (up to to_sequence_num)."""
        _check_id(instance_id)
        log = await log_for(ctx, "read")
        with _errors():
            replayed = await log.replay(stream_of(instance_id), SessionState(), to_version=to_sequence_num)
        return ReplayResult(
            final_state=replayed.state.to_final_state(),
            events_replayed=replayed.events_replayed,
            duration_ms=round(replayed.duration_ms, 3),
            success=True,
        )

    @server.tool()
    async def list_event_types(
        ctx: Context,
        category: Annotated[str | None, Field(description="Only this category (instance, epic, testing …).")] = None,
    ) -> EventTypesResult:
        """The event types meshlog knows, with description, category and required and optional fields."""
        log = await log_for(ctx, "read")
        known = TypeRegistry()
        known.load_catalogue("session")
        listed = {t.name: t for t in known.types(category)}
        listed.update({t.name: t for t in log.event_types(category)})
        return EventTypesResult(
            event_types=[
                EventTypeOut(
                    type=t.name,
                    description=t.description,
                    category=t.category or "",
                    required_fields=list(t.required_fields),
                    optional_fields=list(t.optional_fields),
                )
                for t in listed.values()
            ]
        )

    @server.tool()
    async def register_instance(
        instance_id: str,
        ctx: Context,
        name: str | None = None,
        project: str | None = None,
        host: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> InstanceOut:
        """Register an instance (a working session) so that its heartbeats and events are tracked."""
        _check_id(instance_id)
        log = await log_for(ctx, "write")
        with _errors():
            return _instance(
                await registry(log).register(instance_id, name=name, project=project, host=host, metadata=metadata)
            )

    @server.tool()
    async def heartbeat(
        instance_id: str,
        ctx: Context,
        data: Annotated[
            dict[str, Any] | None, Field(description="What it is doing: status, current_epic, context_percent …")
        ] = None,
    ) -> InstanceOut:
        """Report that the instance is alive (a stale instance becomes active again)."""
        _check_id(instance_id)
        log = await log_for(ctx, "write")
        with _errors():
            return _instance(await registry(log).heartbeat(instance_id, data))

    @server.tool()
    async def resume_instance(instance_id: str, ctx: Context) -> ResumeResult:
        """Where the instance's session stands (last epic, tests, deployments, checkpoint …) and a suggestion of
        what to do next, from its events."""
        _check_id(instance_id)
        log = await log_for(ctx, "read")
        with _errors():
            resumed = await registry(log).resume(instance_id)
            found = await log.store.get_instance(log.tenant, instance_id)
        return ResumeResult(
            instance_id=instance_id,
            stream=resumed.stream,
            suggestion=resumed.suggestion.text,
            rule=resumed.suggestion.rule,
            state=resumed.state.to_final_state(),
            last_sequence_num=resumed.last_version,
            instance=None if found is None else _instance(found),
        )

    @server.tool()
    async def event_lineage(event_id: str, ctx: Context) -> LineageResult:
        """An event with its causal chain: its ancestors (root first) and every event descended from it."""
        log = await log_for(ctx, "read")
        with _errors():
            found = await log.lineage(event_id)
        return LineageResult(
            event=_event(found.event),
            ancestors=[_event(e) for e in found.ancestors],
            descendants=[_event(e) for e in found.descendants],
        )

    @server.tool()
    async def narrative(
        ctx: Context,
        instance_id: Annotated[str | None, Field(description="Tell this instance's stream …")] = None,
        trace_id: Annotated[str | None, Field(description="… or this trace.")] = None,
    ) -> NarrativeResult:
        """A Markdown timeline of an instance's session (or of a trace): who did what and when, what failed."""
        if (instance_id is None) == (trace_id is None):
            raise ToolError("give exactly one of instance_id and trace_id")
        log = await log_for(ctx, "read")
        with _errors():
            if instance_id is not None:
                _check_id(instance_id)
                text = await log.narrative(stream=stream_of(instance_id), title=f"Instance {instance_id}")
            else:
                text = await log.narrative(trace_id=trace_id)
        return NarrativeResult(markdown=text)

    return server


async def _query(
    log: AsyncEventLog, stream: str, flt: QueryFilters, limit: int, offset: int, order: Literal["desc", "asc"]
) -> tuple[list[RecordedEvent], int]:
    """One page of the stream's matches after skipping ``offset`` of them, and the number of matches."""
    types = [flt.event_type] if isinstance(flt.event_type, str) else flt.event_type
    if types is not None and not types:
        raise ValidationError("filters.event_type must name at least one type", field="filters.event_type")
    since = _aware(flt.start_date, "start_date")
    until = _aware(flt.end_date, "end_date")
    if types is None and since is None and until is None and flt.keyword is None:
        # No filter: sequence numbers are gapless, so the page is a range of stream versions.
        total = await log.stream_version(stream)
        if order == "desc":
            high = total - offset
            low = max(1, high - limit + 1)
            events = [e async for e in log.read_stream(stream, from_version=low, to_version=high, backwards=True)]
        else:
            low = offset + 1
            events = [e async for e in log.read_stream(stream, from_version=low, to_version=offset + limit)]
        return (events if total - offset > 0 else []), total
    kwargs: dict[str, Any] = {"stream": stream, "types": types, "since": since, "until": until, "text": flt.keyword}
    page = await log.query(
        **kwargs, order=order, limit=min(1000, offset + limit) if offset else limit, total_count=True
    )
    total = page.total_count or 0
    matches = list(page)
    while len(matches) < offset + limit and page.has_more:
        page = await log.query(**kwargs, order=order, limit=1000, cursor=page.next_cursor)
        matches.extend(page)
    return matches[offset : offset + limit], total


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValidationError(f"filters.{name} needs a time zone (e.g. 2026-03-01T09:00:00Z)", field=name)
    return value
