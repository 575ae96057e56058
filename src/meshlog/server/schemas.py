"""Request bodies of the HTTP API as pydantic models: strict types, unknown fields refused (``extra="forbid"``).

Strict mode means JSON types are never coerced: ``"version": "2"`` is a 400, not version 2. The models check
shapes only; meshlog's own validation (types, the NUL rule, sizes, lineage) runs when the event is appended.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BatchIn", "CheckpointIn", "EventIn", "ExpectedVersionIn", "OutcomeIn", "SingleEventIn"]

ExpectedVersionIn = Annotated[int, Field(ge=0)] | Literal["any", "no_stream", "stream_exists"]
"""An exact stream version (0 = no events yet) or one of ``"any"``, ``"no_stream"``, ``"stream_exists"``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EventIn(_Strict):
    """One event to append (an element of a batch)."""

    type: str
    data: dict[str, Any] = Field(default_factory=dict)
    stream: str | None = None
    metadata: dict[str, Any] | None = None
    trace_id: str | None = None
    task_id: str | None = None
    agent_id: str | None = None
    parent_id: str | None = None
    related: list[str] = Field(default_factory=list)
    idempotency_key: str | None = None
    version: int = 1
    occurred_at: str | None = Field(default=None, description="ISO 8601 with a UTC offset")
    id: str | None = None
    external_parent: bool = False


class SingleEventIn(EventIn):
    """The body of ``POST /v1/events`` for one event."""

    expected_version: ExpectedVersionIn = "any"


class BatchIn(_Strict):
    """The body of ``POST /v1/events`` for an atomic batch."""

    events: list[EventIn]
    expected_version: ExpectedVersionIn = "any"


class OutcomeIn(_Strict):
    """The body of ``POST /v1/events/{id}/outcome``."""

    outcome: dict[str, Any]
    agent_id: str | None = None
    metadata: dict[str, Any] | None = None
    idempotency_key: str | None = None


class CheckpointIn(_Strict):
    """The body of ``PUT /v1/checkpoints/{consumer}``."""

    position: Annotated[int, Field(ge=0)]
