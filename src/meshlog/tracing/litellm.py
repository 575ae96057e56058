"""Tracing for LiteLLM's ``completion`` and ``acompletion`` (sync, async and streamed).

``meshlog.tracing.instrument(litellm)`` replaces ``litellm.completion`` and ``litellm.acompletion`` in the
``litellm`` module (code that imported the functions by name before keeps the untraced ones: instrument first,
or wrap a function directly with ``meshlog.tracing.instrument(litellm.completion)``). LiteLLM answers in the
OpenAI format, read by the OpenAI hooks; the provider is the model's prefix (``anthropic/claude-…``).

A stream is LiteLLM's own ``CustomStreamWrapper``, its class swapped for a subclass that observes each chunk.
"""

from __future__ import annotations

import functools
import inspect
import logging
import weakref
from collections.abc import Callable
from typing import Any

from meshlog.tracing._llm import CallRecord, StreamObserver
from meshlog.tracing.openai import ChatAccumulator, chat_hooks, chat_result
from meshlog.tracing.semconv import LlmRequest

__all__ = ["instrument_litellm", "wrap_completion"]

logger = logging.getLogger("meshlog.tracing")


def _request(kwargs: dict[str, Any]) -> LlmRequest:
    model = str(kwargs.get("model") or "unknown")
    provider = kwargs.get("custom_llm_provider") or (model.split("/", 1)[0] if "/" in model else "litellm")
    request = chat_hooks(str(provider)).request(kwargs)
    for name in ("api_base", "base_url", "api_key", "custom_llm_provider", "api_version"):
        request.params.pop(name, None)
    return request


_traced_streams: dict[type, type] = {}


def _traced_stream_class(base: Any) -> type:
    cls: type | None = _traced_streams.get(base)
    if cls is not None:
        return cls

    def __next__(self: Any) -> Any:
        observer: StreamObserver = self._meshlog_observer
        try:
            chunk = base.__next__(self)
        except StopIteration:
            observer.finish(abandoned=False)
            raise
        except BaseException as exc:
            observer.fail(exc)
            raise
        observer.chunk(chunk)
        return chunk

    async def __anext__(self: Any) -> Any:
        observer: StreamObserver = self._meshlog_observer
        try:
            chunk = await base.__anext__(self)
        except StopAsyncIteration:
            observer.finish(abandoned=False)
            raise
        except BaseException as exc:
            observer.fail(exc)
            raise
        observer.chunk(chunk)
        return chunk

    cls = type(base.__name__, (base,), {"__next__": __next__, "__anext__": __anext__, "__module__": base.__module__})
    _traced_streams[base] = cls
    return cls


def _finish(record: CallRecord, response: Any) -> None:
    try:
        if hasattr(response, "choices") or not (hasattr(response, "__next__") or hasattr(response, "__anext__")):
            record.respond(functools.partial(chat_result, response))
            return
        observer = StreamObserver(record, ChatAccumulator())
        response._meshlog_observer = observer
        response.__class__ = _traced_stream_class(type(response))
        weakref.finalize(response, observer.abandon)
    except Exception:
        record.writer.count_error()
        logger.debug("meshlog could not observe a LiteLLM response", exc_info=True)


def wrap_completion(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``litellm.completion`` or ``litellm.acompletion`` (or a compatible function), traced."""
    if getattr(fn, "__meshlog_wrapped__", False):
        return fn
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def traced_async(*args: Any, **kwargs: Any) -> Any:
            record = CallRecord.start(_request, _kwargs(args, kwargs))
            if record is None:
                return await fn(*args, **kwargs)
            try:
                response = await fn(*args, **kwargs)
            except BaseException as exc:
                record.fail(exc)
                raise
            _finish(record, response)
            return response

        traced_async.__meshlog_wrapped__ = True  # type: ignore[attr-defined]
        return traced_async

    @functools.wraps(fn)
    def traced(*args: Any, **kwargs: Any) -> Any:
        record = CallRecord.start(_request, _kwargs(args, kwargs))
        if record is None:
            return fn(*args, **kwargs)
        try:
            response = fn(*args, **kwargs)
        except BaseException as exc:
            record.fail(exc)
            raise
        _finish(record, response)
        return response

    traced.__meshlog_wrapped__ = True  # type: ignore[attr-defined]
    return traced


def _kwargs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``completion(model, messages, ...)`` may take the model and messages by position."""
    if not args:
        return kwargs
    named = dict(kwargs)
    for name, value in zip(("model", "messages"), args, strict=False):
        named.setdefault(name, value)
    return named


def instrument_litellm(module: Any) -> Any:
    """Trace ``module.completion`` and ``module.acompletion`` (the ``litellm`` module); returns the module."""
    for name in ("completion", "acompletion"):
        fn = getattr(module, name, None)
        if callable(fn):
            setattr(module, name, wrap_completion(fn))
    return module
