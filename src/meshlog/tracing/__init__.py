"""Tracing for agents: LLM calls, tool calls and steps as events, written without slowing or breaking the agent.

::

    import meshlog, meshlog.tracing
    from openai import OpenAI

    meshlog.tracing.configure("http://meshlog.internal:8080")   # or $MESHLOG_URL; none: tracing is off
    client = meshlog.tracing.instrument(OpenAI())
    with meshlog.trace(task_id="42", agent_id="api-coder"):
        with meshlog.span("plan"):
            client.chat.completions.create(model="gpt-4o", messages=[...])   # llm.call, then llm.response

- :func:`trace` sets the correlation (trace, task, agent) for everything inside, across asyncio tasks and threads
  started inside; :func:`span` and :func:`traced` write ``span.start``/``span.end`` (or ``tool.call``/
  ``tool.result``) and make the events inside their children (``parent_id``).
- :func:`instrument` traces an ``openai`` client, an ``anthropic`` client or ``litellm``.
- :func:`exporter` is an OpenTelemetry ``SpanExporter`` writing spans as the same events.
- Events are queued and written by a background thread in batches; an unreachable store's events go to a local
  spool and are delivered later, in order; :func:`stats` counts what happened. Nothing here raises into the
  traced code.

See docs/tracing.md.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any, TypeVar, cast

from meshlog.tracing._context import (
    Redactor,
    Span,
    TraceContext,
    configure,
    current,
    flush,
    shutdown,
    span,
    stats,
    trace,
    traced,
)
from meshlog.tracing._writer import TracingStats

T = TypeVar("T")

if TYPE_CHECKING:
    from meshlog.log import EventLog
    from meshlog.tracing.otel import MeshlogSpanExporter

__all__ = [
    "MeshlogSpanExporter",
    "Redactor",
    "Span",
    "TraceContext",
    "TracingStats",
    "configure",
    "current",
    "exporter",
    "flush",
    "instrument",
    "shutdown",
    "span",
    "stats",
    "trace",
    "traced",
]


def instrument(target: T) -> T:
    """Trace an LLM client in place and return it: an ``openai.OpenAI``/``AsyncOpenAI`` (chat completions and
    responses), an ``anthropic.Anthropic``/``AsyncAnthropic`` (messages), the ``litellm`` module (``completion``,
    ``acompletion``) or one of those two functions (the traced function is returned).

    Safe to call twice. With tracing off (no store configured) the traced methods call straight through.
    """
    if isinstance(target, types.ModuleType) and target.__name__ == "litellm":
        from meshlog.tracing.litellm import instrument_litellm

        return cast("T", instrument_litellm(target))
    if callable(target) and getattr(target, "__module__", "").startswith("litellm"):
        from meshlog.tracing.litellm import wrap_completion

        return cast("T", wrap_completion(target))
    origin = type(target).__module__.split(".")[0]
    if origin == "openai":
        from meshlog.tracing.openai import instrument_openai

        return cast("T", instrument_openai(target))
    if origin == "anthropic":
        from meshlog.tracing.anthropic import instrument_anthropic

        return cast("T", instrument_anthropic(target))
    raise TypeError(
        f"meshlog.tracing.instrument() takes an openai or anthropic client or the litellm module, "
        f"got {type(target).__module__}.{type(target).__qualname__}"
    )


def exporter(url: str | None = None, *, log: EventLog | None = None, **options: Any) -> MeshlogSpanExporter:
    """An OpenTelemetry ``SpanExporter`` that writes finished spans into a store as events (GenAI spans as
    ``llm.call``/``llm.response``/``llm.error``, tool spans as ``tool.call``/``tool.result``, others as
    ``span.start``/``span.end``), through the same background writer and spool as the wrappers.

    Without ``url`` or ``log`` it uses the writer of :func:`configure` (or ``$MESHLOG_URL``). Needs the ``otel``
    extra: ``pip install 'meshlog[otel]'``.
    """
    from meshlog.tracing.otel import MeshlogSpanExporter

    return MeshlogSpanExporter(url, log=log, **options)


def __getattr__(name: str) -> Any:
    if name == "MeshlogSpanExporter":
        from meshlog.tracing.otel import MeshlogSpanExporter

        return MeshlogSpanExporter
    raise AttributeError(f"module 'meshlog.tracing' has no attribute {name!r}")
