"""OpenTelemetry spans as meshlog events, for the OTLP receiver and the span exporter alike.

Each span becomes two events:

- a GenAI span (OpenTelemetry GenAI conventions or OpenInference ``openinference.span.kind = LLM``): ``llm.call``
  at its start and ``llm.response`` (or ``llm.error`` when its status is ERROR) at its end, with the same
  normalized fields as the client wrappers' (:mod:`meshlog.tracing.semconv`);
- a tool span (``gen_ai.operation.name = execute_tool``, OpenInference ``TOOL``): ``tool.call`` and
  ``tool.result``;
- any other span: ``span.start`` and ``span.end``.

The raw attributes are kept in ``metadata["attributes"]`` and the span's identity in ``metadata["otel"]``. Event
ids and idempotency keys derive from the trace id and span id (``otlp:<trace>:<span>:<type>``), so a span sent
twice (OTLP clients resend on errors and timeouts) is stored once, and a child names its parent's first event as
``parent_id`` even before the parent span has arrived (``external_parent``: spans end, and are exported,
children first).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from meshlog.events import NewEvent
from meshlog.tracing.semconv import (
    call_fields,
    error_fields,
    from_attributes,
    is_llm_span,
    is_tool_span,
    json_safe,
    response_fields,
    tool_fields,
)

__all__ = ["SpanRecord", "anchor_id", "events_of_spans", "invalid_reason"]

KEY_PREFIX: Final = "otlp:"
_AGENT_ATTRIBUTES: Final = ("meshlog.agent_id", "gen_ai.agent.name", "gen_ai.agent.id", "agent_name")
_TASK_ATTRIBUTES: Final = ("meshlog.task_id", "gen_ai.conversation.id", "session.id")


@dataclass(slots=True)
class SpanRecord:
    """A finished span, whatever it came from (OTLP protobuf, OTLP JSON, the OpenTelemetry SDK)."""

    trace_id: str
    """32 lowercase hex digits."""
    span_id: str
    """16 lowercase hex digits."""
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    kind: str = "internal"
    attributes: dict[str, Any] = field(default_factory=dict)
    status_code: str = "unset"
    """``unset``, ``ok`` or ``error``."""
    status_message: str = ""
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str | None = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """The span's events (name, attributes): an ``exception`` event tells the error's type and message."""


def invalid_reason(span: SpanRecord) -> str | None:
    """Why a span cannot be stored (bad ids), or None."""
    if len(span.trace_id) != 32 or span.trace_id == "0" * 32 or not _is_hex(span.trace_id):
        return f"span {span.name!r}: traceId must be 16 bytes, not all zero"
    if len(span.span_id) != 16 or span.span_id == "0" * 16 or not _is_hex(span.span_id):
        return f"span {span.name!r}: spanId must be 8 bytes, not all zero"
    if span.parent_span_id is not None and (len(span.parent_span_id) != 16 or not _is_hex(span.parent_span_id)):
        return f"span {span.name!r}: parentSpanId must be 8 bytes"
    return None


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


_NAMESPACE: Final = uuid.UUID("6f1c3a52-9d0e-4b8a-a7c1-2e5d8f0b4c39")


def anchor_id(trace_id: str, span_id: str) -> str:
    """The id of a span's first event, which its children name as ``parent_id``: derived from the ids alone
    (a child knows nothing else of its parent), the same every time the span is sent."""
    return str(uuid.uuid5(_NAMESPACE, f"{trace_id}:{span_id}:first"))


def _second_id(span: SpanRecord) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{span.trace_id}:{span.span_id}:second"))


def _when(ns: int) -> datetime | None:
    if ns <= 0:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _lookup(attrs: Mapping[str, Any], names: Sequence[str]) -> str | None:
    for name in names:
        value = attrs.get(name)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)[:512]
    return None


def _error_of(span: SpanRecord) -> tuple[str | None, str | None]:
    """The error message and type of a failed span (status description, ``exception`` event, ``error.type``)."""
    if span.status_code != "error":
        return None, None
    message = span.status_message or None
    error_type = span.attributes.get("error.type")
    for name, attrs in span.events:
        if name == "exception":
            message = message or _lookup(attrs, ("exception.message",))
            error_type = error_type or attrs.get("exception.type")
    return message or "error", str(error_type) if error_type else None


def events_of_spans(spans: Iterable[SpanRecord]) -> list[NewEvent]:
    """The events of these spans, parents before children (an event batch's rule), each span's first event
    before its second. Spans repeated in the input are taken once."""
    by_id: dict[tuple[str, str], SpanRecord] = {}
    for span in spans:
        by_id.setdefault((span.trace_id, span.span_id), span)
    # Correlation ids are inherited from an ancestor in the same batch when a span has none of its own.
    agents: dict[tuple[str, str], str | None] = {}
    tasks: dict[tuple[str, str], str | None] = {}

    def resolve(key: tuple[str, str], names: Sequence[str], cache: dict[tuple[str, str], str | None]) -> str | None:
        seen: list[tuple[str, str]] = []
        current: tuple[str, str] | None = key
        value: str | None = None
        while current is not None and current in by_id and current not in seen:
            if current in cache:
                value = cache[current]
                break
            seen.append(current)
            value = _lookup(by_id[current].attributes, names)
            if value is not None:
                break
            parent = by_id[current].parent_span_id
            current = (current[0], parent) if parent else None
        for k in seen:
            cache[k] = value
        return value

    def depth(key: tuple[str, str]) -> int:
        n, current, guard = 0, by_id[key].parent_span_id, 0
        while current and (key[0], current) in by_id and guard < 1000:
            n += 1
            guard += 1
            current = by_id[(key[0], current)].parent_span_id
        return n

    ordered = sorted(by_id, key=lambda k: (depth(k), by_id[k].start_ns))
    firsts: list[NewEvent] = []
    seconds: list[tuple[int, NewEvent]] = []
    for key in ordered:
        span = by_id[key]
        agent = resolve(key, _AGENT_ATTRIBUTES, agents)
        if agent is None:
            service = span.resource.get("service.name")
            if isinstance(service, str) and service and not service.startswith("unknown_service"):
                agent = service[:512]
        task = resolve(key, _TASK_ATTRIBUTES, tasks)
        first, second = span_events(span, agent_id=agent, task_id=task)
        firsts.append(first)
        seconds.append((span.end_ns, second))
    return firsts + [e for _, e in sorted(seconds, key=lambda pair: pair[0])]


def span_events(span: SpanRecord, *, agent_id: str | None, task_id: str | None) -> tuple[NewEvent, NewEvent]:
    """The two events of one span (see the module's docstring)."""
    attrs = {k: json_safe(v) for k, v in span.attributes.items()}
    duration_ms = max(0.0, (span.end_ns - span.start_ns) / 1e6)
    otel: dict[str, Any] = {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "name": span.name,
        "kind": span.kind,
        "status": span.status_code,
    }
    if span.parent_span_id:
        otel["parent_span_id"] = span.parent_span_id
    if span.status_message:
        otel["status_message"] = span.status_message
    first_meta: dict[str, Any] = {"otel": dict(otel), "attributes": attrs}
    if span.resource:
        first_meta["otel"]["resource"] = {k: json_safe(v) for k, v in span.resource.items()}
    if span.scope:
        first_meta["otel"]["scope"] = span.scope
    second_meta: dict[str, Any] = {"otel": otel}
    error_message, error_type = _error_of(span)
    if is_llm_span(span.attributes):
        request, result, failure = from_attributes(span.attributes, status_error=error_message)
        first_type, first_data = "llm.call", call_fields(request, full=False)[0]
        if failure is not None:
            if error_type and failure.error_type in ("error", ""):
                failure.error_type = error_type
            second_type, second_data = "llm.error", error_fields(failure, duration_ms=duration_ms)[0]
        else:
            assert result is not None
            second_type, second_data = "llm.response", response_fields(result, duration_ms=duration_ms, full=False)[0]
        second_meta["attributes"] = {
            k: v for k, v in attrs.items() if k.startswith(("gen_ai.response.", "gen_ai.usage.", "error."))
        }
    elif is_tool_span(span.attributes):
        tool, call_id, args, result_value = tool_fields(span.attributes, span.name)
        first_type, first_data = "tool.call", {"tool": tool}
        second_type = "tool.result"
        second_data = {"tool": tool, "ok": error_message is None, "duration_ms": round(duration_ms)}
        if call_id:
            first_data["call_id"] = second_data["call_id"] = call_id
        if isinstance(args, Mapping):
            first_data["args"] = json_safe(dict(args))
        if result_value is not None and error_message is None:
            second_data["result"] = json_safe(result_value)
    else:
        first_type, first_data = "span.start", {"name": span.name, "span_kind": span.kind}
        second_type = "span.end"
        second_data = {"name": span.name, "ok": error_message is None, "duration_ms": round(duration_ms)}
    if error_message is not None and second_type != "llm.error":
        second_data["error"] = error_message[:2000]
        if error_type:
            second_data["error_type"] = error_type
    first_id = anchor_id(span.trace_id, span.span_id)
    parent = anchor_id(span.trace_id, span.parent_span_id) if span.parent_span_id else None
    base = f"{KEY_PREFIX}{span.trace_id}:{span.span_id}:"
    common: dict[str, Any] = {"trace_id": span.trace_id, "task_id": task_id, "agent_id": agent_id}
    first = NewEvent(
        type=first_type,
        data=first_data,
        metadata=first_meta,
        parent_id=parent,
        external_parent=parent is not None,
        idempotency_key=base + first_type,
        occurred_at=_when(span.start_ns),
        id=first_id,
        **common,
    )
    second = NewEvent(
        type=second_type,
        data=second_data,
        metadata=second_meta,
        parent_id=first_id,
        external_parent=True,
        idempotency_key=base + second_type,
        occurred_at=_when(span.end_ns),
        id=_second_id(span),
        **common,
    )
    return first, second
