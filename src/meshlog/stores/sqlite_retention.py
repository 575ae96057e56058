"""Retention on SQLite: events older than the window are archived month by month, deleted, and the space is
reclaimed with VACUUM.

Used by :mod:`meshlog.retention`. The append-only trigger refuses DELETE; retention lifts it for one statement
inside its own write transaction (SQLite's schema changes are transactional, and the write lock keeps every
other connection from writing until the trigger is back), so no other code path can ever delete an event.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from meshlog.errors import StoreError, StoreUnavailable
from meshlog.retention import Chunk, Plan, Row
from meshlog.stores._sql import EVENT_COLUMNS

__all__ = ["SqliteRetention"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_TRIGGER: Final = "events_no_delete"
_RANGE: Final = "recorded_at >= ? AND recorded_at < ?"


def _us(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _next_month(value: datetime) -> datetime:
    return value.replace(year=value.year + 1, month=1) if value.month == 12 else value.replace(month=value.month + 1)


def _stamp(value: datetime) -> str:
    return value.strftime("%Y%m%dT%H%M%SZ")


class SqliteRetention:
    """Retention over one SQLite file, through a connection of its own."""

    kind = "sqlite"

    def __init__(self, path: str, *, busy_timeout: float = 30.0) -> None:
        if not Path(path).is_file():
            raise StoreUnavailable(f"no SQLite database at {path!r}")
        self.source = Path(path).stem
        try:
            self._conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            found = self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'")
            if found.fetchone() is None:
                raise StoreError(f"{path!r} is not a meshlog store (run meshlog migrate first)")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {path!r}: {exc}") from exc

    def close(self) -> None:
        self._conn.close()

    def _fetch(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite failed during retention: {exc}") from exc

    def lock(self) -> None:
        """Nothing to take: each removal runs in a write transaction, and SQLite has one writer at a time."""

    def schema_version(self) -> int:
        return int(self._fetch("SELECT coalesce(max(version), 0) FROM meshlog_migrations")[0][0])

    def plan(self, cutoff: datetime) -> Plan:
        months = self._fetch(
            "SELECT strftime('%Y-%m', recorded_at / 1000000, 'unixepoch') AS month, count(*), sum(position) "
            "FROM events WHERE recorded_at < ? GROUP BY month ORDER BY month",
            (_us(cutoff),),
        )
        chunks = []
        for month, count, total in months:
            lower = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
            upper = min(_next_month(lower), cutoff)
            chunks.append(Chunk(f"events_{_stamp(lower)}_{_stamp(upper)}", lower, upper, int(count), int(total)))
        return Plan(expired=chunks, kept=[])

    def rows(self, chunk: Chunk) -> Iterator[Row]:
        try:
            cur = self._conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE {_RANGE} ORDER BY position",
                (_us(chunk.lower), _us(chunk.upper)),
            )
            for r in cur:
                yield (
                    *r[:15],
                    json.loads(r[15]) if r[15] else None,
                    r[16],
                    None if r[17] is None else _dt(r[17]),
                    _dt(r[18]),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite failed while reading {chunk.name}: {exc}") from exc

    def expiring_keys(self, chunk: Chunk) -> int:
        rows = self._fetch(
            f"SELECT count(*) FROM events WHERE {_RANGE} AND idempotency_key IS NOT NULL",
            (_us(chunk.lower), _us(chunk.upper)),
        )
        return int(rows[0][0])

    def remove(self, chunk: Chunk) -> int:
        bounds = (_us(chunk.lower), _us(chunk.upper))
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                count, total = conn.execute(
                    f"SELECT count(*), coalesce(sum(position), 0) FROM events WHERE {_RANGE}", bounds
                ).fetchone()
                if (count, total) != (chunk.count, chunk.position_sum):
                    raise StoreError(
                        f"{chunk.name} changed since it was archived ({count} events, archived {chunk.count}); "
                        "nothing removed"
                    )
                keys = conn.execute(
                    f"SELECT count(*) FROM events WHERE {_RANGE} AND idempotency_key IS NOT NULL", bounds
                ).fetchone()[0]
                trigger = conn.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", (_TRIGGER,)
                ).fetchone()
                if trigger is None:
                    raise StoreError(f"the append-only trigger {_TRIGGER} is missing; nothing removed")
                # Lifted for this transaction only: the write lock is ours until COMMIT, when it is back.
                conn.execute(f"DROP TRIGGER {_TRIGGER}")
                conn.execute(
                    f"DELETE FROM event_links WHERE source_id IN (SELECT id FROM events WHERE {_RANGE})", bounds
                )
                conn.execute(f"DELETE FROM events WHERE {_RANGE}", bounds)
                conn.execute(trigger[0])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite failed while removing {chunk.name}: {exc}") from exc
        # Idempotency keys live on the event rows: they expired with them.
        return int(keys)

    def finish(self) -> int | None:
        """VACUUM: give the freed pages back to the file system; returns how many bytes the file shrank."""

        def size() -> int:
            pages = self._fetch("PRAGMA page_count")[0][0]
            page_size = self._fetch("PRAGMA page_size")[0][0]
            return int(pages) * int(page_size)

        before = size()
        try:
            self._conn.execute("VACUUM")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite VACUUM failed (the events are removed; run it again later): {exc}") from exc
        return before - size()

    def restore(self, rows: Iterable[Row], archive: str) -> int:
        now = _us(datetime.now(UTC))
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.executemany(
                    f"INSERT OR IGNORE INTO archived_events ({EVENT_COLUMNS}, archive, restored_at) "
                    f"VALUES ({', '.join(['?'] * 21)})",
                    (
                        (
                            *row[:15],
                            json.dumps(row[15]) if row[15] else None,
                            row[16],
                            None if row[17] is None else _us(row[17]),
                            _us(row[18]),
                            archive,
                            now,
                        )
                        for row in rows
                    ),
                )
                inserted = conn.total_changes - before
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite failed while restoring {archive}: {exc}") from exc
        return inserted
