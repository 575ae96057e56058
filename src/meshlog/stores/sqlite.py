"""``sqlite:///path.db``: the embedded default store, one file, no server.

Durability and ordering:

- WAL journal. Appends run in ``BEGIN IMMEDIATE`` transactions, so SQLite's single write lock is taken before
  anything is read: the version and idempotency checks and the position assignment all happen under it, and
  commits happen in position order (no reader can skip an event). Several processes may share a file; the
  ``busy_timeout`` makes them queue for the write lock instead of failing.
- ``synchronous=FULL`` by default: a committed append survives a process crash and a power loss. With
  ``?synchronous=normal`` in the URL it survives a process crash (``kill -9``) but the last commits may be lost
  on power loss; appends get faster.
- ``position`` is ``INTEGER PRIMARY KEY AUTOINCREMENT``: never reused, even after a rollback.
- Triggers make the database refuse UPDATE and DELETE of event rows.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Final

from meshlog._validation import AppendRequest
from meshlog.errors import ConfigurationError, MeshlogError, StoreError, StoreUnavailable
from meshlog.events import RecordedEvent, StreamInfo
from meshlog.query import EventFilter, Order
from meshlog.registry import Instance, InstanceChange
from meshlog.stats import (
    LLM_CALL_TYPE,
    LLM_RESULT_TYPES,
    EventStats,
    TraceSummary,
    build_stats,
    failure_type_sql,
    trace_agents,
)
from meshlog.store import AppendOutcome
from meshlog.stores._planning import Duplicate, Planned, plan_append, recorded
from meshlog.stores._sql import EVENT_COLUMNS, INSTANCE_COLUMNS, TOKEN_COLUMNS, order_by, where
from meshlog.tokens import ApiToken

__all__ = ["SqliteStore"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SYNCHRONOUS: Final = {"off", "normal", "full", "extra"}
_POLL_SECONDS: Final = 0.05
_TEXT_CLAUSE: Final = (
    "EXISTS (SELECT 1 FROM json_tree(events.data) AS j WHERE j.type = 'text' AND instr(lower(j.value), lower(?)))"
)
_INSERT: Final = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({', '.join(['?'] * 19)})"
_UPSERT_STREAM: Final = (
    "INSERT INTO streams (tenant, stream, version, last_position, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, stream) DO UPDATE SET "
    "version = excluded.version, last_position = excluded.last_position, updated_at = excluded.updated_at"
)


# Both read the window's range of the (tenant, recorded_at) index; the timeline from the index alone.
_STATS_TIMELINE: Final = (
    "SELECT (recorded_at - ?) / ?, count(*) FROM events INDEXED BY events_recorded_at"
    " WHERE tenant = ? AND recorded_at >= ? AND recorded_at < ? GROUP BY 1"
)
_STATS_KINDS: Final = (
    "SELECT type, agent_id, count(*) FROM events INDEXED BY events_recorded_at"
    " WHERE tenant = ? AND recorded_at >= ? AND recorded_at < ? GROUP BY type, agent_id"
)


def _token_count(key: str) -> str:
    """A payload key's count for _TOKENS: a non-negative JSON number truncated to an integer, else NULL."""
    value = f"json_extract(e.data, '$.{key}')"
    return (
        f"CASE WHEN json_type(e.data, '$.{key}') IN ('integer', 'real')"
        f" THEN CASE WHEN {value} >= 0 THEN CAST({value} AS INTEGER) END END"
    )


# meshlog.stats.event_tokens in SQL (NULL + n is NULL); total() adds up as a float and never overflows.
_TOKENS: Final = (
    f"total(CASE WHEN e.type IN {LLM_RESULT_TYPES!r} THEN coalesce({_token_count('total_tokens')},"
    f" {_token_count('input_tokens')} + {_token_count('output_tokens')}) END)"
)

# Two passes over the window's range of the (tenant, recorded_at) index, in one statement (one snapshot): the first
# groups by trace with the cheap figures and keeps the `limit` last active (with an agent, HAVING keeps the traces
# it took part in); the second reads the window again, probing those traces through an automatic index, for their
# agents, failures and tokens (the payloads of their LLM responses). CROSS JOIN pins that order: looking up each kept
# trace's events by the trace index instead costs a random row read per event (1.5 times slower on a window of
# 100,000 events, and unbounded for long traces), while the second pass costs less than the first.
_TRACES: Final = (
    "WITH top AS (SELECT trace_id, min(recorded_at) AS lo, max(recorded_at) AS hi, count(*) AS n,"
    f" sum(CASE WHEN type = '{LLM_CALL_TYPE}' THEN 1 ELSE 0 END) AS calls FROM events INDEXED BY events_recorded_at"
    " WHERE tenant = ?1 AND recorded_at >= ?2 AND recorded_at < ?3 AND trace_id IS NOT NULL GROUP BY trace_id"
    " HAVING ?4 IS NULL OR count(CASE WHEN agent_id = ?4 THEN 1 END) > 0 ORDER BY hi DESC, trace_id LIMIT ?5)"
    " SELECT top.trace_id, top.lo, top.hi, top.n,"
    " json_group_array(DISTINCT e.agent_id) FILTER (WHERE e.agent_id IS NOT NULL), top.calls,"
    f" {_TOKENS}, sum(CASE WHEN {failure_type_sql('e.type')} THEN 1 ELSE 0 END)"
    " FROM events AS e INDEXED BY events_recorded_at CROSS JOIN top ON e.trace_id = top.trace_id"
    " WHERE e.tenant = ?1 AND e.recorded_at >= ?2 AND e.recorded_at < ?3"
    " GROUP BY top.trace_id ORDER BY top.hi DESC, top.trace_id"
)
_PREFIXED_COLUMNS: Final = ", ".join(f"events.{c.strip()}" for c in EVENT_COLUMNS.split(","))
# Parents are recorded before their children, so parent links never form a cycle.
_ANCESTORS: Final = f"""
WITH RECURSIVE up(id, n) AS (
    SELECT parent_id, 1 FROM events WHERE id = ? AND tenant = ? AND parent_id IS NOT NULL
    UNION ALL
    SELECT e.parent_id, up.n + 1 FROM events AS e JOIN up ON e.id = up.id WHERE e.tenant = ? AND e.parent_id IS NOT NULL
)
SELECT {_PREFIXED_COLUMNS} FROM events JOIN up ON events.id = up.id WHERE events.tenant = ? ORDER BY up.n DESC
"""
_DESCENDANTS: Final = f"""
WITH RECURSIVE down(id) AS (
    SELECT ? UNION SELECT c.id FROM events AS c JOIN down ON c.parent_id = down.id WHERE c.tenant = ?
)
SELECT {EVENT_COLUMNS} FROM events WHERE id IN (SELECT id FROM down) AND id <> ? AND tenant = ? ORDER BY position
"""
# Related links may form cycles: UNION and the depth bound end the walk; each event keeps its shortest distance.
# Every step expands only from events recorded in the tenant (joined as `e`): an external parent, a dangling
# related id or another tenant's event never bridges two of the tenant's events.
_GRAPH: Final = f"""
WITH RECURSIVE walk(id, dist) AS (
    SELECT ?, 0
    UNION
    SELECT e.parent_id, w.dist + 1 FROM walk AS w JOIN events AS e ON e.id = w.id
     WHERE e.tenant = ? AND e.parent_id IS NOT NULL AND w.dist < ?
    UNION
    SELECT c.id, w.dist + 1 FROM walk AS w JOIN events AS e ON e.id = w.id JOIN events AS c ON c.parent_id = e.id
     WHERE e.tenant = ? AND c.tenant = e.tenant AND w.dist < ?
    UNION
    SELECT j.value, w.dist + 1 FROM walk AS w JOIN events AS e ON e.id = w.id, json_each(e.related) AS j
     WHERE e.tenant = ? AND e.related IS NOT NULL AND w.dist < ?
    UNION
    SELECT l.source_id, w.dist + 1 FROM walk AS w JOIN events AS e ON e.id = w.id
      JOIN event_links AS l ON l.target_id = e.id AND l.tenant = e.tenant
     WHERE e.tenant = ? AND w.dist < ?
)
SELECT {_PREFIXED_COLUMNS}, min(walk.dist) AS distance FROM walk JOIN events ON events.id = walk.id
 WHERE events.tenant = ? AND EXISTS (SELECT 1 FROM events AS s WHERE s.id = ? AND s.tenant = ?)
 GROUP BY events.position ORDER BY distance, events.position LIMIT ?
"""


_scan = json.JSONDecoder().raw_decode


def _payload(text: str) -> Any:
    """A payload as stored (compact JSON, no surrounding whitespace), decoded without json.loads' extra passes."""
    return {} if text == "{}" else _scan(text)[0]


def _us(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _event(row: tuple[Any, ...]) -> RecordedEvent:
    return RecordedEvent(
        position=row[0],
        id=row[1],
        tenant=row[2],
        stream=row[3],
        stream_position=row[4],
        type=row[5],
        version=row[6],
        data=_payload(row[7]),
        metadata=_payload(row[8]),
        trace_id=row[9],
        task_id=row[10],
        agent_id=row[11],
        parent_id=row[12],
        root_id=row[13],
        depth=row[14],
        related=tuple(json.loads(row[15])) if row[15] else (),
        idempotency_key=row[16],
        occurred_at=None if row[17] is None else _dt(row[17]),
        recorded_at=_dt(row[18]),
    )


def _token(row: tuple[Any, ...]) -> ApiToken:
    return ApiToken(
        id=row[0],
        tenant=row[1],
        scopes=tuple(row[2].split()),
        secret_hash=row[3],
        name=row[4],
        created_at=_dt(row[5]),
        expires_at=None if row[6] is None else _dt(row[6]),
        revoked_at=None if row[7] is None else _dt(row[7]),
    )


def _instance(row: tuple[Any, ...]) -> Instance:
    return Instance(
        id=row[0],
        tenant=row[1],
        status=row[2],
        registered_at=_dt(row[3]),
        last_heartbeat=_dt(row[4]),
        name=row[5],
        project=row[6],
        host=row[7],
        metadata=json.loads(row[8]),
        heartbeat_event_at=None if row[9] is None else _dt(row[9]),
        closed_at=None if row[10] is None else _dt(row[10]),
    )


def _instance_row(i: Instance) -> tuple[Any, ...]:
    return (
        i.id,
        i.tenant,
        i.status,
        _us(i.registered_at),
        _us(i.last_heartbeat),
        i.name,
        i.project,
        i.host,
        json.dumps(dict(i.metadata), separators=(",", ":"), ensure_ascii=False),
        None if i.heartbeat_event_at is None else _us(i.heartbeat_event_at),
        None if i.closed_at is None else _us(i.closed_at),
    )


_SELECT_INSTANCE: Final = f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE tenant = ? AND id = ?"
_PUT_INSTANCE: Final = f"INSERT OR REPLACE INTO instances ({INSTANCE_COLUMNS}) VALUES ({', '.join(['?'] * 11)})"


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("meshlog.stores") / "sql" / "sqlite"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (trigger bodies included) with SQLite's own completeness test."""
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        raise ConfigurationError("incomplete statement in a SQLite migration")


class _Reader:
    """A thread's read connection (its lifetime is the thread's)."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


class _TxReader:
    """Reads the stored state through the writer's connection, inside its write transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def stream_version(self, tenant: str, stream: str) -> int:
        row = self._conn.execute(
            "SELECT version FROM streams WHERE tenant = ? AND stream = ?", (tenant, stream)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def events_by_keys(self, tenant: str, keys: Sequence[str]) -> dict[str, RecordedEvent]:
        rows = self._conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE tenant = ? AND idempotency_key IN "
            f"({', '.join('?' * len(keys))})",
            (tenant, *keys),
        ).fetchall()
        return {row[16]: _event(row) for row in rows}

    def lineage_of(self, tenant: str, event_id: str) -> tuple[str, int] | None:
        row = self._conn.execute(
            "SELECT root_id, depth FROM events WHERE id = ? AND tenant = ?", (event_id, tenant)
        ).fetchone()
        return None if row is None else (row[0], int(row[1]))

    def id_exists(self, event_id: str) -> bool:
        return self._conn.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is not None


class SqliteStore:
    """A store in one SQLite file. Thread-safe: one writer connection behind a lock, one reader per thread."""

    def __init__(self, path: str, *, synchronous: str = "full", busy_timeout: float = 30.0, url: str = "") -> None:
        if synchronous.lower() not in _SYNCHRONOUS:
            raise ConfigurationError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}, got {synchronous!r}")
        self.url = url or f"sqlite:///{path}"
        self.path = path
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._write_lock = threading.Lock()
        self._appended = threading.Condition()
        self._local = threading.local()
        self._readers: set[sqlite3.Connection] = set()
        self._readers_lock = threading.Lock()
        self._closed = False
        self._writer = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        return conn

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the store is closed")
        holder: _Reader | None = getattr(self._local, "reader", None)
        if holder is None:
            holder = _Reader(self._connect())
            self._local.reader = holder
            with self._readers_lock:
                self._readers.add(holder.conn)
            # The thread-local holder dies with its thread: close the connection then, so that servers with
            # short-lived threads do not keep one open file per thread that ever read.
            weakref.finalize(holder, self._forget_reader, holder.conn)
        return holder.conn

    def _forget_reader(self, conn: sqlite3.Connection) -> None:
        with self._readers_lock:
            self._readers.discard(conn)
        conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            if self._closed:
                raise StoreError("the store is closed")
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"cannot take SQLite's write lock: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def migrate(self) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS meshlog_migrations "
                    "(version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
                )
                applied = {row[0] for row in conn.execute("SELECT version FROM meshlog_migrations")}
                for version, script in _migrations():
                    if version in applied:
                        continue
                    for statement in _statements(script):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO meshlog_migrations (version, applied_at) VALUES (?, ?)",
                        (version, time.time_ns() // 1000),
                    )
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite migration failed: {exc}") from exc

    def append(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        outcomes: list[AppendOutcome] = []
        grouped = len(requests) > 1
        try:
            with self._write() as conn:
                reader = _TxReader(conn)
                for request in requests:
                    if grouped:
                        conn.execute("SAVEPOINT request")
                    try:
                        outcome = self._append_one(conn, reader, request)
                    except sqlite3.Error as exc:
                        if not grouped:
                            raise
                        conn.execute("ROLLBACK TO request")
                        outcome = StoreError(f"SQLite append failed: {exc}")
                    if grouped:
                        conn.execute("RELEASE request")
                    outcomes.append(outcome)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite append failed: {exc}") from exc
        with self._appended:
            self._appended.notify_all()
        return outcomes

    def _append_one(self, conn: sqlite3.Connection, reader: _TxReader, request: AppendRequest) -> AppendOutcome:
        plan = plan_append(request, reader)
        if isinstance(plan, Duplicate):
            return plan.events
        if isinstance(plan, MeshlogError):
            return plan
        assert isinstance(plan, Planned)
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        first = 1 if row is None else int(row[0]) + 1
        now_us = time.time_ns() // 1000
        now = _dt(now_us)
        tenant = request.tenant
        rows = []
        last_position: dict[str, int] = {}
        for offset, p in enumerate(plan.events):
            e = p.event
            position = first + offset
            last_position[e.stream] = position
            rows.append(
                (
                    position,
                    e.id,
                    tenant,
                    e.stream,
                    p.stream_position,
                    e.type,
                    e.version,
                    e.data_json,
                    e.metadata_json,
                    e.trace_id,
                    e.task_id,
                    e.agent_id,
                    e.parent_id,
                    p.root_id,
                    p.depth,
                    json.dumps(e.related) if e.related else None,
                    e.idempotency_key,
                    None if e.occurred_at is None else _us(e.occurred_at),
                    now_us,
                )
            )
        conn.executemany(_INSERT, rows)
        links = [(tenant, target, p.event.id) for p in plan.events for target in p.event.related]
        if links:
            conn.executemany("INSERT OR IGNORE INTO event_links (tenant, target_id, source_id) VALUES (?, ?, ?)", links)
        conn.executemany(
            _UPSERT_STREAM,
            [
                (tenant, s, v, last_position[s], now_us, now_us)
                for s, v in plan.stream_versions.items()
                if s in last_position
            ],
        )
        return [recorded(tenant, p, first + i, now) for i, p in enumerate(plan.events)]

    def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite query failed: {exc}") from exc

    def get(self, tenant: str, event_id: str) -> RecordedEvent | None:
        rows = self._fetch(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ? AND tenant = ?", (event_id, tenant))
        return _event(rows[0]) if rows else None

    def query(self, tenant: str, flt: EventFilter, *, order: Order, limit: int) -> list[RecordedEvent]:
        clause, params = where(tenant, flt, ph="?", text_clause=_TEXT_CLAUSE, time_value=_us)
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {clause} ORDER BY {order_by(order, flt)} LIMIT ?"
        return [_event(row) for row in self._fetch(sql, [*params, limit])]

    def count(self, tenant: str, flt: EventFilter) -> int:
        clause, params = where(tenant, flt, ph="?", text_clause=_TEXT_CLAUSE, time_value=_us)
        return int(self._fetch(f"SELECT count(*) FROM events WHERE {clause}", params)[0][0])

    def stats(self, tenant: str, since: datetime, until: datetime, bucket_seconds: int) -> EventStats:
        low, high = _us(since), _us(until)
        conn = self._reader()
        try:
            # One read transaction: both counts see the same committed events.
            conn.execute("BEGIN")
            try:
                size = bucket_seconds * 1_000_000
                timeline = conn.execute(_STATS_TIMELINE, (low, size, tenant, low, high)).fetchall()
                kinds = conn.execute(_STATS_KINDS, (tenant, low, high)).fetchall()
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite query failed: {exc}") from exc
        types: dict[str, int] = {}
        agents: dict[str | None, int] = {}
        for kind, agent, count in kinds:
            types[kind] = types.get(kind, 0) + count
            agents[agent] = agents.get(agent, 0) + count
        return build_stats(
            since,
            until,
            bucket_seconds,
            buckets=[(int(i), int(n)) for i, n in timeline],
            by_type=types.items(),
            by_agent=agents.items(),
        )

    def traces(
        self, tenant: str, since: datetime, until: datetime, limit: int, agent_id: str | None
    ) -> list[TraceSummary]:
        rows = self._fetch(_TRACES, (tenant, _us(since), _us(until), agent_id, limit))
        return [
            TraceSummary(
                trace_id=trace_id,
                started=_dt(lo),
                last=_dt(hi),
                events=int(n),
                agents=trace_agents(json.loads(agents)),
                llm_calls=int(calls),
                tokens=int(tokens),
                failures=int(failures),
            )
            for trace_id, lo, hi, n, agents, calls, tokens, failures in rows
        ]

    def read_stream(
        self,
        tenant: str,
        stream: str,
        *,
        from_version: int,
        to_version: int | None,
        backwards: bool,
        limit: int,
    ) -> list[RecordedEvent]:
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE tenant = ? AND stream = ? AND stream_position >= ?"
        params: list[object] = [tenant, stream, from_version]
        if to_version is not None:
            sql += " AND stream_position <= ?"
            params.append(to_version)
        sql += f" ORDER BY stream_position {'DESC' if backwards else 'ASC'} LIMIT ?"
        return [_event(row) for row in self._fetch(sql, [*params, limit])]

    def stream_version(self, tenant: str, stream: str) -> int:
        rows = self._fetch("SELECT version FROM streams WHERE tenant = ? AND stream = ?", (tenant, stream))
        return int(rows[0][0]) if rows else 0

    def list_streams(self, tenant: str, *, prefix: str | None, after: str | None, limit: int) -> list[StreamInfo]:
        sql = "SELECT stream, version, last_position, created_at, updated_at FROM streams WHERE tenant = ?"
        params: list[object] = [tenant]
        if prefix:
            sql += " AND substr(stream, 1, ?) = ?"
            params += [len(prefix), prefix]
        if after is not None:
            sql += " AND stream > ?"
            params.append(after)
        sql += " ORDER BY stream LIMIT ?"
        rows = self._fetch(sql, [*params, limit])
        return [StreamInfo(r[0], r[1], r[2], _dt(r[3]), _dt(r[4])) for r in rows]

    def head_position(self, tenant: str) -> int:
        return int(self._fetch("SELECT coalesce(max(position), 0) FROM events WHERE tenant = ?", (tenant,))[0][0])

    def wait_for_events(self, tenant: str, after_position: int, timeout: float) -> None:
        # Appends in this process wake waiters at once; those of other processes are seen by polling.
        deadline = time.monotonic() + timeout
        while self.head_position(tenant) <= after_position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with self._appended:
                self._appended.wait(min(remaining, _POLL_SECONDS))

    def lineage(self, tenant: str, event_id: str) -> tuple[list[RecordedEvent], list[RecordedEvent]] | None:
        if self.get(tenant, event_id) is None:
            return None
        ancestors = self._fetch(_ANCESTORS, (event_id, tenant, tenant, tenant))
        descendants = self._fetch(_DESCENDANTS, (event_id, tenant, event_id, tenant))
        return [_event(r) for r in ancestors], [_event(r) for r in descendants]

    def graph(
        self, tenant: str, event_id: str, *, max_depth: int, limit: int
    ) -> tuple[list[tuple[RecordedEvent, int]], bool]:
        rows = self._fetch(
            _GRAPH,
            (
                event_id,
                tenant,
                max_depth,
                tenant,
                max_depth,
                tenant,
                max_depth,
                tenant,
                max_depth,
                tenant,
                event_id,
                tenant,
                limit + 1,
            ),
        )
        return [(_event(r[:-1]), int(r[-1])) for r in rows[:limit]], len(rows) > limit

    def save_snapshot(
        self, tenant: str, stream: str, projection: str, projection_version: int, stream_version: int, state: str
    ) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO snapshots (tenant, stream, projection, projection_version, stream_version, state, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, stream, projection) DO UPDATE SET "
                    "projection_version = excluded.projection_version, stream_version = excluded.stream_version, "
                    "state = excluded.state, created_at = excluded.created_at",
                    (tenant, stream, projection, projection_version, stream_version, state, time.time_ns() // 1000),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite snapshot failed: {exc}") from exc

    def load_snapshot(
        self, tenant: str, stream: str, projection: str, projection_version: int
    ) -> tuple[int, str] | None:
        rows = self._fetch(
            "SELECT stream_version, state FROM snapshots WHERE tenant = ? AND stream = ? AND projection = ? "
            "AND projection_version = ?",
            (tenant, stream, projection, projection_version),
        )
        return (int(rows[0][0]), rows[0][1]) if rows else None

    def get_checkpoint(self, tenant: str, consumer: str) -> int | None:
        rows = self._fetch("SELECT position FROM checkpoints WHERE tenant = ? AND consumer = ?", (tenant, consumer))
        return int(rows[0][0]) if rows else None

    def set_checkpoint(self, tenant: str, consumer: str, position: int) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO checkpoints (tenant, consumer, position, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (tenant, consumer) DO UPDATE SET position = excluded.position, "
                    "updated_at = excluded.updated_at",
                    (tenant, consumer, position, time.time_ns() // 1000),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite checkpoint failed: {exc}") from exc

    def save_token(self, token: ApiToken) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO tokens (id, tenant, scopes, secret_hash, name, created_at, expires_at, revoked_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                    (
                        token.id,
                        token.tenant,
                        " ".join(token.scopes),
                        token.secret_hash,
                        token.name,
                        _us(token.created_at),
                        None if token.expires_at is None else _us(token.expires_at),
                    ),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite token write failed: {exc}") from exc

    def find_token(self, token_id: str) -> ApiToken | None:
        rows = self._fetch(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?", (token_id,))
        return _token(rows[0]) if rows else None

    def list_tokens(self, tenant: str) -> list[ApiToken]:
        rows = self._fetch(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE tenant = ? ORDER BY created_at, id", (tenant,))
        return [_token(row) for row in rows]

    def revoke_token(self, tenant: str, token_id: str) -> bool:
        try:
            with self._write() as conn:
                cur = conn.execute(
                    "UPDATE tokens SET revoked_at = ? WHERE id = ? AND tenant = ? AND revoked_at IS NULL",
                    (time.time_ns() // 1000, token_id, tenant),
                )
                return cur.rowcount == 1
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite token write failed: {exc}") from exc

    def has_tokens(self) -> bool:
        now = time.time_ns() // 1000
        rows = self._fetch(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?))",
            (now,),
        )
        return bool(rows[0][0])

    # -- instances: each change reads and writes the row inside one write transaction (SQLite's write lock) -------
    def _change_instance(
        self, tenant: str, instance_id: str, change: Callable[[Instance], InstanceChange | None]
    ) -> InstanceChange | None:
        try:
            with self._write() as conn:
                row = conn.execute(_SELECT_INSTANCE, (tenant, instance_id)).fetchone()
                if row is None:
                    return None
                outcome = change(_instance(row))
                if outcome is not None and outcome.current is not outcome.previous:
                    conn.execute(_PUT_INSTANCE, _instance_row(outcome.current))
                return outcome
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite instance write failed: {exc}") from exc

    def register_instance(self, tenant: str, instance: Instance) -> InstanceChange:
        instance = replace(instance, tenant=tenant)
        try:
            with self._write() as conn:
                row = conn.execute(_SELECT_INSTANCE, (tenant, instance.id)).fetchone()
                conn.execute(_PUT_INSTANCE, _instance_row(instance))
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite instance write failed: {exc}") from exc
        return InstanceChange(None if row is None else _instance(row), instance)

    def heartbeat_instance(
        self, tenant: str, instance_id: str, at: datetime, *, event_every: float, data: Mapping[str, Any]
    ) -> InstanceChange | None:
        def beat(previous: Instance) -> InstanceChange:
            if previous.status == "closed":
                return InstanceChange(previous, previous)
            current, due = previous.heartbeat(at, event_every)
            return InstanceChange(previous, current, heartbeat_event=due)

        return self._change_instance(tenant, instance_id, beat)

    def close_instance(
        self, tenant: str, instance_id: str, at: datetime, *, reason: str | None
    ) -> InstanceChange | None:
        def close(previous: Instance) -> InstanceChange:
            if previous.status == "closed":
                return InstanceChange(previous, previous)
            return InstanceChange(previous, replace(previous, status="closed", closed_at=at))

        return self._change_instance(tenant, instance_id, close)

    def mark_instance_stale(self, tenant: str, instance_id: str, last_heartbeat: datetime) -> InstanceChange | None:
        def mark(previous: Instance) -> InstanceChange | None:
            if previous.status != "active" or previous.last_heartbeat != last_heartbeat:
                return None
            return InstanceChange(previous, replace(previous, status="stale"))

        return self._change_instance(tenant, instance_id, mark)

    def get_instance(self, tenant: str, instance_id: str) -> Instance | None:
        rows = self._fetch(_SELECT_INSTANCE, (tenant, instance_id))
        return _instance(rows[0]) if rows else None

    def list_instances(
        self, tenant: str, *, status: str | None, project: str | None, after: str | None, limit: int
    ) -> list[Instance]:
        sql = f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE tenant = ?"
        params: list[object] = [tenant]
        for column, value in (("status", status), ("project", project)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        if after is not None:
            sql += " AND id > ?"
            params.append(after)
        return [_instance(r) for r in self._fetch(sql + " ORDER BY id LIMIT ?", [*params, limit])]

    def silent_instances(self, tenant: str, before: datetime, limit: int) -> list[Instance]:
        sql = f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE status = 'active' AND last_heartbeat < ?"
        params: list[object] = [_us(before)]
        if tenant != "*":
            sql += " AND tenant = ?"
            params.append(tenant)
        sql += " ORDER BY last_heartbeat, tenant, id LIMIT ?"
        return [_instance(r) for r in self._fetch(sql, [*params, limit])]

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
