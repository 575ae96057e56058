"""The background writer: the traced code only enqueues; one thread batches the events into the store.

Why each part is there:

- **The caller only enqueues.** :meth:`Writer.enqueue` appends to a bounded deque and wakes the thread: no I/O,
  no lock on the common path, never an exception. A full queue refuses the event and counts it (``dropped``),
  with a warning in the log: nothing is lost silently.
- **Ids are fixed once, before the first attempt to write an event** (by :func:`meshlog.tracing._context.new_event`,
  in the caller's thread for a queued :class:`~meshlog.events.NewEvent`, here for a :class:`PendingEvent`), and
  the idempotency key is made from the id (``trace:<id>``), so every later attempt (a retry, a delivery from the
  spool, a resend after a crash) carries the same ones and the store writes each event at most once.
- **An event may be built here.** A :class:`PendingEvent` is queued with its times and trace context fixed and
  only the raw values the caller had (an LLM call's arguments, the client's response object); the thread builds
  the :class:`~meshlog.events.NewEvent` from them, once, just before writing it, so the traced call pays for taking
  references, not for summarizing a request or a response nor for making ids. A pending event that fails to build
  is counted in ``errors`` and left out.
- **Batches.** The thread writes what is queued with ``emit_batch`` (at most ``batch_size`` events at a time),
  in queue order, so a parent span's event is always written before, or in the same batch ahead of, its
  children's. A batch the store refuses for good (a bad event) is written event by event, so one bad event does
  not sink the others (each refused one is counted as ``rejected``).
- **Lingering.** Once woken, the thread waits up to ``linger`` seconds (or until ``batch_size`` events are
  queued, or a flush asks) before it writes: under a steady trickle of calls it then writes a few large batches
  per second instead of one per call, and competes far less for the interpreter with the agent's own threads.
- **The spool.** When the store cannot be reached (a server down, a database restarting), the batch goes to the
  durable local :class:`~meshlog.spool.Spool` (a SQLite file, fsynced). While the spool holds anything, new
  batches go behind it, so the store later receives everything in the original order; every ``probe_interval``
  seconds the thread tries to deliver the spool. A full spool refuses the batch and counts it (``spool_full``).
- **Exit.** At interpreter exit the queue is written, for at most ``exit_timeout`` seconds; whatever is still
  queued then goes to the spool, delivered by the next process that traces to the same spool (or by
  ``meshlog spool flush`` for an http:// store).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from meshlog.errors import MeshlogError
from meshlog.events import NewEvent

if TYPE_CHECKING:
    from meshlog.log import EventLog
    from meshlog.spool import Spool, SpoolEntry

__all__ = ["DEFAULT_SPOOL", "PendingEvent", "TracingStats", "Writer", "decode_events", "encode_events"]

logger = logging.getLogger("meshlog.tracing")

DEFAULT_SPOOL: Final = "~/.cache/meshlog/spool.db"
"""The spool file when none is configured and ``$MESHLOG_SPOOL`` is unset (the CLI's spool)."""
_WARN_EVERY: Final = 10.0


@dataclass(frozen=True, slots=True)
class TracingStats:
    """What the background writer did since it started (see :func:`meshlog.tracing.stats`)."""

    enqueued: int
    """Events accepted into the queue."""
    written: int
    """Events the store acknowledged (directly or from the spool)."""
    spooled: int
    """Events put in the spool because the store could not be reached."""
    delivered: int
    """Events delivered from the spool (also counted in ``written``)."""
    dropped: int
    """Events refused because the queue was full (or the writer closed)."""
    spool_full: int
    """Events lost because the store was unreachable and the spool was full."""
    rejected: int
    """Events the store refused for good (invalid: see the log for why)."""
    errors: int
    """Errors inside meshlog's tracing that were caught (never raised into the traced code)."""
    queue_depth: int
    """Events waiting in the queue now."""
    spool_pending: int
    """Events waiting in the spool now."""

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class PendingEvent:
    """An event the writer thread builds, from values the caller captured, just before it is written."""

    __slots__ = ()

    def build(self) -> NewEvent | None:
        """The event, with the id fixed when it was queued; None to write nothing."""
        raise NotImplementedError


class _Counters:
    """Counters changed only by the writer thread (and, for ``dropped``/``errors``, under a lock)."""

    def __init__(self) -> None:
        self.written = self.spooled = self.delivered = self.dropped = 0
        self.spool_full = self.rejected = self.errors = self.processed = 0
        self.lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


class Writer:
    """Writes queued events to the store at ``url`` (or to ``log``) from a background thread.

    ``spool`` is the spool file (default ``$MESHLOG_SPOOL``, else ``~/.cache/meshlog/spool.db``; opened only when
    first needed), a :class:`~meshlog.spool.Spool`, or ``False`` for none (then an unreachable store's events are
    counted as ``spool_full`` and lost). See the module's docstring for the rest.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        log: EventLog | None = None,
        tenant: str | None = None,
        spool: str | os.PathLike[str] | Spool | bool | None = None,
        spool_max_bytes: int | None = None,
        max_queue: int = 100_000,
        batch_size: int = 200,
        linger: float = 0.05,
        probe_interval: float = 1.0,
        exit_timeout: float = 5.0,
        http_retries: int = 1,
        http_timeout: float = 10.0,
    ) -> None:
        if log is None and not url:
            raise ValueError("a Writer needs a store URL or an event log")
        self.url = url
        self.tenant = tenant
        self._log = log
        self._owns_log = log is None
        self.max_queue = max_queue
        self.batch_size = max(1, batch_size)
        self.linger = max(0.0, linger)
        self._hurry = threading.Event()
        self.probe_interval = probe_interval
        self.exit_timeout = exit_timeout
        self.http_retries = http_retries
        self.http_timeout = http_timeout
        self._spool_setting = spool
        self._spool_max_bytes = spool_max_bytes
        self._spool: Spool | None = None
        self._spool_dirty = False
        self._spool_checked = False
        self._next_probe = 0.0
        self._queue: collections.deque[NewEvent | PendingEvent] = collections.deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._busy = False
        self._closed = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._counts = _Counters()
        self._warned: dict[str, float] = {}

    def __repr__(self) -> str:
        target = self.url or (self._log.url if self._log is not None else "?")
        return f"<meshlog.tracing.Writer {target}>"

    # -- the caller's side ----------------------------------------------------------------------------------------
    def enqueue(self, event: NewEvent | PendingEvent) -> bool:
        """Queue one event (its id and idempotency key already set, or to be built by the writer thread). Never
        raises, never blocks; False when the event was refused (queue full or writer closed), which is counted and
        logged."""
        queue = self._queue
        if len(queue) >= self.max_queue or self._closed:
            self._counts.add("dropped")
            self._warn("dropped", "meshlog tracing queue is full or closed: an event was dropped (counted)")
            return False
        queue.append(event)
        if self._thread is None:
            self._start()
        if not self._wake.is_set():
            self._wake.set()
        if len(queue) >= self.batch_size and not self._hurry.is_set():
            self._hurry.set()
        return True

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="meshlog-tracing-writer", daemon=True)
                thread.start()
                self._thread = thread

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event queued before this call is written or spooled; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._thread is None:
            return not self._queue
        self._hurry.set()
        self._wake.set()
        with self._idle:
            while self._queue or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._hurry.set()
                self._wake.set()
                self._idle.wait(0.05 if remaining is None else min(0.05, remaining))
        return True

    def stats(self) -> TracingStats:
        c = self._counts
        depth = len(self._queue)
        pending = 0
        if self._spool is not None and self._spool_dirty:
            try:
                pending = self._spool.status().pending_events
            except Exception:
                pending = -1
        return TracingStats(
            enqueued=c.processed + depth,
            written=c.written,
            spooled=c.spooled,
            delivered=c.delivered,
            dropped=c.dropped,
            spool_full=c.spool_full,
            rejected=c.rejected,
            errors=c.errors,
            queue_depth=depth,
            spool_pending=pending,
        )

    def count_error(self) -> None:
        self._counts.add("errors")

    def close(self, timeout: float | None = None) -> bool:
        """Write what is queued (for at most ``timeout`` seconds, default ``exit_timeout``), spool what is left,
        stop the thread and close the store. True when everything was written or spooled in time."""
        timeout = self.exit_timeout if timeout is None else timeout
        done = self.flush(timeout)
        self._closed = True
        self._stopping = True
        self._hurry.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, min(1.0, timeout)))
        if not done or self._queue:
            # The store did not answer in time: keep the rest on disk rather than lose it.
            rest: list[NewEvent | PendingEvent] = []
            while self._queue:
                try:
                    rest.append(self._queue.popleft())
                except IndexError:
                    break
            for start in range(0, len(rest), self.batch_size):
                items = rest[start : start + self.batch_size]
                self._counts.processed += len(items)
                batch = self._built(items)
                if batch:
                    self._spool_batch(batch, "the store did not answer before exit")
        if thread is None or not thread.is_alive():
            self._close_resources()
        return done

    # -- the writer thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self.probe_interval)
            if self.linger and self._queue and not self._stopping:
                self._hurry.wait(self.linger)
            # Cleared only now: while the thread lingers, the events queued find it set and skip signalling it
            # (an Event.set() per event, in the caller's thread). An event queued after this point is either
            # taken by the loop below or finds it clear and sets it.
            self._wake.clear()
            self._hurry.clear()
            with self._idle:
                self._busy = True
            try:
                self._check_spool_once()
                while self._queue:
                    items: list[NewEvent | PendingEvent] = []
                    queue = self._queue
                    while queue and len(items) < self.batch_size:
                        items.append(queue.popleft())
                    self._counts.processed += len(items)
                    batch = self._built(items)
                    if batch:
                        self._write(batch)
                if self._spool_dirty and time.monotonic() >= self._next_probe:
                    self._drain_spool()
            except Exception:  # pragma: no cover - a bug: counted, logged, and the thread goes on
                self._counts.add("errors")
                logger.exception("meshlog tracing writer failed")
            finally:
                with self._idle:
                    self._busy = False
                    self._idle.notify_all()
            if self._stopping and not self._queue:
                return

    def _built(self, items: list[NewEvent | PendingEvent]) -> list[NewEvent]:
        """The events of ``items``, pending ones built now (in queue order; one that fails is counted and left out)."""
        events: list[NewEvent] = []
        for item in items:
            if isinstance(item, NewEvent):
                events.append(item)
                continue
            try:
                event = item.build()
            except Exception:
                self._counts.add("errors")
                logger.debug("meshlog could not build a tracing event", exc_info=True)
                continue
            if event is not None:
                events.append(event)
        return events

    def _write(self, batch: list[NewEvent]) -> None:
        if self._spool_dirty:
            if time.monotonic() >= self._next_probe:
                self._drain_spool()
            if self._spool_dirty:
                # Behind what the spool holds, so the store receives everything in order.
                self._spool_batch(batch, "earlier events wait in the spool")
                return
        try:
            log = self._open_log()
            self._send(log, batch)
        except Exception as exc:
            self._next_probe = time.monotonic() + self.probe_interval
            self._warn("unreachable", f"meshlog store unreachable, tracing events go to the spool: {exc}")
            self._spool_batch(batch, str(exc))

    def _send(self, log: EventLog, events: Sequence[NewEvent], *, from_spool: bool = False) -> None:
        """Write ``events`` (one batch); a batch refused for good is written event by event. Raises when the store
        could not be reached (nothing of the failing batch is acknowledged then)."""
        from meshlog.spool import Spooled, is_final

        try:
            log.emit_batch(events)
        except Spooled:
            # An http:// store with a spool of its own kept them: they will be delivered by it.
            self._counts.spooled += len(events)
            return
        except MeshlogError as exc:
            if not is_final(exc):
                raise
            if len(events) == 1:
                self._counts.rejected += 1
                logger.warning("meshlog store refused a %s tracing event for good: %s", events[0].type, exc)
                return
            for event in events:
                self._send(log, [event], from_spool=from_spool)
            return
        self._counts.written += len(events)
        if from_spool:
            self._counts.delivered += len(events)

    def _open_log(self) -> EventLog:
        if self._log is None:
            assert self.url is not None
            from meshlog.log import EventLog, connect
            from meshlog.stores import parse_url

            if parse_url(self.url).kind == "http":
                from meshlog.stores.http import HttpStore

                store = HttpStore(self.url, retries=self.http_retries, timeout=self.http_timeout)
                log = EventLog(store, tenant=self.tenant or os.environ.get("MESHLOG_TENANT") or "default")
                try:
                    log.migrate()
                except BaseException:
                    log.close()
                    raise
                self._log = log
            else:
                self._log = connect(self.url, tenant=self.tenant)
        return self._log

    # -- the spool ----------------------------------------------------------------------------------------------
    def _spool_path(self) -> str | None:
        setting = self._spool_setting
        if setting is False:
            return None
        if setting is None or setting is True:
            return os.path.expanduser(os.environ.get("MESHLOG_SPOOL") or DEFAULT_SPOOL)
        if isinstance(setting, (str, os.PathLike)):
            return os.fspath(setting)
        return None

    def _open_spool(self) -> Spool | None:
        if self._spool is None:
            from meshlog.spool import DEFAULT_MAX_BYTES, Spool

            setting = self._spool_setting
            if isinstance(setting, Spool):
                self._spool = setting
            else:
                path = self._spool_path()
                if path is None:
                    return None
                self._spool = Spool(path, max_bytes=self._spool_max_bytes or DEFAULT_MAX_BYTES)
        return self._spool

    def _check_spool_once(self) -> None:
        """On the thread's first run: an existing spool file may hold events of an earlier process."""
        if self._spool_checked:
            return
        self._spool_checked = True
        try:
            from meshlog.spool import Spool

            setting = self._spool_setting
            path = self._spool_path()
            if isinstance(setting, Spool) or (path is not None and Path(path).exists()):
                spool = self._open_spool()
                self._spool_dirty = spool is not None and spool.has_pending()
        except Exception as exc:
            self._counts.add("errors")
            self._warn("spool", f"meshlog tracing cannot open its spool: {exc}")

    def _spool_batch(self, batch: list[NewEvent], reason: str) -> None:
        from meshlog.spool import SpoolFull

        try:
            spool = self._open_spool()
            if spool is None:
                self._counts.spool_full += len(batch)
                self._warn("nospool", f"meshlog tracing has no spool: {len(batch)} events lost ({reason})")
                return
            spool.put(encode_events(batch))
        except SpoolFull as exc:
            self._counts.spool_full += len(batch)
            self._warn("full", f"meshlog tracing spool is full: {len(batch)} events lost (counted): {exc}")
            return
        except Exception as exc:
            self._counts.spool_full += len(batch)
            self._counts.add("errors")
            self._warn("spoolerror", f"meshlog tracing cannot write its spool: {len(batch)} events lost: {exc}")
            return
        self._counts.spooled += len(batch)
        self._spool_dirty = True

    def _drain_spool(self) -> None:
        """Deliver the spool in order; stop at the first entry the store cannot take."""
        spool = self._spool
        if spool is None:
            self._spool_dirty = False
            return
        try:
            log = self._open_log()
        except Exception:
            self._next_probe = time.monotonic() + self.probe_interval
            return

        def send(entry: SpoolEntry) -> None:
            self._send(log, decode_events(entry.body), from_spool=True)

        try:
            report = spool.deliver(send)
        except Exception as exc:
            self._counts.add("errors")
            self._warn("spool", f"meshlog tracing cannot read its spool: {exc}")
            self._next_probe = time.monotonic() + self.probe_interval
            return
        if report.error is not None:
            self._next_probe = time.monotonic() + self.probe_interval
        else:
            self._spool_dirty = spool.has_pending()
            if not self._spool_dirty:
                logger.info("meshlog tracing spool delivered (%d entries)", report.delivered)

    def _close_resources(self) -> None:
        log, self._log = self._log, None
        if log is not None and self._owns_log:
            try:
                log.close()
            except Exception:
                logger.debug("closing the tracing store failed", exc_info=True)
        spool, self._spool = self._spool, None
        if spool is not None and not _is_spool(self._spool_setting):
            try:
                spool.close()
            except Exception:
                logger.debug("closing the tracing spool failed", exc_info=True)

    def _warn(self, key: str, message: str) -> None:
        """Log a warning at most every 10 seconds per kind (an outage must not flood the log)."""
        now = time.monotonic()
        if now - self._warned.get(key, -_WARN_EVERY) >= _WARN_EVERY:
            self._warned[key] = now
            logger.warning(message)


def _is_spool(value: object) -> bool:
    from meshlog.spool import Spool

    return isinstance(value, Spool)


# -- the spool's body format (POST /v1/events) ----------------------------------------------------------------------
def encode_events(events: Sequence[NewEvent]) -> dict[str, Any]:
    """``{"events": [...]}``: the ``POST /v1/events`` body of a batch (every event with its id and key)."""
    out: list[dict[str, Any]] = []
    for e in events:
        item: dict[str, Any] = {"id": e.id, "type": e.type, "version": e.version, "data": dict(e.data)}
        if e.stream is not None:
            item["stream"] = e.stream
        if e.metadata:
            item["metadata"] = dict(e.metadata)
        for name in ("trace_id", "task_id", "agent_id", "parent_id", "idempotency_key"):
            value = getattr(e, name)
            if value is not None:
                item[name] = value
        if e.related:
            item["related"] = list(e.related)
        if e.occurred_at is not None:
            item["occurred_at"] = e.occurred_at.isoformat()
        if e.external_parent:
            item["external_parent"] = True
        out.append(item)
    return {"events": out}


def decode_events(body: str | Mapping[str, Any]) -> list[NewEvent]:
    """The events of a spooled ``POST /v1/events`` body (a batch or a single event)."""
    value = json.loads(body) if isinstance(body, str) else body
    items = value.get("events", [value])
    events: list[NewEvent] = []
    for item in items:
        occurred = item.get("occurred_at")
        events.append(
            NewEvent(
                type=item["type"],
                data=item.get("data") or {},
                stream=item.get("stream"),
                metadata=item.get("metadata"),
                trace_id=item.get("trace_id"),
                task_id=item.get("task_id"),
                agent_id=item.get("agent_id"),
                parent_id=item.get("parent_id"),
                related=tuple(item.get("related") or ()),
                idempotency_key=item.get("idempotency_key"),
                version=item.get("version", 1),
                occurred_at=datetime.fromisoformat(occurred) if occurred else None,
                id=item.get("id"),
                external_parent=bool(item.get("external_parent", False)),
            )
        )
    return events
