"""Trace context, configuration and generic spans.

The context (trace, task and agent ids, the current span's event id, whether full payloads are kept) lives in a
:class:`contextvars.ContextVar`: asyncio tasks inherit it, and, once a trace is entered, so do threads started
inside (``threading.Thread.start`` and ``ThreadPoolExecutor.submit`` are wrapped to run the new work in a copy of
the caller's context; outside a trace they behave exactly as before).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import concurrent.futures.thread
import contextvars
import functools
import inspect
import logging
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast, overload

from meshlog.events import NewEvent, uuid7
from meshlog.tracing._writer import TracingStats, Writer

if TYPE_CHECKING:
    from meshlog.log import EventLog
    from meshlog.spool import Spool

__all__ = [
    "Redactor",
    "Span",
    "TraceContext",
    "configure",
    "current",
    "flush",
    "new_event",
    "shutdown",
    "span",
    "stats",
    "trace",
    "traced",
]

logger = logging.getLogger("meshlog.tracing")

P = ParamSpec("P")
R = TypeVar("R")

Redactor = Callable[[str, Any], Any]
"""``redact(kind, value) -> value``: called on every full payload (``kind`` is ``system``, ``prompt``,
``response``, ``tool.args`` or ``tool.result``) before it is stored; return the value to keep (or None)."""

KEY_PREFIX: Final = "trace:"
"""Idempotency keys of the events meshlog's tracing writes: ``trace:<event id>``."""
_OFF: Final = frozenset({"0", "off", "false", "no"})


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The correlation that events written inside a :func:`trace` or :func:`span` carry."""

    trace_id: str | None = None
    task_id: str | None = None
    agent_id: str | None = None
    parent_id: str | None = None
    """The event that events written here attach to (the enclosing span's start)."""
    log_full_payload: bool | None = None
    metadata: Mapping[str, Any] | None = None
    """Tags added to the metadata of every event written here."""


_CURRENT: Final[contextvars.ContextVar[TraceContext | None]] = contextvars.ContextVar("meshlog_trace", default=None)


class _Settings:
    """The process-wide configuration: the writer and the defaults (see :func:`configure`)."""

    def __init__(self) -> None:
        self.writer: Writer | None = None
        self.resolved = False
        self.agent_id: str | None = None
        self.task_id: str | None = None
        self.log_full_payload = False
        self.redact: Redactor | None = None
        self.lock = threading.RLock()
        self.atexit_registered = False
        self.retired: list[Writer] = []


_settings = _Settings()


def configure(
    url: str | None = None,
    *,
    log: EventLog | None = None,
    enabled: bool = True,
    tenant: str | None = None,
    agent_id: str | None = None,
    task_id: str | None = None,
    log_full_payload: bool = False,
    redact: Redactor | None = None,
    spool: str | os.PathLike[str] | Spool | bool | None = None,
    spool_max_bytes: int | None = None,
    max_queue: int = 100_000,
    batch_size: int = 200,
    probe_interval: float = 1.0,
    exit_timeout: float = 5.0,
) -> None:
    """Where traced events go, and the defaults of every trace.

    ``url`` is a store URL (``sqlite:///…``, ``postgresql://…``, ``http://…`` for a meshlog server); ``log`` an
    open :class:`~meshlog.EventLog` to write to instead. Without either, the URL comes from ``$MESHLOG_URL``
    (then ``$DATABASE_URL``, ``$PG_PRIMARY_URL``); with none of them, or ``enabled=False`` (or
    ``MESHLOG_TRACING=off``), tracing is off and every wrapper calls straight through.

    ``agent_id`` and ``task_id`` are the defaults of events written outside any :func:`trace`.
    ``log_full_payload`` keeps prompts, responses and tool arguments (after ``redact``). ``spool`` is the
    durable spool for when the store cannot be reached (default ``$MESHLOG_SPOOL``, else
    ``~/.cache/meshlog/spool.db``; ``False`` for none). ``max_queue`` bounds the in-memory queue, ``batch_size``
    the events per write, ``exit_timeout`` the seconds spent writing at interpreter exit.

    Calling it again replaces the configuration; the previous writer is flushed and closed first.
    """
    with _settings.lock:
        old, _settings.writer = _settings.writer, None
        if old is not None:
            old.close()
        _settings.agent_id = agent_id
        _settings.task_id = task_id
        _settings.log_full_payload = log_full_payload
        _settings.redact = redact
        _settings.resolved = True
        if not enabled:
            return
        if log is None and url is None:
            url = _url_from_environment()
            if url is None:
                return
        _settings.writer = Writer(
            url,
            log=log,
            tenant=tenant,
            spool=spool,
            spool_max_bytes=spool_max_bytes,
            max_queue=max_queue,
            batch_size=batch_size,
            probe_interval=probe_interval,
            exit_timeout=exit_timeout,
        )
        _register_exit()
        _install_thread_propagation()


def _url_from_environment() -> str | None:
    if os.environ.get("MESHLOG_TRACING", "").strip().lower() in _OFF:
        return None
    for name in ("MESHLOG_URL", "DATABASE_URL", "PG_PRIMARY_URL"):
        value = os.environ.get(name)
        if value:
            return value
    return None


def active_writer() -> Writer | None:
    """The writer events go to, or None when tracing is off (resolved from the environment on first use)."""
    writer = _settings.writer
    if writer is not None or _settings.resolved:
        return writer
    with _settings.lock:
        if not _settings.resolved:
            try:
                url = _url_from_environment()
                if url is not None:
                    _settings.writer = Writer(url)
                    _register_exit()
                    _install_thread_propagation()
            except Exception:
                logger.warning("meshlog tracing is off: bad configuration", exc_info=True)
            _settings.resolved = True
    return _settings.writer


def flush(timeout: float | None = 10.0) -> bool:
    """Wait until every event traced so far is written (or spooled); False on timeout or when tracing is off."""
    writer = _settings.writer
    return writer.flush(timeout) if writer is not None else False


def shutdown(timeout: float | None = None) -> None:
    """Finish open streams, write or spool what is queued (for at most ``timeout`` seconds) and turn tracing
    off. Runs at interpreter exit by itself."""
    from meshlog.tracing import _llm

    _llm.abandon_open_streams()
    with _settings.lock:
        writer, _settings.writer = _settings.writer, None
        _settings.resolved = True
    if writer is not None:
        writer.close(timeout)


def stats() -> TracingStats:
    """Counters of the background writer: enqueued, written, spooled, delivered, dropped, spool_full, rejected,
    errors, queue_depth, spool_pending (all zero when tracing is off)."""
    writer = _settings.writer
    if writer is None:
        return TracingStats(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return writer.stats()


def _register_exit() -> None:
    if not _settings.atexit_registered:
        _settings.atexit_registered = True
        atexit.register(_at_exit)
        _register_metrics()


def _at_exit() -> None:
    try:
        shutdown()
    except Exception:
        logger.exception("meshlog tracing shutdown failed")


def _register_metrics() -> None:
    """Expose :func:`stats` as Prometheus metrics when prometheus-client is installed."""
    try:
        from meshlog.tracing._metrics import register

        register(stats)
    except Exception:
        logger.debug("meshlog tracing metrics not registered", exc_info=True)


# -- context -------------------------------------------------------------------------------------------------------
def current() -> TraceContext | None:
    """The trace context of the running code, or None outside any :func:`trace` or :func:`span`."""
    return _CURRENT.get()


def full_payload(ctx: TraceContext | None) -> bool:
    if ctx is not None and ctx.log_full_payload is not None:
        return ctx.log_full_payload
    return _settings.log_full_payload


def redacted(kind: str, value: Any) -> Any:
    """A full payload through the configured redaction hook (None when the hook fails)."""
    hook = _settings.redact
    if hook is None or value is None:
        return value
    try:
        return hook(kind, value)
    except Exception:
        writer = _settings.writer
        if writer is not None:
            writer.count_error()
        logger.warning("meshlog tracing redact hook failed; the %s payload was not kept", kind, exc_info=True)
        return None


def new_trace_id() -> str:
    """A new trace id: 32 hex digits, like OpenTelemetry's."""
    return uuid.uuid4().hex


def new_event(
    type: str,
    data: Mapping[str, Any],
    *,
    ctx: TraceContext | None,
    parent_id: str | None,
    attributes: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> NewEvent:
    """A tracing event with its id and idempotency key fixed now (so every attempt to write it is the same);
    ``event_id`` and ``occurred_at`` default to a new id and the current time."""
    event_id = event_id or uuid7()
    metadata: dict[str, Any] | None = None
    if attributes:
        metadata = {"attributes": dict(attributes)}
    if ctx is not None and ctx.metadata:
        metadata = {**ctx.metadata, **(metadata or {})}
    if ctx is None:
        trace_id, task_id, agent_id = None, _settings.task_id, _settings.agent_id
    else:
        trace_id, task_id, agent_id = ctx.trace_id, ctx.task_id, ctx.agent_id
    return NewEvent(
        type=type,
        data=data,
        metadata=metadata,
        trace_id=trace_id,
        task_id=task_id,
        agent_id=agent_id,
        parent_id=parent_id,
        # The parent may be written in a later batch, spooled, or refused: never let that refuse the child.
        external_parent=parent_id is not None,
        idempotency_key=KEY_PREFIX + event_id,
        occurred_at=occurred_at or datetime.now(UTC),
        id=event_id,
    )


def context_for_call() -> TraceContext:
    """The context an LLM call or tool call outside any trace gets: a trace of its own."""
    ctx = _CURRENT.get()
    if ctx is not None and ctx.trace_id is not None:
        return ctx
    base = ctx or TraceContext(task_id=_settings.task_id, agent_id=_settings.agent_id)
    return replace(base, trace_id=new_trace_id())


class trace:
    """Correlate everything inside: ``with meshlog.trace(trace_id=…, task_id=…, agent_id=…):``, ``async with``,
    or ``@meshlog.trace(agent_id=…)`` on a function (each call a new trace unless ``trace_id`` is given).

    Unset fields are inherited from the enclosing trace (a new ``trace_id`` when there is none), then from
    :func:`configure`'s defaults. Writes no event itself; spans and LLM calls inside carry its ids.
    """

    def __init__(
        self,
        trace_id: str | None = None,
        *,
        task_id: str | None = None,
        agent_id: str | None = None,
        log_full_payload: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.trace_id = trace_id
        self.task_id = task_id
        self.agent_id = agent_id
        self.log_full_payload = log_full_payload
        self.metadata = metadata
        self._tokens: list[contextvars.Token[TraceContext | None]] = []
        self.context: TraceContext | None = None

    def _make(self) -> TraceContext:
        outer = _CURRENT.get()
        if outer is None:
            outer = TraceContext(task_id=_settings.task_id, agent_id=_settings.agent_id)
        metadata = outer.metadata
        if self.metadata:
            metadata = {**(metadata or {}), **self.metadata}
        return TraceContext(
            trace_id=self.trace_id or outer.trace_id or new_trace_id(),
            task_id=self.task_id if self.task_id is not None else outer.task_id,
            agent_id=self.agent_id if self.agent_id is not None else outer.agent_id,
            parent_id=outer.parent_id,
            log_full_payload=self.log_full_payload if self.log_full_payload is not None else outer.log_full_payload,
            metadata=metadata,
        )

    def __enter__(self) -> TraceContext:
        _install_thread_propagation()
        self.context = self._make()
        self._tokens.append(_CURRENT.set(self.context))
        return self.context

    def __exit__(self, *exc_info: object) -> None:
        _CURRENT.reset(self._tokens.pop())

    async def __aenter__(self) -> TraceContext:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)

    def _copy(self) -> trace:
        return trace(
            self.trace_id,
            task_id=self.task_id,
            agent_id=self.agent_id,
            log_full_payload=self.log_full_payload,
            metadata=self.metadata,
        )

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(fn):
            async_fn = cast("Callable[P, Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with self._copy():
                    return await async_fn(*args, **kwargs)

            return cast("Callable[P, R]", run_async)

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._copy():
                return fn(*args, **kwargs)

        return run


# -- spans ------------------------------------------------------------------------------------------------------------
class Span:
    """A named step (``span.start`` … ``span.end``) or a tool call (``tool.call`` … ``tool.result``).

    Use it with ``with meshlog.span("plan") as s:`` (or ``async with``); ``s.set(key=value)`` adds fields to the
    closing event, ``s.id`` is the opening event's id (None when tracing is off). An exception leaving the block
    is recorded (``ok: false``, ``error``, ``error_type``) and re-raised unchanged.
    """

    def __init__(
        self,
        name: str,
        *,
        tool: bool = False,
        args: Mapping[str, Any] | None = None,
        call_id: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.tool = tool
        self.args = args
        self.call_id = call_id
        self.data = dict(data or {})
        self.result: Any = None
        self.id: str | None = None
        self._end: dict[str, Any] = {}
        self._writer: Writer | None = None
        self._ctx: TraceContext | None = None
        self._token: contextvars.Token[TraceContext | None] | None = None
        self._started = 0.0

    def set(self, **fields: Any) -> None:
        """Add fields to the closing event's data."""
        self._end.update(fields)

    def __enter__(self) -> Span:
        writer = active_writer()
        if writer is None:
            return self
        try:
            _install_thread_propagation()
            ctx = context_for_call()
            full = full_payload(ctx)
            self.id = uuid7()
            if self.tool:
                data: dict[str, Any] = {"tool": self.name, **self.data}
                if self.call_id is not None:
                    data["call_id"] = self.call_id
                if full and self.args is not None:
                    args = redacted("tool.args", _json_args(self.args))
                    if isinstance(args, Mapping):
                        data["args"] = dict(args)
                kind = "tool.call"
            else:
                data = {"name": self.name, **self.data}
                kind = "span.start"
            from meshlog.tracing.semconv import json_safe

            event = new_event(kind, json_safe(data), ctx=ctx, parent_id=ctx.parent_id, event_id=self.id)
            self._writer = writer
            self._ctx = ctx
            self._started = time.perf_counter()
            self._token = _CURRENT.set(replace(ctx, parent_id=self.id))
            writer.enqueue(event)
        except Exception:
            self.id = None
            self._writer = None
            writer.count_error()
            logger.debug("meshlog span start failed", exc_info=True)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        writer = self._writer
        if writer is None:
            return
        try:
            if self._token is not None:
                _CURRENT.reset(self._token)
                self._token = None
        except ValueError:  # exited in another context (a generator finished elsewhere): leave it
            pass
        try:
            duration = round((time.perf_counter() - self._started) * 1000)
            ok = exc is None
            data: dict[str, Any]
            if self.tool:
                data = {"tool": self.name, "ok": ok, "duration_ms": duration}
                if self.call_id is not None:
                    data["call_id"] = self.call_id
                if ok and self.result is not None and full_payload(self._ctx):
                    kept = redacted("tool.result", self.result)
                    if kept is not None:
                        data["result"] = kept
                kind = "tool.result"
            else:
                data = {"name": self.name, "ok": ok, "duration_ms": duration}
                kind = "span.end"
            if exc is not None:
                data["error"] = str(exc)[:2000] or type(exc).__name__
                data["error_type"] = _qualified(type(exc))
            data.update(self._end)
            from meshlog.tracing.semconv import json_safe

            assert self.id is not None
            writer.enqueue(new_event(kind, json_safe(data), ctx=self._ctx, parent_id=self.id))
        except Exception:
            writer.count_error()
            logger.debug("meshlog span end failed", exc_info=True)
        finally:
            self._writer = None

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def span(name: str, *, data: Mapping[str, Any] | None = None) -> Span:
    """A named step of an agent: ``with meshlog.span("plan"):`` writes ``span.start`` and ``span.end`` (with
    ``duration_ms``, ``ok`` and the error if one left the block); events inside are its children."""
    return Span(name, data=data)


def _qualified(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"


def _json_args(args: Mapping[str, Any]) -> dict[str, Any]:
    from meshlog.tracing.semconv import json_safe

    value = json_safe(dict(args))
    return value if isinstance(value, dict) else {}


@overload
def traced(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def traced(
    fn: None = None, /, *, name: str | None = None, tool: bool = False
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def traced(
    fn: Callable[P, R] | None = None, /, *, name: str | None = None, tool: bool = False
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Trace every call of a function (sync or async): ``@meshlog.traced`` writes ``span.start``/``span.end``;
    ``@meshlog.traced(tool=True)`` writes ``tool.call``/``tool.result`` (arguments and result kept only with full
    payloads). Returns what the function returns and raises what it raises."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        label = name or func.__qualname__
        signature = _signature(func) if tool else None

        def make_span(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Span:
            bound: Mapping[str, Any] | None = None
            if signature is not None and active_writer() is not None and full_payload(_CURRENT.get()):
                try:
                    b = signature.bind_partial(*args, **kwargs)
                    bound = dict(b.arguments)
                except TypeError:
                    bound = None
            return Span(label, tool=tool, args=bound)

        if inspect.iscoroutinefunction(func):
            async_func = cast("Callable[P, Awaitable[Any]]", func)

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                if active_writer() is None:
                    return await async_func(*args, **kwargs)
                with make_span(args, kwargs) as s:
                    result = await async_func(*args, **kwargs)
                    s.result = result
                    return result

            return cast("Callable[P, R]", run_async)

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            if active_writer() is None:
                return func(*args, **kwargs)
            with make_span(args, kwargs) as s:
                result = func(*args, **kwargs)
                s.result = result
                return result

        return run

    if fn is not None:
        return decorate(fn)
    return decorate


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


# -- threads ---------------------------------------------------------------------------------------------------------
_propagation_installed = False
_pool_worker: Any = getattr(concurrent.futures.thread, "_worker", None)
_propagation_lock = threading.Lock()


def _is_installed() -> bool:
    return _propagation_installed


def _install_thread_propagation() -> None:
    """Make threads started (and pool work submitted) inside a trace run in a copy of the caller's context.

    Outside a trace nothing changes: the wrappers only act when a trace context is set.
    """
    global _propagation_installed
    if _propagation_installed:
        return
    with _propagation_lock:
        if _is_installed():
            return
        original_start = threading.Thread.start
        original_submit: Any = concurrent.futures.ThreadPoolExecutor.submit

        def start(self: threading.Thread) -> None:
            # Pool workers outlive the work that started them: their work items carry the context instead.
            if _CURRENT.get() is not None and getattr(self, "_target", None) is not _pool_worker:
                context = contextvars.copy_context()
                run = self.run
                self.run = lambda: context.run(run)  # type: ignore[method-assign]
            original_start(self)

        def submit(
            self: concurrent.futures.ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
        ) -> concurrent.futures.Future[Any]:
            if _CURRENT.get() is not None:
                context = contextvars.copy_context()
                future: concurrent.futures.Future[Any] = original_submit(self, context.run, fn, *args, **kwargs)
                return future
            plain: concurrent.futures.Future[Any] = original_submit(self, fn, *args, **kwargs)
            return plain

        functools.update_wrapper(start, original_start)
        functools.update_wrapper(submit, original_submit)
        threading.Thread.start = start  # type: ignore[method-assign]
        setattr(concurrent.futures.ThreadPoolExecutor, "submit", submit)  # noqa: B010 - keep mypy out of it
        _propagation_installed = True
