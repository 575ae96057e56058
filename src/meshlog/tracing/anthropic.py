"""Tracing for the ``anthropic`` client: Messages, sync, async and streamed.

``meshlog.tracing.instrument(client)`` replaces ``client.messages.create`` and ``client.messages.stream`` on that
client object. ``create(stream=True)`` returns the SDK's own stream, observed in place; ``stream()`` returns the
SDK's own stream manager (its class swapped for a subclass that records the call when the block is entered).

Token counts follow the GenAI conventions: ``input_tokens`` includes the prompt-cache reads and writes that
Anthropic reports apart (``cached_input_tokens``, ``cache_creation_input_tokens``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any, Final

from meshlog.tracing._llm import (
    Accumulator,
    CallRecord,
    StreamObserver,
    given,
    observe_sdk_stream,
    simple_params,
    wrap_method,
)
from meshlog.tracing.semconv import LlmRequest, LlmResult, message_stats

__all__ = ["MessagesAccumulator", "instrument_anthropic", "message_result"]

logger = logging.getLogger("meshlog.tracing")

_RAW_EVENTS: Final = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    }
)
_SKIP: Final = frozenset({"messages", "system", "tools", "model", "metadata", "timeout", "stream"})


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _MessagesHooks:
    def request(self, kwargs: dict[str, Any]) -> LlmRequest:
        messages = kwargs.get("messages")
        messages = list(messages) if given(messages) and isinstance(messages, (list, tuple)) else []
        _, prompt, count, _ = message_stats(messages)
        system = kwargs.get("system")
        system_text = None
        if given(system):
            system_text = (
                system
                if isinstance(system, str)
                else "".join(str(_get(block, "text") or "") for block in (system or ()))
            )
        tools = kwargs.get("tools")
        return LlmRequest(
            provider="anthropic",
            model=str(kwargs.get("model") or "unknown"),
            operation="chat",
            system_prompt_length=len(system_text or ""),
            prompt_length=prompt,
            message_count=count,
            tool_count=len(tools) if given(tools) and isinstance(tools, (list, tuple)) else 0,
            stream=kwargs.get("stream") is True,
            params=simple_params(kwargs, _SKIP),
            system=system_text,
            prompt=messages,
        )

    def result(self, response: Any) -> LlmResult:
        return message_result(response)

    def accumulator(self) -> Accumulator:
        return MessagesAccumulator()

    def is_stream(self, response: Any) -> bool:
        return not hasattr(response, "content") and hasattr(response, "_iterator")


def _usage_into(result: LlmResult, usage: Any) -> None:
    if usage is None:
        return
    read = _int(_get(usage, "cache_read_input_tokens"))
    created = _int(_get(usage, "cache_creation_input_tokens"))
    base = _int(_get(usage, "input_tokens"))
    if base is not None:
        result.input_tokens = base + (read or 0) + (created or 0)
    if read is not None:
        result.cached_input_tokens = read
    if created is not None:
        result.cache_creation_input_tokens = created
    output = _int(_get(usage, "output_tokens"))
    if output is not None:
        result.output_tokens = output


def message_result(message: Any) -> LlmResult:
    """An :class:`LlmResult` from a ``Message``."""
    result = LlmResult(model=_get(message, "model"), response_id=_get(message, "id"))
    texts: list[str] = []
    for block in _get(message, "content") or []:
        kind = _get(block, "type")
        if kind == "text":
            texts.append(str(_get(block, "text") or ""))
        elif kind in ("tool_use", "server_tool_use") and _get(block, "name"):
            result.tool_calls.append(str(_get(block, "name")))
    reason = _get(message, "stop_reason")
    if reason:
        result.finish_reasons = [str(reason)]
    result.response_length = sum(len(t) for t in texts)
    result.response = "".join(texts)
    _usage_into(result, _get(message, "usage"))
    return result


class MessagesAccumulator:
    """Reads the raw stream events (``message_start``, ``content_block_*``, ``message_delta``); the events the
    SDK's ``MessageStream`` derives from them (``text``, ``input_json`` …) are ignored, so nothing counts twice."""

    def __init__(self) -> None:
        self.result_value = LlmResult()
        self.texts: list[str] = []
        self.usage: dict[str, Any] = {}

    def add(self, event: Any) -> bool:
        kind = _get(event, "type")
        result = self.result_value
        if kind == "message_start":
            message = _get(event, "message")
            result.model = _get(message, "model")
            result.response_id = _get(message, "id")
            self._usage(_get(message, "usage"))
        elif kind == "content_block_start":
            block = _get(event, "content_block")
            if _get(block, "type") in ("tool_use", "server_tool_use") and _get(block, "name"):
                result.tool_calls.append(str(_get(block, "name")))
        elif kind == "content_block_delta":
            delta = _get(event, "delta")
            if _get(delta, "type") == "text_delta":
                self.texts.append(str(_get(delta, "text") or ""))
        elif kind == "message_delta":
            reason = _get(_get(event, "delta"), "stop_reason")
            if reason:
                result.finish_reasons = [str(reason)]
            self._usage(_get(event, "usage"))
        return kind in _RAW_EVENTS

    def _usage(self, usage: Any) -> None:
        if usage is None:
            return
        for name in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
            value = _int(_get(usage, name))
            if value is not None:
                self.usage[name] = value

    def result(self) -> LlmResult:
        result = self.result_value
        text = "".join(self.texts)
        result.response_length = len(text)
        result.response = text
        _usage_into(result, self.usage or None)
        return result


_traced_managers: dict[type, type] = {}


def _traced_manager_class(base: Any, *, is_async: bool) -> type:
    """A subclass of the SDK's stream manager that records the call when its block is entered."""
    cls: type | None = _traced_managers.get(base)
    if cls is not None:
        return cls
    hooks = _MessagesHooks()

    def request_of(kwargs: dict[str, Any]) -> LlmRequest:
        request = hooks.request(kwargs)
        request.stream = True
        return request

    if is_async:

        async def __aenter__(self: Any) -> Any:
            record = CallRecord.start(request_of, self._meshlog_kwargs)
            if record is None:
                return await base.__aenter__(self)
            try:
                stream = await base.__aenter__(self)
            except BaseException as exc:
                record.fail(exc)
                raise
            return _observe(stream, record, is_async=True)

        cls = type(base.__name__, (base,), {"__aenter__": __aenter__, "__module__": base.__module__})
    else:

        def __enter__(self: Any) -> Any:
            record = CallRecord.start(request_of, self._meshlog_kwargs)
            if record is None:
                return base.__enter__(self)
            try:
                stream = base.__enter__(self)
            except BaseException as exc:
                record.fail(exc)
                raise
            return _observe(stream, record, is_async=False)

        cls = type(base.__name__, (base,), {"__enter__": __enter__, "__module__": base.__module__})
    _traced_managers[base] = cls
    return cls


def _observe(stream: Any, record: CallRecord, *, is_async: bool) -> Any:
    try:
        observe_sdk_stream(stream, StreamObserver(record, MessagesAccumulator()), is_async=is_async)
    except Exception:
        record.writer.count_error()
        logger.debug("meshlog could not observe an Anthropic stream", exc_info=True)
    return stream


def _wrap_stream(messages: Any, *, is_async: bool) -> None:
    original = messages.stream
    if getattr(original, "__meshlog_wrapped__", False):
        return

    @functools.wraps(original)
    def stream(*args: Any, **kwargs: Any) -> Any:
        manager = original(*args, **kwargs)
        try:
            manager.__class__ = _traced_manager_class(type(manager), is_async=is_async)
            manager._meshlog_kwargs = kwargs
        except Exception:
            logger.debug("meshlog could not trace an Anthropic stream manager", exc_info=True)
        return manager

    stream.__meshlog_wrapped__ = True  # type: ignore[attr-defined]
    messages.stream = stream


def instrument_anthropic(client: Any) -> Any:
    """Trace ``client`` (an ``anthropic.Anthropic`` or ``anthropic.AsyncAnthropic``, or a cloud variant); returns
    it."""
    is_async = type(client).__name__.startswith("Async")
    messages = getattr(client, "messages", None)
    if messages is not None:
        wrap_method(messages, "create", _MessagesHooks(), is_async=is_async)
        if hasattr(messages, "stream"):
            _wrap_stream(messages, is_async=is_async)
    return client
