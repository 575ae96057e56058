"""The COPY ceiling: how fast PostgreSQL takes meshlog's rows when nothing but ``COPY ... FROM STDIN`` runs.

The rows are the ones meshlog writes for the batch benchmark (same columns, same payload, one UUIDv7 and one
serialized payload made per row inside the timed code), copied with psycopg's ``cursor.copy`` into a plain
(unpartitioned) table with meshlog's columns, checks, primary key and secondary indexes, without meshlog's
append function, stream table, advisory lock or notification.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from psycopg import sql

import meshlog
from benchmarks.common import AGENTS, EVENT_TYPE, PAYLOAD, create_schema, drop_schema, scratch_schema, throughput

_TABLE: Final = """
CREATE TABLE {table} (
    position        bigint      NOT NULL,
    recorded_at     timestamptz NOT NULL,
    id              uuid        NOT NULL,
    tenant          text        NOT NULL,
    stream          text        NOT NULL,
    stream_position bigint      NOT NULL,
    type            text        NOT NULL,
    version         integer     NOT NULL,
    data            jsonb       NOT NULL CHECK (jsonb_typeof(data) = 'object'),
    metadata        jsonb       NOT NULL CHECK (jsonb_typeof(metadata) = 'object'),
    trace_id        text,
    task_id         text,
    agent_id        text,
    parent_id       uuid,
    root_id         uuid        NOT NULL,
    depth           integer     NOT NULL,
    related         uuid[],
    idempotency_key text,
    occurred_at     timestamptz,
    PRIMARY KEY (position, recorded_at)
)
"""
_INDEXES: Final = (
    "CREATE INDEX ON {table} (tenant, position)",
    "CREATE INDEX ON {table} (id)",
    "CREATE INDEX ON {table} (tenant, stream, stream_position)",
    "CREATE INDEX ON {table} (tenant, type, position)",
    "CREATE INDEX ON {table} (tenant, trace_id, position) WHERE trace_id IS NOT NULL",
    "CREATE INDEX ON {table} (tenant, task_id, position) WHERE task_id IS NOT NULL",
    "CREATE INDEX ON {table} (tenant, agent_id, position) WHERE agent_id IS NOT NULL",
    "CREATE INDEX ON {table} (parent_id) WHERE parent_id IS NOT NULL",
    "CREATE INDEX ON {table} USING brin (recorded_at)",
)
COLUMNS: Final = (
    "position, recorded_at, id, tenant, stream, stream_position, type, version, data, metadata, trace_id, "
    "task_id, agent_id, parent_id, root_id, depth, related, idempotency_key, occurred_at"
)


def create_plain_table(conn: psycopg.Connection[Any], table: sql.Composable) -> None:
    conn.execute(sql.SQL(_TABLE).format(table=table))
    for index in _INDEXES:
        conn.execute(sql.SQL(index).format(table=table))


def make_rows(stream: str, after_position: int, count: int) -> list[tuple[object, ...]]:
    """``count`` rows as meshlog writes them for one batch: positions after ``after_position``, one stream,
    agents round-robin, one ``recorded_at`` per batch, a fresh UUIDv7 and a freshly serialized payload each."""
    now = datetime.now(UTC)
    rows: list[tuple[object, ...]] = []
    for i in range(count):
        position = after_position + i + 1
        event_id = meshlog.uuid7()
        data = json.dumps(PAYLOAD, separators=(",", ":"))
        rows.append(
            (
                position,
                now,
                event_id,
                "default",
                stream,
                position,
                EVENT_TYPE,
                1,
                data,
                "{}",
                None,
                stream,
                f"agent-{i % AGENTS}",
                None,
                event_id,
                0,
                None,
                None,
                None,
            )
        )
    return rows


class _Rows:
    """Consecutive batches of rows of one stream."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.position = 0

    def make(self, count: int) -> list[tuple[object, ...]]:
        rows = make_rows(self.stream, self.position, count)
        self.position += count
        return rows


def _copy(conn: psycopg.Connection[Any], statement: sql.Composed, rows: list[tuple[object, ...]]) -> None:
    with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def run_copy_ceiling(dsn: str, *, batches: int, batch_size: int, warmup: int) -> dict[str, dict[str, float]]:
    """COPY in transactions of ``batch_size`` rows, then all rows in one COPY, each into a fresh table."""
    schema = scratch_schema("copy")
    create_schema(dsn, schema)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            batched = sql.Identifier(schema, "events")
            single = sql.Identifier(schema, "events_single_copy")
            create_plain_table(conn, batched)
            create_plain_table(conn, single)
            into_batched = sql.SQL("COPY {} (" + COLUMNS + ") FROM STDIN").format(batched)
            into_single = sql.SQL("COPY {} (" + COLUMNS + ") FROM STDIN").format(single)

            rows = _Rows("batch-0")
            for _ in range(max(1, warmup // 10)):
                _copy(conn, into_batched, rows.make(batch_size))
            started = time.perf_counter()
            for _ in range(batches):
                _copy(conn, into_batched, rows.make(batch_size))
            batched_seconds = time.perf_counter() - started

            total = batches * batch_size
            started = time.perf_counter()
            _copy(conn, into_single, _Rows("batch-0").make(total))
            single_seconds = time.perf_counter() - started
    finally:
        drop_schema(dsn, schema)
    return {
        "batches": {**throughput(batches * batch_size, batched_seconds), "batch_size": float(batch_size)},
        "single_copy": throughput(total, single_seconds),
    }
