"""Bytes per event on disk, per standard payload, on SQLite and PostgreSQL, against the ~500-byte budget.

    python -m benchmarks.storage [--events 100000] [--dsn URL]

For each payload (an ``llm.call``, an ``llm.response``, a task lifecycle event, a session ``epic_started``, and
a mix of the four as a traced agent run writes them) it writes ``--events`` events into a fresh store, with the
correlation a real run carries (trace, task and agent ids, a parent for every event after a task's first,
idempotency keys on LLM calls as the tracing helpers set them, ten events per task stream), then measures:

- PostgreSQL: ``pg_table_size`` (heap and TOAST) and ``pg_indexes_size`` of every partition of ``events``, plus
  ``idempotency_keys`` and ``streams``, after ``VACUUM ANALYZE``; divided by the number of events.
- SQLite: the file's size after a WAL checkpoint, and per table and index from the ``dbstat`` table.
- The JSON Lines + gzip archive that ``meshlog retention --archive`` writes of the same events.

Prints a table and writes ``benchmarks/results/storage-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import meshlog
from meshlog.retention import open_backend, write_archive

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
BUDGET = 500
EVENTS_PER_TASK = 10
BATCH = 1000


def _llm_call(i: int) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini-2024-07-18",
        "purpose": "code-review",
        "system_prompt_length": 2841,
        "prompt_length": 1630 + i % 400,
        "tool_count": 4,
        "attempt": 1,
        "max_tokens": 1024,
        "temperature": 0.2,
        "timeout_ms": 60000,
    }


def _llm_response(i: int) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini-2024-07-18",
        "finish_reason": "tool_calls" if i % 3 == 0 else "stop",
        "duration_ms": 1284.6 + i % 900,
        "response_length": 412 + i % 700,
        "tool_call_count": 1 if i % 3 == 0 else 0,
        "tool_calls": ["run_tests"] if i % 3 == 0 else [],
        "input_tokens": 1843 + i % 400,
        "output_tokens": 312 + i % 200,
        "total_tokens": 2155 + i % 600,
    }


def _task(i: int) -> dict[str, Any]:
    if i % 2 == 0:
        return {
            "capability": "code",
            "title": f"Fix the flaky test in tests/test_api.py::test_retry_{i % 97}",
            "assignee": "api-coder",
            "attempt": 1,
            "timeout_ms": 600000,
            "depends_on": [f"task-{i - 2}"] if i > 1 else [],
        }
    return {
        "status": "succeeded",
        "success": True,
        "attempt": 1,
        "summary": "Patched the retry loop; 42 tests pass.",
        "duration_ms": 5123 + i % 3000,
        "capability": "code",
    }


def _epic(i: int) -> dict[str, Any]:
    return {
        "epic_id": f"epic-{i % 1000:03d}",
        "feature_name": "Partitioned event storage with archives",
        "estimated_hours": 8,
        "instance_id": "odin3-ps",
    }


PAYLOADS: dict[str, tuple[str, Callable[[int], dict[str, Any]]]] = {
    "llm.call": ("llm.call", _llm_call),
    "llm.response": ("llm.response", _llm_response),
    "task lifecycle": ("task.dispatched", _task),
    "epic_started": ("epic_started", _epic),
}


def _events(kind: str, count: int, run: str) -> list[meshlog.NewEvent]:
    """``count`` events of one payload kind (or ``mix``), ten per task stream, chained by parent ids."""
    kinds = list(PAYLOADS) if kind == "mix" else [kind]
    events: list[meshlog.NewEvent] = []
    parent: str | None = None
    for i in range(count):
        label = kinds[i % len(kinds)]
        event_type, make = PAYLOADS[label]
        if label == "task lifecycle" and i % 2:
            event_type = "task.result"
        task = f"{run}-{i // EVENTS_PER_TASK}"
        if i % EVENTS_PER_TASK == 0:
            parent = None
        event_id = meshlog.uuid7()
        events.append(
            meshlog.NewEvent(
                type=event_type,
                data=make(i),
                id=event_id,
                trace_id=f"{run}-trace-{i // 1000}",
                task_id=task,
                agent_id=f"agent-{i % 50}",
                parent_id=parent,
                idempotency_key=f"call-{uuid.uuid4()}" if event_type == "llm.call" else None,
            )
        )
        parent = event_id
    return events


def _fill(url: str, events: list[meshlog.NewEvent]) -> float:
    started = time.perf_counter()
    with meshlog.connect(url) as log:
        for start in range(0, len(events), BATCH):
            log.emit_batch(events[start : start + BATCH])
    return time.perf_counter() - started


def _archive(url: str, count: int, directory: Path) -> dict[str, float]:
    """Archive every event of the store as retention would (JSON Lines + gzip, each file verified)."""
    backend = open_backend(url)
    size = 0
    try:
        plan = backend.plan(datetime(9999, 1, 1, tzinfo=UTC))
        started = time.perf_counter()
        for chunk in plan.expired:
            if chunk.count:
                manifest, _ = write_archive(backend, chunk, directory, "jsonl.gz")
                size += manifest.size_bytes
        seconds = time.perf_counter() - started
    finally:
        backend.close()
    assert sum(c.count for c in plan.expired) == count
    return {"bytes_per_event": size / count, "events_per_second": count / seconds}


def _postgres(dsn: str, kind: str, events: list[meshlog.NewEvent], directory: Path) -> dict[str, Any]:
    schema = f"bench_storage_{uuid.uuid4().hex[:8]}"
    url = f"{dsn}?schema={schema}"
    try:
        seconds = _fill(url, events)
        with psycopg.connect(dsn, autocommit=True) as conn:
            ident = sql.Identifier(schema)
            conn.execute(sql.SQL("VACUUM ANALYZE {}.events").format(ident))
            row = conn.execute(
                "SELECT coalesce(sum(pg_table_size(relid)), 0), coalesce(sum(pg_indexes_size(relid)), 0) "
                "FROM pg_partition_tree(%s::regclass) WHERE isleaf",
                (f"{schema}.events",),
            ).fetchone()
            assert row is not None
            heap, indexes = int(row[0]), int(row[1])
            keys = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (f"{schema}.idempotency_keys",))
            streams = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (f"{schema}.streams",))
            keys_bytes = int((keys.fetchone() or (0,))[0])
            streams_bytes = int((streams.fetchone() or (0,))[0])
        n = len(events)
        archive = _archive(url, n, directory / f"pg-{kind.replace(' ', '-')}")
        return {
            "events_table": heap / n,
            "events_indexes": indexes / n,
            "idempotency_keys": keys_bytes / n,
            "streams": streams_bytes / n,
            "total": (heap + indexes + keys_bytes + streams_bytes) / n,
            "archive_jsonl_gz": archive["bytes_per_event"],
            "archive_events_per_second": archive["events_per_second"],
            "fill_seconds": seconds,
        }
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _sqlite(kind: str, events: list[meshlog.NewEvent], directory: Path) -> dict[str, Any]:
    path = directory / f"{kind.replace(' ', '-')}.db"
    seconds = _fill(f"sqlite:///{path}", events)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    n = len(events)
    by_name = {name: int(size) for name, size in rows}
    table = by_name.get("events", 0)
    index_bytes = sum(size for name, size in by_name.items() if name in indexes and "events" in name)
    archive = _archive(f"sqlite:///{path}", n, directory / f"sqlite-{kind.replace(' ', '-')}")
    return {
        "events_table": table / n,
        "events_indexes": index_bytes / n,
        "streams": by_name.get("streams", 0) / n,
        "total": path.stat().st_size / n,
        "archive_jsonl_gz": archive["bytes_per_event"],
        "archive_events_per_second": archive["events_per_second"],
        "fill_seconds": seconds,
    }


def _payload_bytes(kind: str, events: list[meshlog.NewEvent]) -> float:
    sample = events[: min(len(events), 1000)]
    return sum(len(json.dumps(e.data, separators=(",", ":")).encode()) for e in sample) / len(sample)


def run(count: int, dsn: str, stores: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [*PAYLOADS, "mix"]:
            events = _events(kind, count, uuid.uuid4().hex[:8])
            out[kind] = {"payload_bytes": _payload_bytes(kind, events)}
            if "sqlite" in stores:
                out[kind]["sqlite"] = _sqlite(kind, events, Path(tmp))
            if "postgres" in stores:
                out[kind]["postgres"] = _postgres(dsn, kind, events, Path(tmp))
            print(f"  {kind}: done", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args()
    results = run(args.events, args.dsn, args.stores.split(","))
    print(f"bytes per event at {args.events:,} events (budget {BUDGET})")
    header = f"{'payload':<16} {'json':>6} {'store':<10} {'table':>7} {'indexes':>8} {'keys':>6} {'total':>7} "
    print(header + f"{'archive':>8} {'budget':>7}")
    for kind, figures in results.items():
        for store in ("sqlite", "postgres"):
            if store not in figures:
                continue
            f = figures[store]
            verdict = "PASS" if f["total"] <= BUDGET else "OVER"
            print(
                f"{kind:<16} {figures['payload_bytes']:>6.0f} {store:<10} {f['events_table']:>7.0f} "
                f"{f['events_indexes']:>8.0f} {f.get('idempotency_keys', 0):>6.0f} {f['total']:>7.0f} "
                f"{f['archive_jsonl_gz']:>8.0f} {verdict:>7}"
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "storage-latest.json").write_text(json.dumps({"events": args.events, "results": results}, indent=2))


if __name__ == "__main__":
    main()
