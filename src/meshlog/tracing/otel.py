"""An OpenTelemetry ``SpanExporter`` that writes spans into a meshlog store (no collector, no OTLP server).

::

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(meshlog.tracing.exporter("postgresql://…")))

Spans become events as described in :mod:`meshlog.tracing.spans` (the OTLP receiver's mapping) and go through the
background writer, so an unreachable store's events are spooled and delivered later. Needs ``opentelemetry-sdk``
(the ``otel`` extra).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(f"meshlog.tracing.exporter() needs the otel extra: pip install 'meshlog[otel]' ({exc})") from exc

from meshlog.tracing._context import active_writer
from meshlog.tracing._writer import Writer
from meshlog.tracing.spans import SpanRecord, events_of_spans, invalid_reason

if TYPE_CHECKING:
    from meshlog.log import EventLog

__all__ = ["MeshlogSpanExporter", "record_of"]

logger = logging.getLogger("meshlog.tracing")


def record_of(span: ReadableSpan) -> SpanRecord:
    """A :class:`~meshlog.tracing.spans.SpanRecord` from an SDK span."""
    context = span.context
    parent = span.parent
    resource = span.resource
    scope = span.instrumentation_scope
    status = span.status
    return SpanRecord(
        trace_id=f"{context.trace_id:032x}" if context is not None else "",
        span_id=f"{context.span_id:016x}" if context is not None else "",
        parent_span_id=f"{parent.span_id:016x}" if parent is not None else None,
        name=span.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        kind=span.kind.name.lower(),
        attributes=dict(span.attributes or {}),
        status_code=status.status_code.name.lower(),
        status_message=status.description or "",
        resource=dict(resource.attributes) if resource is not None else {},
        scope=scope.name if scope is not None else None,
        events=[(e.name, dict(e.attributes or {})) for e in span.events],
    )


class MeshlogSpanExporter(SpanExporter):
    """Writes finished spans as meshlog events. With ``url`` or ``log`` it has a writer of its own (options as
    :func:`meshlog.tracing.configure`'s: ``spool``, ``max_queue`` …); without, it uses the configured one."""

    def __init__(self, url: str | None = None, *, log: EventLog | None = None, **options: Any) -> None:
        self._own: Writer | None = Writer(url, log=log, **options) if (url or log is not None) else None
        self._closed = False

    def _writer(self) -> Writer | None:
        return self._own if self._own is not None else active_writer()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        writer = self._writer()
        if writer is None:
            return SpanExportResult.SUCCESS
        try:
            records = []
            for span in spans:
                record = record_of(span)
                reason = invalid_reason(record)
                if reason is None:
                    records.append(record)
                else:
                    logger.warning("meshlog exporter skipped a span: %s", reason)
            for event in events_of_spans(records):
                writer.enqueue(event)
        except Exception:
            writer.count_error()
            logger.warning("meshlog exporter could not convert spans", exc_info=True)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        writer = self._writer()
        return True if writer is None else writer.flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        self._closed = True
        if self._own is not None:
            self._own.close()
