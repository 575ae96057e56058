"""One LLM call as events: ``llm.call`` before it, ``llm.response`` or ``llm.error`` after it, and the stream in
between observed chunk by chunk.

A stream is finished exactly once: when the caller reads it to the end (``llm.response``), when reading it fails
(``llm.error``), or when the caller stops early, by closing it, by dropping it (its iterator is finalized), or by
exiting the interpreter: then ``llm.response`` says ``abandoned: true`` with what had been received.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final, Protocol

from meshlog.events import uuid7
from meshlog.tracing._context import (
    TraceContext,
    active_writer,
    context_for_call,
    full_payload,
    new_event,
    redacted,
)
from meshlog.tracing._writer import Writer
from meshlog.tracing.semconv import (
    LlmFailure,
    LlmRequest,
    LlmResult,
    call_fields,
    error_fields,
    error_kind,
    response_fields,
)

__all__ = ["Accumulator", "CallRecord", "StreamObserver", "abandon_open_streams", "failure_of"]

logger = logging.getLogger("meshlog.tracing")

_open_streams: Final[set[StreamObserver]] = set()
_open_lock: Final = threading.Lock()


class Accumulator(Protocol):
    """Reads a provider's stream chunks into an :class:`LlmResult`."""

    def add(self, chunk: Any) -> bool | None:
        """Read one chunk; False when it is not a chunk of the wire stream (an event the SDK derived)."""
        ...

    def result(self) -> LlmResult: ...


def failure_of(exc: BaseException, model: str | None) -> LlmFailure:
    """An :class:`LlmFailure` from a client library's exception (``status_code`` read when it has one)."""
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if not isinstance(status, int):
            status = None
    cls = type(exc)
    error_type = f"{cls.__module__.split('.')[0]}.{cls.__name__}" if cls.__module__ != "builtins" else cls.__name__
    kind, retryable = error_kind(status, cls.__name__)
    if isinstance(exc, (KeyboardInterrupt, SystemExit)) or cls.__name__ == "CancelledError":
        kind, retryable = "cancelled", None
    return LlmFailure(
        error=kind,
        error_type=error_type,
        message=str(exc)[:2000],
        status_code=status,
        retryable=retryable,
        model=model,
    )


class CallRecord:
    """The events of one call. :meth:`start` returns None when tracing is off (then the caller just calls)."""

    __slots__ = ("_done", "ctx", "full", "id", "model", "started", "writer")

    def __init__(self, writer: Writer, ctx: TraceContext, call_id: str, model: str, full: bool) -> None:
        self.writer = writer
        self.ctx = ctx
        self.id = call_id
        self.model = model
        self.full = full
        self.started = time.perf_counter()
        self._done = False

    @classmethod
    def start(cls, build: Callable[[], LlmRequest]) -> CallRecord | None:
        """Write ``llm.call`` for the request ``build()`` describes; None when tracing is off or on any error."""
        writer = active_writer()
        if writer is None:
            return None
        try:
            request = build()
            ctx = context_for_call()
            full = full_payload(ctx)
            if full:
                request.system = redacted("system", request.system)
                request.prompt = redacted("prompt", request.prompt)
            data, attributes = call_fields(request, full=full)
            call_id = uuid7()
            record = cls(writer, ctx, call_id, request.model, full)
            writer.enqueue(
                new_event("llm.call", data, ctx=ctx, parent_id=ctx.parent_id, attributes=attributes, event_id=call_id)
            )
            return record
        except Exception:
            writer.count_error()
            logger.debug("meshlog llm.call failed", exc_info=True)
            return None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def respond(self, result: LlmResult | Callable[[], LlmResult]) -> None:
        """Write ``llm.response`` (once)."""
        if self._done:
            return
        self._done = True
        try:
            duration = self.elapsed_ms()
            value = result() if callable(result) else result
            if self.full:
                value.response = redacted("response", value.response)
            data, attributes = response_fields(value, duration_ms=duration, full=self.full)
            self.writer.enqueue(new_event("llm.response", data, ctx=self.ctx, parent_id=self.id, attributes=attributes))
        except Exception:
            self.writer.count_error()
            logger.debug("meshlog llm.response failed", exc_info=True)

    def fail(self, exc: BaseException) -> None:
        """Write ``llm.error`` (once)."""
        if self._done:
            return
        self._done = True
        try:
            data, attributes = error_fields(failure_of(exc, self.model), duration_ms=self.elapsed_ms())
            self.writer.enqueue(new_event("llm.error", data, ctx=self.ctx, parent_id=self.id, attributes=attributes))
        except Exception:
            self.writer.count_error()
            logger.debug("meshlog llm.error failed", exc_info=True)


class StreamObserver:
    """Counts a stream's chunks and feeds them to an accumulator; finishes the call once."""

    __slots__ = ("__weakref__", "accumulator", "chunks", "finished", "first_chunk_ms", "lock", "record")

    def __init__(self, record: CallRecord, accumulator: Accumulator) -> None:
        self.record = record
        self.accumulator = accumulator
        self.chunks = 0
        self.first_chunk_ms: float | None = None
        self.finished = False
        self.lock = threading.Lock()
        with _open_lock:
            _open_streams.add(self)

    def chunk(self, chunk: Any) -> None:
        try:
            if self.first_chunk_ms is None:
                self.first_chunk_ms = self.record.elapsed_ms()
            if self.accumulator.add(chunk) is not False:
                self.chunks += 1
        except Exception:
            self.record.writer.count_error()
            logger.debug("meshlog stream chunk not understood", exc_info=True)

    def _claim(self) -> bool:
        with self.lock:
            if self.finished:
                return False
            self.finished = True
        with _open_lock:
            _open_streams.discard(self)
        return True

    def finish(self, *, abandoned: bool) -> None:
        if not self._claim():
            return

        def result() -> LlmResult:
            value = self.accumulator.result()
            value.streamed = True
            value.chunk_count = self.chunks
            value.time_to_first_chunk_ms = self.first_chunk_ms
            value.abandoned = abandoned
            return value

        self.record.respond(result)

    def abandon(self) -> None:
        self.finish(abandoned=True)

    def fail(self, exc: BaseException) -> None:
        if self._claim():
            self.record.fail(exc)


def abandon_open_streams() -> None:
    """Finish every stream still open as abandoned (at exit, before the queue is flushed)."""
    with _open_lock:
        observers = list(_open_streams)
    for observer in observers:
        observer.abandon()


def observe_iterator(inner: Iterator[Any], observer: StreamObserver) -> Iterator[Any]:
    """``inner``, passing each chunk to ``observer``; finishes it at the end, on error, or when closed early."""
    try:
        for chunk in inner:
            observer.chunk(chunk)
            yield chunk
    except GeneratorExit:
        observer.abandon()
        raise
    except BaseException as exc:
        observer.fail(exc)
        raise
    observer.finish(abandoned=False)


async def observe_async_iterator(inner: AsyncIterator[Any], observer: StreamObserver) -> AsyncIterator[Any]:
    """The async form of :func:`observe_iterator`."""
    try:
        async for chunk in inner:
            observer.chunk(chunk)
            yield chunk
    except GeneratorExit:
        observer.abandon()
        raise
    except BaseException as exc:
        observer.fail(exc)
        raise
    observer.finish(abandoned=False)


def observe_sdk_stream(stream: Any, observer: StreamObserver, *, is_async: bool) -> Any:
    """Observe an OpenAI or Anthropic SDK stream in place (the same object is returned to the caller).

    Both SDKs' streams read from ``self._iterator`` and release the connection in ``close()``: the iterator is
    replaced by an observing one, ``close`` is wrapped to finish the call as abandoned when it comes first, and a
    finalizer does the same for a stream that is dropped unread.
    """
    inner = stream._iterator
    if is_async:
        stream._iterator = observe_async_iterator(inner, observer)
        original_aclose = stream.close

        async def aclose() -> None:
            observer.abandon()
            await original_aclose()

        stream.close = aclose
    else:
        stream._iterator = observe_iterator(inner, observer)
        original_close = stream.close

        def close() -> None:
            observer.abandon()
            original_close()

        stream.close = close
    # A stream dropped unread: finish the call as abandoned and, for a sync stream, release its connection (the
    # response object, not the stream, is kept by the finalizer).
    response = None if is_async else getattr(stream, "response", None)
    weakref.finalize(stream, _dropped, observer, response)
    return stream


def _dropped(observer: StreamObserver, response: Any) -> None:
    observer.abandon()
    close = getattr(response, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            logger.debug("closing a dropped stream's response failed", exc_info=True)


def new_observer(record: CallRecord, accumulator: Accumulator) -> StreamObserver:
    return StreamObserver(record, accumulator)


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


# -- wrapping a client method ---------------------------------------------------------------------------------------
_SENTINELS: Final = frozenset({"NotGiven", "Omit", "NotGivenOr"})


def given(value: Any) -> bool:
    """False for None and for the SDKs' "not given" sentinels."""
    return value is not None and type(value).__name__ not in _SENTINELS


def simple_params(kwargs: dict[str, Any], skip: frozenset[str]) -> dict[str, Any]:
    """The request parameters worth recording: scalars and short lists of scalars, not the prompt or the tools
    (``response_format`` is recorded by its ``type``)."""
    params: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in skip or key.startswith("extra_") or not given(value):
            continue
        if isinstance(value, (str, int, float, bool)):
            params[key] = value
        elif isinstance(value, (list, tuple)) and len(value) <= 16 and all(isinstance(v, str) for v in value):
            params[key] = list(value)
        elif isinstance(value, dict) and isinstance(value.get("type"), str):
            params[key] = value["type"]
    return params


class Hooks(Protocol):
    """What a provider module gives :func:`wrap_method`."""

    def request(self, kwargs: dict[str, Any]) -> LlmRequest: ...

    def result(self, response: Any) -> LlmResult: ...

    def accumulator(self) -> Accumulator: ...

    def is_stream(self, response: Any) -> bool: ...


def wrap_method(owner: Any, name: str, hooks: Hooks, *, is_async: bool) -> None:
    """Replace ``owner.name`` (a bound SDK method) by one that records each call; idempotent."""
    original = getattr(owner, name)
    if getattr(original, "__meshlog_wrapped__", False):
        return

    if is_async:

        async def traced_async(*args: Any, **kwargs: Any) -> Any:
            record = CallRecord.start(lambda: hooks.request(kwargs))
            if record is None:
                return await original(*args, **kwargs)
            try:
                response = await original(*args, **kwargs)
            except BaseException as exc:
                record.fail(exc)
                raise
            _finish(record, hooks, response, is_async=True)
            return response

        wrapper: Any = traced_async
    else:

        def traced_sync(*args: Any, **kwargs: Any) -> Any:
            record = CallRecord.start(lambda: hooks.request(kwargs))
            if record is None:
                return original(*args, **kwargs)
            try:
                response = original(*args, **kwargs)
            except BaseException as exc:
                record.fail(exc)
                raise
            _finish(record, hooks, response, is_async=False)
            return response

        wrapper = traced_sync
    try:
        wrapper.__wrapped__ = original
        wrapper.__doc__ = getattr(original, "__doc__", None)
        wrapper.__name__ = name
    except (AttributeError, TypeError):  # pragma: no cover - odd callables
        pass
    wrapper.__meshlog_wrapped__ = True
    setattr(owner, name, wrapper)


def _finish(record: CallRecord, hooks: Hooks, response: Any, *, is_async: bool) -> None:
    try:
        if hooks.is_stream(response):
            observe_sdk_stream(response, StreamObserver(record, hooks.accumulator()), is_async=is_async)
        else:
            record.respond(lambda: hooks.result(response))
    except Exception:
        record.writer.count_error()
        logger.debug("meshlog could not observe a response", exc_info=True)


def usage_into(result: LlmResult, usage: Any) -> None:
    """Token counts from an OpenAI-style usage object (Chat Completions, Responses, LiteLLM)."""
    if usage is None:
        return

    def read(obj: Any, *names: str) -> int | None:
        for n in names:
            value = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    def part(obj: Any, *names: str) -> Any:
        for n in names:
            value = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
            if value is not None:
                return value
        return None

    result.input_tokens = read(usage, "prompt_tokens", "input_tokens")
    result.output_tokens = read(usage, "completion_tokens", "output_tokens")
    result.total_tokens = read(usage, "total_tokens")
    details = part(usage, "prompt_tokens_details", "input_tokens_details")
    if details is not None:
        result.cached_input_tokens = read(details, "cached_tokens")
    out = part(usage, "completion_tokens_details", "output_tokens_details")
    if out is not None:
        result.reasoning_tokens = read(out, "reasoning_tokens")
