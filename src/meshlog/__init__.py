"""meshlog: a durable, append-only event store for AI-agent systems.

::

    import meshlog

    log = meshlog.connect()                                  # $MESHLOG_URL, else sqlite:///./meshlog.db
    started = log.emit("task.started", {"capability": "code"}, task_id="42", agent_id="api-coder")
    log.emit("llm.call", {"model": "gpt-4o"}, task_id="42", parent_id=started.id, idempotency_key="call-7")
    last = log.query(agent_id="api-coder", order="desc", limit=100)   # the last 100 events of the agent
"""

import typing as _typing

from meshlog.errors import (
    ConcurrencyError,
    ConfigurationError,
    EventTooLarge,
    IdempotencyConflict,
    InvalidCursor,
    MeshlogError,
    NotFound,
    StoreError,
    StoreUnavailable,
    ValidationError,
    WrongExpectedVersion,
)
from meshlog.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StreamInfo,
    StreamState,
    uuid7,
)
from meshlog.ingest import publish_nats, publish_nats_async
from meshlog.log import EventLog, connect
from meshlog.log_async import AsyncEventLog, connect_async
from meshlog.projections import FunctionProjection, Projection, Replay
from meshlog.query import EventFilter, Page

if _typing.TYPE_CHECKING:
    from meshlog.tracing import span, trace, traced

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AsyncEventLog",
    "ConcurrencyError",
    "ConfigurationError",
    "EventFilter",
    "EventLog",
    "EventTooLarge",
    "ExpectedVersion",
    "FunctionProjection",
    "IdempotencyConflict",
    "InvalidCursor",
    "MeshlogError",
    "NewEvent",
    "NotFound",
    "Page",
    "Projection",
    "RecordedEvent",
    "Replay",
    "StoreError",
    "StoreUnavailable",
    "StreamInfo",
    "StreamState",
    "ValidationError",
    "WrongExpectedVersion",
    "__version__",
    "connect",
    "connect_async",
    "publish_nats",
    "publish_nats_async",
    "span",
    "trace",
    "traced",
    "uuid7",
]

# Tracing (meshlog.trace, meshlog.traced, meshlog.span) is imported on first use: importing meshlog stays light.
_TRACING: _typing.Final = frozenset({"trace", "traced", "span"})


def __getattr__(name: str) -> _typing.Any:
    if name in _TRACING:
        import meshlog.tracing

        return getattr(meshlog.tracing, name)
    raise AttributeError(f"module 'meshlog' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_TRACING})
