"""meshlog: a durable, append-only event store for AI-agent systems.

::

    import meshlog

    log = meshlog.connect()                                  # $MESHLOG_URL, else sqlite:///./meshlog.db
    started = log.emit("task.started", {"capability": "code"}, task_id="42", agent_id="api-coder")
    log.emit("llm.call", {"model": "gpt-4o"}, task_id="42", parent_id=started.id, idempotency_key="call-7")
    last = log.query(agent_id="api-coder", order="desc", limit=100)   # the last 100 events of the agent
"""

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
from meshlog.log import EventLog, connect
from meshlog.log_async import AsyncEventLog, connect_async
from meshlog.projections import FunctionProjection, Projection, Replay
from meshlog.query import EventFilter, Page

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
    "uuid7",
]
