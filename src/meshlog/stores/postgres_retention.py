"""Retention on PostgreSQL: expired monthly partitions of ``events`` are archived, then detached and dropped.

Used by :mod:`meshlog.retention`. Works across tenants: every connection says ``meshlog.tenant = '*'`` for the
row-level security policies. Run it as the schema's owner (dropping a partition needs ownership).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import sql

from meshlog.errors import ConfigurationError, StoreError, StoreUnavailable
from meshlog.retention import Chunk, Plan, Row

__all__ = ["PostgresRetention"]

_SCHEMA_RE: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_BOUNDS_RE: Final = re.compile(r"FOR VALUES FROM \('([^']*)'\) TO \('([^']*)'\)")
_RETENTION_LOCK: Final = 1835365227  # with the schema's hash: one retention run per schema at a time
_LOCK_TRIES: Final = 6
_COLUMNS: Final = (
    "position, id::text, tenant, stream, stream_position, type, version, data::text, metadata::text, trace_id, "
    "task_id, agent_id, parent_id::text, root_id::text, depth, related::text[], idempotency_key, occurred_at, "
    "recorded_at"
)
_RESTORE_COLUMNS: Final = (
    "position, id, tenant, stream, stream_position, type, version, data, metadata, trace_id, task_id, agent_id, "
    "parent_id, root_id, depth, related, idempotency_key, occurred_at, recorded_at, archive"
)


class PostgresRetention:
    """Retention over one meshlog schema, through one connection of its own."""

    kind = "postgres"

    def __init__(self, conninfo: str, *, schema: str = "meshlog") -> None:
        if not _SCHEMA_RE.fullmatch(schema):
            raise ConfigurationError(f"schema must match {_SCHEMA_RE.pattern}, got {schema!r}")
        self.source = schema
        self._schema = sql.Identifier(schema)
        try:
            self._conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            self._conn.execute("SET TIME ZONE 'UTC'")
            # Retention reads and removes every tenant's rows: the administrative view of the RLS policies.
            self._conn.execute("SELECT set_config('meshlog.tenant', '*', false)")
            row = self._conn.execute("SELECT to_regclass(%s)", (f"{schema}.events",)).fetchone()
        except psycopg.Error as exc:
            self._conn.close()
            raise StoreError(f"PostgreSQL failed while opening retention: {exc}") from exc
        if row is None or row[0] is None:
            self._conn.close()
            raise StoreError(f"no meshlog store in schema {schema!r} (run meshlog migrate first)")
        self._locked = False

    def close(self) -> None:
        self._conn.close()

    def _fetch(self, query: sql.SQL | sql.Composed, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(query, params).fetchall()
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL failed during retention: {exc}") from exc

    def lock(self) -> None:
        """Take the schema's retention lock for this connection's lifetime, or fail at once when another run
        holds it."""
        if self._locked:
            return
        row = self._fetch(sql.SQL("SELECT pg_try_advisory_lock(%s, hashtext(%s))"), (_RETENTION_LOCK, self.source))
        if not row[0][0]:
            raise StoreError(f"another retention run holds the lock of schema {self.source!r}; try again later")
        self._locked = True

    def schema_version(self) -> int:
        rows = self._fetch(sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_migrations").format(self._schema))
        return int(rows[0][0])

    def _table(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(self._schema, sql.Identifier(name))

    def plan(self, cutoff: datetime) -> Plan:
        partitions = self._fetch(
            sql.SQL(
                "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), pg_total_relation_size(c.oid) "
                "FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass ORDER BY c.relname"
            ),
            (f"{self.source}.events",),
        )
        expired: list[Chunk] = []
        kept: list[Chunk] = []
        notes: list[str] = []
        for name, bound, size in partitions:
            assert isinstance(name, str) and isinstance(bound, str) and isinstance(size, int)
            match = _BOUNDS_RE.search(bound)
            if match is None:
                if bound.strip().upper() == "DEFAULT":
                    old = self._fetch(
                        sql.SQL("SELECT count(*) FROM {} WHERE recorded_at < %s").format(self._table(name)), (cutoff,)
                    )[0][0]
                    if old:
                        notes.append(
                            f"{name} holds {old} events older than the window; retention drops whole monthly "
                            "partitions only, so they stay (see docs/operations.md)"
                        )
                continue
            lower, upper = self._fetch(sql.SQL("SELECT %s::timestamptz, %s::timestamptz"), match.groups())[0]
            assert isinstance(lower, datetime) and isinstance(upper, datetime)
            if lower >= cutoff:
                continue
            count, total = self._fetch(
                sql.SQL("SELECT count(*), coalesce(sum(position), 0)::text FROM {}").format(self._table(name))
            )[0]
            chunk = Chunk(name, lower, upper, int(count), int(str(total)), size)
            (expired if upper <= cutoff else kept).append(chunk)
        return Plan(expired=expired, kept=[c for c in kept if c.count], notes=notes)

    def rows(self, chunk: Chunk) -> Iterator[Row]:
        # A server-side cursor (inside a transaction) streams the partition instead of loading it whole.
        query = sql.SQL("SELECT " + _COLUMNS + " FROM {} ORDER BY position").format(self._table(chunk.name))
        try:
            with self._conn.transaction(), self._conn.cursor(name="meshlog_retention") as cur:
                cur.itersize = 5000
                cur.execute(query)
                yield from cur
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL failed while reading {chunk.name}: {exc}") from exc

    def _keys_in(self, chunk: Chunk) -> sql.Composed:
        return sql.SQL("FROM {}.idempotency_keys WHERE recorded_at >= %s AND recorded_at < %s").format(self._schema)

    def expiring_keys(self, chunk: Chunk) -> int:
        rows = self._fetch(sql.SQL("SELECT count(*) ") + self._keys_in(chunk), (chunk.lower, chunk.upper))
        return int(rows[0][0])

    def remove(self, chunk: Chunk) -> int:
        self.lock()
        table = self._table(chunk.name)
        for attempt in range(_LOCK_TRIES):
            try:
                with self._conn.transaction():
                    # DETACH takes an ACCESS EXCLUSIVE lock on events for the rest of the transaction (appends
                    # wait): never queue behind a long reader for long, try again instead.
                    self._conn.execute("SET LOCAL lock_timeout = '5s'")
                    self._conn.execute(sql.SQL("ALTER TABLE {}.events DETACH PARTITION {}").format(self._schema, table))
                    # Under that lock nothing can be added: the partition holds what the archive holds, or
                    # nothing is removed (the rollback attaches it again).
                    count, total = self._conn.execute(
                        sql.SQL("SELECT count(*), coalesce(sum(position), 0)::text FROM {}").format(table)
                    ).fetchone() or (0, "0")
                    if (int(count), int(str(total))) != (chunk.count, chunk.position_sum):
                        raise StoreError(
                            f"{chunk.name} changed since it was archived ({count} events, archived "
                            f"{chunk.count}); nothing removed"
                        )
                    # Idempotency keys expire with their events (a key must never name a dropped event).
                    cur = self._conn.execute(sql.SQL("DELETE ") + self._keys_in(chunk), (chunk.lower, chunk.upper))
                    keys = cur.rowcount
                    self._conn.execute(sql.SQL("DROP TABLE {}").format(table))
                return keys
            except psycopg.errors.LockNotAvailable as exc:
                if attempt == _LOCK_TRIES - 1:
                    raise StoreError(f"could not lock events to drop {chunk.name}: {exc}") from exc
                time.sleep(1 + attempt)
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL failed while dropping {chunk.name}: {exc}") from exc
        raise AssertionError("unreachable")

    def finish(self) -> int | None:
        return None

    def restore(self, rows: Iterable[Row], archive: str) -> int:
        columns = sql.SQL(_RESTORE_COLUMNS)
        try:
            with self._conn.transaction():
                self._conn.execute(
                    sql.SQL(
                        "CREATE TEMPORARY TABLE meshlog_restore (LIKE {}.archived_events INCLUDING DEFAULTS) "
                        "ON COMMIT DROP"
                    ).format(self._schema)
                )
                with (
                    self._conn.cursor() as cur,
                    cur.copy(sql.SQL("COPY meshlog_restore ({}) FROM STDIN").format(columns)) as copy,
                ):
                    for row in rows:
                        copy.write_row((*row, archive))
                cur = self._conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.archived_events ({}) SELECT {} FROM meshlog_restore "
                        "ON CONFLICT (position) DO NOTHING"
                    ).format(self._schema, columns, columns)
                )
                return cur.rowcount
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL failed while restoring {archive}: {exc}") from exc
