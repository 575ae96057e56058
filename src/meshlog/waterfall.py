"""A trace's events as spans on a timeline, for a waterfall view (no I/O).

meshlog records a timed step as two events: a start event (``llm.call``, ``tool.call``, ``span.start``) and an
end event (``llm.response`` or ``llm.error``, ``tool.result``, ``span.end``) whose ``parent_id`` is the start
event's id, with the measured ``duration_ms`` in the end event's data. The tracing wrappers
(:mod:`meshlog.tracing`), the OTLP receiver (:mod:`meshlog.tracing.spans`) and agents that emit events themselves
all follow it. :func:`build_waterfall` pairs them into :class:`Span` objects; every other event of the trace
(``task.progress``, ``task.dispatched`` ...) becomes a zero-length marker, and so does an end event whose start is
not among the events given.

Times are the events' ``occurred_at`` (``recorded_at`` when the event has none). A span lasts its end event's
``duration_ms`` when it has one (measured, so more precise than the two timestamps), else from its start event's
time to its end event's. Nesting follows ``parent_id``: a span's parent is the span that holds its start event's
parent (its start, its end, or the marker itself); a parent outside the events given makes it a root.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from meshlog.events import RecordedEvent
from meshlog.session import event_time, failure_message, is_failure

__all__ = ["END_TYPES", "START_TYPES", "Span", "SpanKind", "SpanStatus", "Waterfall", "build_waterfall"]

SpanKind = Literal["llm", "tool", "span", "event"]
SpanStatus = Literal["ok", "error", "open", "abandoned"]

START_TYPES: Final[Mapping[str, SpanKind]] = {"llm.call": "llm", "tool.call": "tool", "span.start": "span"}
"""The event types that open a span, and the span's kind."""
END_TYPES: Final[Mapping[SpanKind, frozenset[str]]] = {
    "llm": frozenset({"llm.response", "llm.error"}),
    "tool": frozenset({"tool.result"}),
    "span": frozenset({"span.end"}),
}
"""The event types that close a span of each kind (their ``parent_id`` is the start event)."""


@dataclass(frozen=True, slots=True)
class Span:
    """One bar (or, for ``kind="event"``, one marker) of a waterfall.

    ``id`` is the start event's id (the marker's own for an event), ``end_id`` the end event's (None while the
    span is open, and for markers). ``offset_ms`` is the start's distance from the trace's start. ``status``:
    ``ok``; ``error`` (``llm.error``, a tool or span that ended with ``ok: false`` or an error, a failure marker);
    ``open`` (no end event yet: ``end`` and ``duration_ms`` are None); ``abandoned`` (a stream the caller stopped
    reading). The LLM fields come from the call and its response (the response's model wins); ``prompt`` and
    ``response`` are there only when the call was recorded with full payloads.
    """

    id: str
    end_id: str | None
    kind: SpanKind
    type: str
    """The start event's type (the marker's type)."""
    name: str
    """The model (llm), the tool (tool), the span's name (span) or the event's type (event)."""
    agent_id: str | None
    task_id: str | None
    stream: str
    position: int
    """The start event's position."""
    start: datetime
    end: datetime | None
    offset_ms: float
    duration_ms: float | None
    depth: int
    parent_span_id: str | None
    status: SpanStatus
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    error_type: str | None = None
    prompt: str | None = None
    response: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601 strings)."""
        return {
            "id": self.id,
            "end_id": self.end_id,
            "kind": self.kind,
            "type": self.type,
            "name": self.name,
            "agent_id": self.agent_id,
            "task_id": self.task_id,
            "stream": self.stream,
            "position": self.position,
            "start": self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "offset_ms": self.offset_ms,
            "duration_ms": self.duration_ms,
            "depth": self.depth,
            "parent_span_id": self.parent_span_id,
            "status": self.status,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "finish_reason": self.finish_reason,
            "error": self.error,
            "error_type": self.error_type,
            "prompt": self.prompt,
            "response": self.response,
        }


@dataclass(frozen=True, slots=True)
class Waterfall:
    """The spans of a trace's events, ordered by start, then position; ``start`` is the earliest start and
    ``end`` the latest start or end (both None without events)."""

    spans: tuple[Span, ...]
    start: datetime | None
    end: datetime | None
    event_count: int


# -- reading the data fields --------------------------------------------------------------------------------------
def _text(data: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _count(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return int(value)


def _ms(data: Mapping[str, Any]) -> float | None:
    value = data.get("duration_ms")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _payload(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _end_status(kind: SpanKind, end: RecordedEvent) -> tuple[SpanStatus, str | None, str | None]:
    """The status, error message and error type an end event reports."""
    d = end.data
    if end.type == "llm.error":
        kind_of_error = _text(d, "error")
        return "error", _text(d, "message") or kind_of_error or "error", _text(d, "error_type") or kind_of_error
    if kind == "llm" and (d.get("abandoned") is True or d.get("finish_reason") == "abandoned"):
        return "abandoned", None, None
    message = _text(d, "error")
    if d.get("ok") is False or message is not None:
        return "error", message or "failed", _text(d, "error_type")
    return "ok", None, None


@dataclass(slots=True)
class _Draft:
    start: RecordedEvent
    kind: SpanKind
    end: RecordedEvent | None = None


def build_waterfall(events: Iterable[RecordedEvent]) -> Waterfall:
    """The spans of ``events`` (one trace's, in any order; see the module's docstring). An event given twice is
    taken once; of two end events naming one start, the first (by position) closes it, the other is a marker."""
    unique = {e.id: e for e in events}
    ordered = sorted(unique.values(), key=lambda e: e.position)
    drafts: dict[str, _Draft] = {}
    holder: dict[str, str] = {}
    """Event id → id of the span it belongs to."""
    for event in ordered:
        kind = START_TYPES.get(event.type)
        if kind is not None:
            drafts[event.id] = _Draft(event, kind)
            holder[event.id] = event.id
            continue
        opened = drafts.get(event.parent_id) if event.parent_id is not None else None
        if opened is not None and opened.end is None and event.type in END_TYPES.get(opened.kind, ()):
            opened.end = event
            holder[event.id] = opened.start.id
            continue
        drafts[event.id] = _Draft(event, "event")
        holder[event.id] = event.id
    parents = _parents(drafts, holder)
    depths = _depths(drafts, parents)
    times = [event_time(d.start) for d in drafts.values()]
    trace_start = min(times) if times else None
    spans = [_span(d, parents.get(span_id), depths[span_id], trace_start) for span_id, d in drafts.items()]
    spans.sort(key=lambda s: (s.start, s.position))
    ends = [s.end or s.start for s in spans]
    return Waterfall(tuple(spans), trace_start, max(ends) if ends else None, len(ordered))


def _parents(drafts: Mapping[str, _Draft], holder: Mapping[str, str]) -> dict[str, str]:
    parents: dict[str, str] = {}
    for span_id, draft in drafts.items():
        parent_event = draft.start.parent_id
        if parent_event is None:
            continue
        parent_span = holder.get(parent_event)
        if parent_span is not None and parent_span != span_id:
            parents[span_id] = parent_span
    return parents


def _depths(span_ids: Iterable[str], parents: dict[str, str]) -> dict[str, int]:
    """Each span's distance from its root. A parent cycle (possible only with external parents) is cut where the
    walk closes it: that span loses its parent and becomes a root."""
    depths: dict[str, int] = {}
    for span_id in span_ids:
        chain: list[str] = []
        current: str | None = span_id
        while current is not None and current not in depths and current not in chain:
            chain.append(current)
            current = parents.get(current)
        if current is not None and current in chain:
            del parents[chain[-1]]
            current = None
        base = depths[current] if current is not None else -1
        for offset, item in enumerate(reversed(chain), start=1):
            depths[item] = base + offset
    return depths


def _span(draft: _Draft, parent: str | None, depth: int, trace_start: datetime | None) -> Span:
    start_event, end_event = draft.start, draft.end
    start = event_time(start_event)
    offset = (start - trace_start) / timedelta(milliseconds=1) if trace_start is not None else 0.0
    d = start_event.data
    common: dict[str, Any] = {
        "id": start_event.id,
        "type": start_event.type,
        "agent_id": start_event.agent_id,
        "task_id": start_event.task_id,
        "stream": start_event.stream,
        "position": start_event.position,
        "start": start,
        "offset_ms": round(offset, 3),
        "depth": depth,
        "parent_span_id": parent,
    }
    if draft.kind == "event":
        failed = is_failure(start_event)
        return Span(
            **common,
            end_id=None,
            kind="event",
            name=start_event.type,
            end=start,
            duration_ms=0.0,
            status="error" if failed else "ok",
            error=failure_message(d) if failed else None,
        )
    name = {"llm": _text(d, "model"), "tool": _text(d, "tool"), "span": _text(d, "name")}[draft.kind]
    fields: dict[str, Any] = {}
    if draft.kind == "llm":
        fields["model"] = _text(d, "model")
        fields["prompt"] = _payload(d, "prompt")
    if end_event is None:
        return Span(
            **common,
            **fields,
            end_id=None,
            kind=draft.kind,
            name=name or start_event.type,
            end=None,
            duration_ms=None,
            status="open",
        )
    e = end_event.data
    measured = _ms(e)
    if measured is None:
        measured = max(0.0, (event_time(end_event) - start) / timedelta(milliseconds=1))
    status, error, error_type = _end_status(draft.kind, end_event)
    if draft.kind == "llm":
        fields["model"] = _text(e, "model") or fields["model"]
        fields["input_tokens"] = _count(e, "input_tokens")
        fields["output_tokens"] = _count(e, "output_tokens")
        total = _count(e, "total_tokens")
        if total is None and fields["input_tokens"] is not None and fields["output_tokens"] is not None:
            total = fields["input_tokens"] + fields["output_tokens"]
        fields["total_tokens"] = total
        fields["finish_reason"] = _text(e, "finish_reason")
        fields["response"] = _payload(e, "response")
    name = name or _text(e, {"llm": "model", "tool": "tool", "span": "name"}[draft.kind]) or start_event.type
    return Span(
        **common,
        **fields,
        end_id=end_event.id,
        kind=draft.kind,
        name=name,
        end=start + timedelta(milliseconds=measured),
        duration_ms=round(measured, 3),
        status=status,
        error=error,
        error_type=error_type,
    )
