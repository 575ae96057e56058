"""A durable local spool: append requests kept on disk while the meshlog server cannot be reached.

A :class:`Spool` is one SQLite file (WAL, ``synchronous=FULL``: an entry is on disk when :meth:`Spool.put`
returns). Each entry is the JSON body of one ``POST /v1/events`` with an idempotency key on every event, assigned
before the first attempt to send it. That is what makes delivery safe to repeat: a process killed after the server
committed an entry but before the spool forgot it sends the entry again on the next flush, and the server answers
with the events it already recorded instead of writing them twice.

Delivery (:meth:`Spool.deliver`) goes in the order entries were put and stops at the first entry that cannot be
delivered, so the server sees the spooled requests in their original order. An entry is removed only after the
server answered it. An entry the server rejects for good (invalid, a wrong expected version, an idempotency
conflict) is not dropped: it moves to the rejected list, which :meth:`Spool.status` counts and
:meth:`Spool.rejected` shows.

The spool has a size limit (``max_bytes`` of pending request bodies). When full, :meth:`Spool.put` raises
:class:`SpoolFull`, counted in ``status().refused``: nothing is ever dropped silently.

The HTTP store (``AsyncHttpStore(url, spool=path)``) uses a spool when the server stays unreachable after its
retries: the request goes to the spool and the append fails with :class:`Spooled` (a ``StoreUnavailable`` whose
events will be delivered later). :func:`emit_or_spool` turns that into a ``None`` result for callers that must
never fail because the server is down.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from meshlog.errors import ConfigurationError, MeshlogError, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from meshlog.events import RecordedEvent
    from meshlog.log import EventLog
    from meshlog.log_async import AsyncEventLog

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DeliveryReport",
    "RejectedEntry",
    "Spool",
    "SpoolEntry",
    "SpoolFull",
    "SpoolStatus",
    "Spooled",
    "emit_or_spool",
    "emit_or_spool_async",
    "is_final",
]

DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
"""The default limit of pending request bodies: 64 MiB."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    body TEXT NOT NULL,
    size INTEGER NOT NULL,
    events INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    rejected_at TEXT NOT NULL,
    body TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class Spooled(StoreUnavailable):
    """The server could not be reached, and the append request was kept in the local spool instead.

    Nothing is acknowledged yet: the events will be delivered, in order, by a later append through the same
    spool or by a flush (``meshlog spool flush``). The request may also already be committed (when only the
    response was lost); its idempotency keys make the delivery write it at most once.
    """

    spooled: bool = True

    def __init__(self, message: str, *, path: str, entry_id: int, event_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.path = path
        """The spool file."""
        self.entry_id = entry_id
        """The spool entry that holds the request."""
        self.event_ids = tuple(event_ids)
        """The ids the events will have once delivered."""


class SpoolFull(StoreUnavailable):
    """The server could not be reached and the spool is full: the request was neither written nor kept."""

    spooled: bool = False

    def __init__(self, message: str, *, path: str, size: int, limit: int) -> None:
        super().__init__(message)
        self.path = path
        self.size = size
        """The bytes of pending requests in the spool."""
        self.limit = limit
        """The spool's ``max_bytes``."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled request: the JSON body of a ``POST /v1/events``, idempotency keys included."""

    id: int
    created_at: datetime
    body: str
    attempts: int
    last_error: str | None

    def request(self) -> dict[str, Any]:
        """The body as a dict."""
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass(frozen=True, slots=True)
class RejectedEntry:
    """A spooled request the server refused for good (kept for inspection, never resent)."""

    id: int
    created_at: datetime
    rejected_at: datetime
    body: str
    reason: str


@dataclass(frozen=True, slots=True)
class SpoolStatus:
    """What a spool holds."""

    path: str
    pending: int
    """Entries waiting for delivery."""
    pending_events: int
    """Events in those entries."""
    oldest: datetime | None
    """When the oldest pending entry was put, or None."""
    pending_bytes: int
    """Bytes of pending request bodies (what ``max_bytes`` limits)."""
    file_bytes: int
    """Bytes on disk (the database and its write-ahead log)."""
    max_bytes: int
    rejected: int
    """Entries the server refused for good (see :meth:`Spool.rejected`)."""
    refused: int
    """Requests the spool refused because it was full (each one failed its append with :class:`SpoolFull`)."""
    delivered: int
    """Entries delivered since the spool file was created."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "pending": self.pending,
            "pending_events": self.pending_events,
            "oldest": self.oldest.isoformat() if self.oldest else None,
            "pending_bytes": self.pending_bytes,
            "file_bytes": self.file_bytes,
            "max_bytes": self.max_bytes,
            "rejected": self.rejected,
            "refused": self.refused,
            "delivered": self.delivered,
        }


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """The result of one delivery run."""

    delivered: int
    """Entries the server acknowledged (and the spool removed)."""
    rejected: int
    """Entries the server refused for good (moved to the rejected list)."""
    remaining: int
    """Entries still pending."""
    error: str | None
    """Why delivery stopped early, or None when the spool was drained."""

    @property
    def complete(self) -> bool:
        return self.error is None and self.remaining == 0


def _now() -> datetime:
    return datetime.now(UTC)


class Spool:
    """A durable, ordered queue of append requests in one SQLite file (see the module's docstring).

    Safe to share between threads, and between processes (SQLite locks the file). ``max_bytes`` limits the
    pending request bodies; when a put would exceed it, the put raises :class:`SpoolFull`.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ConfigurationError(f"spool max_bytes must be a positive integer, got {max_bytes!r}")
        self.path = str(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: every write below opens its own BEGIN IMMEDIATE transaction.
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a put is on disk (fsync of the WAL) before it returns, so a spooled request survives a crash
            # or a power cut, which is the point of spooling it.
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._write() as conn:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(f"cannot open the spool {self.path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"<Spool {self.path}>"

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with BEGIN IMMEDIATE so that the size check and the insert of a put are
        atomic even when several processes share the file."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    def _bump(self, conn: sqlite3.Connection, name: str, by: int = 1) -> None:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + ?",
            (name, by, by),
        )

    # -- writing ------------------------------------------------------------------------------------------------
    def put(self, request: str | Mapping[str, Any]) -> int:
        """Keep one request (a ``POST /v1/events`` body, as JSON text or a dict) and return its entry id.

        Every event of the request must carry an ``idempotency_key``: redelivery relies on it. The entry is on
        disk when this returns. Raises :class:`SpoolFull` (and counts it) when the spool has no room for it.
        """
        body = request if isinstance(request, str) else json.dumps(request, ensure_ascii=False, allow_nan=False)
        events = _check_body(body)
        size = len(body.encode("utf-8"))
        try:
            with self._write() as conn:
                (pending,) = conn.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()
                if pending + size > self.max_bytes:
                    self._bump(conn, "refused")
                    full = True
                else:
                    cursor = conn.execute(
                        "INSERT INTO entries (created_at, body, size, events) VALUES (?, ?, ?, ?)",
                        (_now().isoformat(), body, size, events),
                    )
                    full = False
                    entry_id = cursor.lastrowid
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the spool {self.path}: {exc}") from exc
        if full:
            raise SpoolFull(
                f"the spool {self.path} is full ({pending} of {self.max_bytes} bytes pending, the request takes "
                f"{size}): the request was not kept; flush the spool (meshlog spool flush) or raise its limit",
                path=self.path,
                size=pending,
                limit=self.max_bytes,
            )
        assert entry_id is not None
        return entry_id

    def ack(self, entry_id: int) -> None:
        """Forget an entry the server acknowledged (committed, or recognized by its idempotency keys)."""
        with self._write() as conn:
            if conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,)).rowcount:
                self._bump(conn, "delivered")

    def reject(self, entry_id: int, reason: str) -> None:
        """Move an entry the server refused for good to the rejected list (it is never resent)."""
        with self._write() as conn:
            row = conn.execute("SELECT created_at, body FROM entries WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                return
            conn.execute(
                "INSERT INTO rejected (id, created_at, rejected_at, body, reason) VALUES (?, ?, ?, ?, ?)",
                (entry_id, row[0], _now().isoformat(), row[1], reason),
            )
            conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,))

    def note_failure(self, entry_id: int, error: str) -> None:
        """Record a failed delivery attempt of an entry (it stays pending)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE entries SET attempts = attempts + 1, last_error = ? WHERE id = ?", (error[:2000], entry_id)
            )

    # -- reading ------------------------------------------------------------------------------------------------
    def has_pending(self) -> bool:
        """Whether any entry waits for delivery (cheap: no scan)."""
        return bool(self._read("SELECT EXISTS (SELECT 1 FROM entries)")[0][0])

    def pending(self, limit: int | None = None, *, after: int = 0) -> list[SpoolEntry]:
        """Pending entries in delivery order (those with an id above ``after``), at most ``limit``."""
        rows = self._read(
            "SELECT id, created_at, body, attempts, last_error FROM entries WHERE id > ? ORDER BY id LIMIT ?",
            (after, -1 if limit is None else limit),
        )
        return [SpoolEntry(r[0], datetime.fromisoformat(r[1]), r[2], r[3], r[4]) for r in rows]

    def rejected(self) -> list[RejectedEntry]:
        """The entries the server refused for good, oldest first."""
        rows = self._read("SELECT id, created_at, rejected_at, body, reason FROM rejected ORDER BY id")
        return [
            RejectedEntry(r[0], datetime.fromisoformat(r[1]), datetime.fromisoformat(r[2]), r[3], r[4]) for r in rows
        ]

    def status(self) -> SpoolStatus:
        """How many entries wait, since when, and how many bytes they take."""
        (pending, events, oldest, size), *_ = self._read(
            "SELECT COUNT(*), COALESCE(SUM(events), 0), MIN(created_at), COALESCE(SUM(size), 0) FROM entries"
        )
        counters = dict(self._read("SELECT name, value FROM counters"))
        (rejected,), *_ = self._read("SELECT COUNT(*) FROM rejected")
        file_bytes = sum(
            os.path.getsize(p) for p in (self.path, self.path + "-wal", self.path + "-shm") if os.path.exists(p)
        )
        return SpoolStatus(
            path=self.path,
            pending=pending,
            pending_events=events,
            oldest=datetime.fromisoformat(oldest) if oldest else None,
            pending_bytes=size,
            file_bytes=file_bytes,
            max_bytes=self.max_bytes,
            rejected=rejected,
            refused=counters.get("refused", 0),
            delivered=counters.get("delivered", 0),
        )

    # -- delivering ---------------------------------------------------------------------------------------------
    def deliver(self, send: Callable[[SpoolEntry], object], *, batch: int = 100) -> DeliveryReport:
        """Send pending entries in order with ``send`` until the spool is empty or an entry cannot be delivered.

        ``send`` delivers one entry. When it returns, the entry was acknowledged and is removed. When it raises a
        meshlog error that is a final answer from the server (``ValidationError``, ``ConcurrencyError``,
        ``NotFound``, ...), the entry moves to the rejected list and delivery goes on. Any other exception
        (``StoreError``, ``OSError``, ...) stops delivery: the entry stays first in line, to be sent again.

        An entry is removed only after ``send`` returned, so a crash in between sends it again next time; its
        idempotency keys make the server answer with the events it already recorded.
        """
        delivered = rejected = 0
        error: str | None = None
        after = 0
        while error is None:
            entries = self.pending(batch, after=after)
            if not entries:
                break
            for entry in entries:
                after = entry.id
                try:
                    send(entry)
                except Exception as exc:
                    if is_final(exc):
                        self.reject(entry.id, f"{type(exc).__name__}: {exc}")
                        rejected += 1
                        continue
                    error = f"{type(exc).__name__}: {exc}"
                    self.note_failure(entry.id, error)
                    break
                self.ack(entry.id)
                delivered += 1
        return DeliveryReport(delivered, rejected, self.status().pending, error)


def is_final(exc: BaseException) -> bool:
    """Whether ``exc`` is the server's final answer to a request (resending cannot change it)."""
    return isinstance(exc, MeshlogError) and not isinstance(exc, (StoreError, ConfigurationError))


def _check_body(body: str) -> int:
    """The number of events in a ``POST /v1/events`` body; ConfigurationError when one lacks an idempotency key."""
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise ConfigurationError(f"a spooled request must be JSON: {exc}") from exc
    events = value.get("events", [value]) if isinstance(value, dict) else None
    if not isinstance(events, list) or not events:
        raise ConfigurationError("a spooled request must be a POST /v1/events body (one event or {'events': [...]})")
    for event in events:
        if not isinstance(event, dict) or not event.get("idempotency_key"):
            raise ConfigurationError("every event of a spooled request needs an idempotency_key (redelivery needs it)")
    return len(events)


def emit_or_spool(
    log: EventLog, type: str, data: Mapping[str, Any] | None = None, **fields: Any
) -> RecordedEvent | None:
    """Emit an event; when the log's store spooled it because the server was unreachable, return None.

    For callers that must not fail because the server is down (the CLI's ``emit --never-fail``, tracing
    hooks). Needs a store with a spool (``HttpStore(url, spool=path)``); other errors (invalid input, a full
    spool, a wrong expected version) are raised as usual.
    """
    try:
        return log.emit(type, data, **fields)
    except Spooled:
        return None


async def emit_or_spool_async(
    log: AsyncEventLog, type: str, data: Mapping[str, Any] | None = None, **fields: Any
) -> RecordedEvent | None:
    """The async form of :func:`emit_or_spool`."""
    try:
        return await log.emit(type, data, **fields)
    except Spooled:
        return None
