"""One LLM call as events: ``llm.call`` before it, ``llm.response`` or ``llm.error`` after it, and the stream in
between observed chunk by chunk.

A stream is finished exactly once: when the caller reads it to the end (``llm.response``), when reading it fails
(``llm.error``), or when the caller stops early, by closing it, by dropping it (its iterator is finalized), or by
exiting the interpreter: then ``llm.response`` says ``abandoned: true`` with what had been received.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from meshlog.events import NewEvent, uuid7
from meshlog.tracing._context import (
    TraceContext,
    active_writer,
    context_for_call,
    full_payload,
    new_event,
    redacted,
)
from meshlog.tracing._writer import PendingEvent, Writer
from meshlog.tracing.semconv import (
    LlmFailure,
    LlmRequest,
    LlmResult,
    call_fields,
    error_fields,
    error_kind,
    response_fields,
)

__all__ = [
    "Accumulator",
    "CallEvent",
    "CallRecord",
    "ErrorEvent",
    "ResponseEvent",
    "StreamObserver",
    "abandon_open_streams",
    "failure_of",
    "snapshot",
]

logger = logging.getLogger("meshlog.tracing")
_BUILDING = threading.RLock()
"""Held while a call's request summary or ids are made, which happens once per call, normally on the writer thread."""


def _new_lock_after_fork() -> None:
    global _BUILDING
    _BUILDING = threading.RLock()


os.register_at_fork(after_in_child=_new_lock_after_fork)

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


def snapshot(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A call's arguments as they are when it is made, for the writer thread to read later: lists (the messages,
    the tools, the input items) are copied, and so are the dicts in them (a message's role and content), because
    an agent commonly appends to its message list, or rewrites a message, as soon as the answer is back. Deeper
    values are taken as they are (treated as values, like the response): about 0.1 µs per message."""
    return {key: _copy_items(value) if type(value) is list else value for key, value in kwargs.items()}


def _copy_items(items: list[Any]) -> list[Any]:
    return [item.copy() if type(item) is dict else item for item in items]


class CallRecord:
    """One traced call. :meth:`start` returns None when tracing is off (then the caller just calls).

    The caller's thread only takes what the events need: the call's arguments (:func:`snapshot`), the client's
    response object (or a stream's accumulator), the times and the trace context. The writer thread summarizes
    the request and the answer, applies the redaction hook and builds the events from them (:class:`CallEvent`,
    :class:`ResponseEvent`, :class:`ErrorEvent`), ids included: nothing in the caller's code refers to them, and
    an id made in the caller's thread, right after a network round trip, cost 15-30 µs of the call's latency.
    """

    __slots__ = (
        "_done",
        "_request",
        "broken",
        "build",
        "ctx",
        "full",
        "id",
        "kwargs",
        "started",
        "started_at",
        "writer",
    )

    def __init__(
        self,
        writer: Writer,
        ctx: TraceContext,
        build: Callable[[dict[str, Any]], LlmRequest],
        kwargs: dict[str, Any],
        full: bool,
    ) -> None:
        self.writer = writer
        self.ctx = ctx
        self.build = build
        self.kwargs = kwargs
        self.full = full
        self.id: str | None = None  # made by the first event built that needs it (call_id)
        self.started_at = time.time()
        self.started = time.perf_counter()
        self.broken = False  # set by the writer thread when llm.call could not be built: its answer is left out too
        self._done = False
        self._request: LlmRequest | None = None

    @classmethod
    def start(cls, build: Callable[[dict[str, Any]], LlmRequest], kwargs: Mapping[str, Any]) -> CallRecord | None:
        """Queue ``llm.call`` for the request ``build(kwargs)`` describes (called on the writer thread); None when
        tracing is off or on any error."""
        writer = active_writer()
        if writer is None:
            return None
        try:
            ctx = context_for_call()
            record = cls(writer, ctx, build, snapshot(kwargs), full_payload(ctx))
            writer.enqueue(CallEvent(record))
            return record
        except Exception:
            writer.count_error()
            logger.debug("meshlog llm.call failed", exc_info=True)
            return None

    def request(self) -> LlmRequest:
        """The request, summarized (and its full payloads redacted) once, on the writer thread (or the thread
        that spools the queue at exit while the writer thread still runs: hence the lock)."""
        with _BUILDING:
            request = self._request
            if request is None:
                request = self.build(self.kwargs)
                if self.full:
                    request.system = redacted("system", request.system)
                    request.prompt = redacted("prompt", request.prompt)
                self._request = request
                self.kwargs = {}  # read: do not keep the prompt alive as long as a stream is open
            return request

    def forget_prompt(self) -> None:
        """Once ``llm.call`` is built, its answer needs only the model: drop the texts (a stream's record lives as
        long as the stream)."""
        request = self._request
        if request is not None:
            request.system = request.prompt = None

    def call_id(self) -> str:
        """The id of ``llm.call``, made when the first of the call's events is built (on the writer thread, or on
        the thread that spools the queue at exit: hence the lock), the same for all of them."""
        with _BUILDING:
            if self.id is None:
                self.id = uuid7()
            return self.id

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def respond(self, result: LlmResult | Callable[[], LlmResult]) -> None:
        """Queue ``llm.response`` (once); a callable ``result`` is called on the writer thread."""
        if self._done:
            return
        self._done = True
        try:
            self.writer.enqueue(ResponseEvent(self, result, self.elapsed_ms()))
        except Exception:
            self.writer.count_error()
            logger.debug("meshlog llm.response failed", exc_info=True)

    def fail(self, exc: BaseException) -> None:
        """Queue ``llm.error`` (once)."""
        if self._done:
            return
        self._done = True
        try:
            # Read now: the exception (and what its traceback keeps alive) is not held for the writer thread.
            self.writer.enqueue(ErrorEvent(self, failure_of(exc, None), self.elapsed_ms()))
        except Exception:
            self.writer.count_error()
            logger.debug("meshlog llm.error failed", exc_info=True)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class CallEvent(PendingEvent):
    """``llm.call``, built on the writer thread."""

    __slots__ = ("record",)

    def __init__(self, record: CallRecord) -> None:
        self.record = record

    def build(self) -> NewEvent:
        record = self.record
        try:
            data, attributes = call_fields(record.request(), full=record.full)
        except Exception:
            record.broken = True
            raise
        record.forget_prompt()
        ctx = record.ctx
        return new_event(
            "llm.call",
            data,
            ctx=ctx,
            parent_id=ctx.parent_id,
            attributes=attributes,
            event_id=record.call_id(),
            occurred_at=_utc(record.started_at),
        )


class ResponseEvent(PendingEvent):
    """``llm.response``, built on the writer thread from the client's response (or a stream's accumulator)."""

    __slots__ = ("duration_ms", "occurred_at", "record", "result")

    def __init__(self, record: CallRecord, result: LlmResult | Callable[[], LlmResult], duration_ms: float) -> None:
        self.record = record
        self.result = result
        self.duration_ms = duration_ms
        self.occurred_at = time.time()

    def build(self) -> NewEvent | None:
        record = self.record
        if record.broken:
            return None
        value = self.result() if callable(self.result) else self.result
        if record.full:
            value.response = redacted("response", value.response)
        data, attributes = response_fields(value, duration_ms=self.duration_ms, full=record.full)
        return new_event(
            "llm.response",
            data,
            ctx=record.ctx,
            parent_id=record.call_id(),
            attributes=attributes,
            occurred_at=_utc(self.occurred_at),
        )


class ErrorEvent(PendingEvent):
    """``llm.error``, built on the writer thread."""

    __slots__ = ("duration_ms", "failure", "occurred_at", "record")

    def __init__(self, record: CallRecord, failure: LlmFailure, duration_ms: float) -> None:
        self.record = record
        self.failure = failure
        self.duration_ms = duration_ms
        self.occurred_at = time.time()

    def build(self) -> NewEvent | None:
        record = self.record
        if record.broken:
            return None
        failure = self.failure
        failure.model = record.request().model
        data, attributes = error_fields(failure, duration_ms=self.duration_ms)
        return new_event(
            "llm.error",
            data,
            ctx=record.ctx,
            parent_id=record.call_id(),
            attributes=attributes,
            occurred_at=_utc(self.occurred_at),
        )


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

        self.record.respond(
            functools.partial(_stream_result, self.accumulator, self.chunks, self.first_chunk_ms, abandoned)
        )

    def abandon(self) -> None:
        self.finish(abandoned=True)

    def fail(self, exc: BaseException) -> None:
        if self._claim():
            self.record.fail(exc)


def _stream_result(accumulator: Accumulator, chunks: int, first_chunk_ms: float | None, abandoned: bool) -> LlmResult:
    value = accumulator.result()
    value.streamed = True
    value.chunk_count = chunks
    value.time_to_first_chunk_ms = first_chunk_ms
    value.abandoned = abandoned
    return value


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
            record = CallRecord.start(hooks.request, kwargs)
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
            record = CallRecord.start(hooks.request, kwargs)
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
            record.respond(functools.partial(hooks.result, response))
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
