"""Where the time of meshlog's PostgreSQL appends and reads goes (the figures docs/benchmarks.md reasons with).

``python -m benchmarks.breakdown`` (or ``python -m benchmarks.run --only breakdown``) measures, each in a
fresh schema:

- ``emit``: the round trip of ``SELECT 1``; a one-row ``INSERT`` + commit into a plain table with meshlog's
  columns and indexes (the floor of a durable single-event append); ``emit()``; and the server's execution
  time of meshlog's ``append()`` function (``pg_stat_user_functions``, with ``track_functions = 'pl'``).
- ``group``: single emits from 8 threads through a store wrapper that records each ``append`` call: how
  many requests a group commit carries, and what the server spends per call and per request.
- ``batch``: ``emit_batch`` of 100 against the server's time in ``append()``.
- ``read``: reading the stream with ``read_stream`` against the same page queries issued with psycopg
  directly, with ``data`` and ``metadata`` decoded from ``jsonb`` and fetched as text, and the server's
  execution time of one page (``EXPLAIN ANALYZE``).

Only public interfaces are used: ``meshlog.EventLog`` over ``meshlog.stores.open_store``, and SQL on the
documented ``<schema>.events`` table. Function statistics need a superuser (``track_functions``); without
one those figures are left out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import psycopg
from psycopg import sql

import meshlog
from benchmarks.common import (
    AGENTS,
    EVENT_TYPE,
    PAYLOAD,
    Sizes,
    drop_schema,
    dsn,
    meshlog_pg_url,
    scratch_schema,
)
from benchmarks.copy_ceiling import COLUMNS, create_plain_table, make_rows
from meshlog.store import Store
from meshlog.stores import open_store

Figures = dict[str, float]
_READ_COLUMNS = (
    "position, id::text, tenant, stream, stream_position, type, version, {data}, {metadata}, trace_id, "
    "task_id, agent_id, parent_id::text, root_id::text, depth, related::text[], idempotency_key, occurred_at, "
    "recorded_at"
)


def _ms(seconds: Sequence[float], q: float = 50) -> float:
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] * 1000.0


def _timed(fn: Callable[[], object], runs: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


class _RecordingStore:
    """Delegates to a store and records each ``append`` call: its number of requests and its duration."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: list[tuple[int, float]] = []

    def append(self, requests: Sequence[Any]) -> list[Any]:
        started = time.perf_counter()
        try:
            return self._store.append(requests)
        finally:
            self.calls.append((len(requests), time.perf_counter() - started))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@contextmanager
def _log(url: str, schema: str, *, track: bool) -> Iterator[tuple[meshlog.EventLog, _RecordingStore]]:
    # PGOPTIONS, not an ``options=`` URL parameter: meshlog rebuilds the URL's query string without
    # re-encoding it, so a value holding "=" or a space does not survive.
    saved = os.environ.get("PGOPTIONS")
    if track:
        os.environ["PGOPTIONS"] = "-c track_functions=pl"
    try:
        store = _RecordingStore(open_store(meshlog_pg_url(url, schema)))
        log = meshlog.EventLog(cast(Store, store))
        try:
            log.migrate()
            yield log, store
        finally:
            log.close()
    finally:
        if saved is None:
            os.environ.pop("PGOPTIONS", None)
        else:
            os.environ["PGOPTIONS"] = saved


def _can_track(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def _function_stats(url: str, schema: str, expect_calls: int) -> dict[str, Figures]:
    """Per function of ``schema``: calls, total and self time (ms). Waits for the closed sessions' stats."""
    deadline = time.monotonic() + 5.0
    stats: dict[str, Figures] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            rows = conn.execute(
                "SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions WHERE schemaname = %s",
                (schema,),
            ).fetchall()
            stats = {r[0]: {"calls": float(r[1]), "total_ms": float(r[2]), "self_ms": float(r[3])} for r in rows}
            if stats.get("append", {}).get("calls", 0.0) >= expect_calls:
                break
            time.sleep(0.2)
    return stats


def _per_call(stats: dict[str, Figures], name: str) -> float:
    entry = stats.get(name)
    if not entry or not entry["calls"]:
        return float("nan")
    return entry["total_ms"] / entry["calls"]


def _interleaved(
    steps: dict[str, tuple[Callable[[], Any], Callable[[Any], object]]], runs: int, warmup: int = 20
) -> dict[str, list[float]]:
    """Time each step's ``run(prepare())`` (``prepare`` untimed), the steps taking turns, so that a burst of
    noise on the machine hits all of them alike."""
    for _ in range(warmup):
        for prepare, run in steps.values():
            run(prepare())
    out: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(runs):
        for name, (prepare, run) in steps.items():
            arg = prepare()
            started = time.perf_counter()
            run(arg)
            out[name].append(time.perf_counter() - started)
    return out


def _event_json(stream: str, agent: str, task: str | None) -> str:
    """One event as meshlog's client encodes it for the append function."""
    head: dict[str, Any] = {"id": meshlog.uuid7(), "s": stream, "t": EVENT_TYPE, "v": 1, "ag": agent}
    if task is not None:
        head["tk"] = task
    encoded = json.dumps(head, separators=(",", ":"))
    return f'{encoded[:-1]},"d":{json.dumps(PAYLOAD, separators=(",", ":"))},"m":{{}}}}'


def _request_json(events: Sequence[str]) -> str:
    return '{"tn":"default","e":[' + ",".join(events) + "]}"


def _append_sql(schema: str) -> sql.Composed:
    return sql.SQL("SELECT {}.append(%s::jsonb)").format(sql.Identifier(schema))


def _nothing() -> None:
    return None


def emit_parts(url: str, runs: int, track: bool) -> Figures:
    """One event per transaction: a plain INSERT, meshlog's append() called directly, and emit(), in turns."""
    schema = scratch_schema("bd_emit")
    try:
        with _log(url, schema, track=track) as (log, _), psycopg.connect(url, autocommit=True) as conn:
            table = sql.Identifier(schema, "plain")
            create_plain_table(conn, table)
            insert = sql.SQL("INSERT INTO {} (" + COLUMNS + ") VALUES (" + ", ".join(["%s"] * 19) + ")").format(table)
            append = _append_sql(schema)
            counter = [0]

            def plain_row() -> tuple[object, ...]:
                counter[0] += 1
                return make_rows("plain", counter[0], 1)[0]

            def direct_payload() -> str:
                return "[" + _request_json([_event_json("writer-0", "agent-0", "task-0")]) + "]"

            times = _interleaved(
                {
                    "select1": (_nothing, lambda _: conn.execute("SELECT 1").fetchone()),
                    "plain": (plain_row, lambda row: conn.execute(insert, row)),
                    "direct": (direct_payload, lambda payload: conn.execute(append, (payload,)).fetchone()),
                    "emit": (
                        _nothing,
                        lambda _: log.emit(
                            EVENT_TYPE, PAYLOAD, stream="writer-0", agent_id="agent-0", task_id="task-0"
                        ),
                    ),
                },
                runs,
            )
        stats = _function_stats(url, schema, 2 * runs) if track else {}
    finally:
        drop_schema(url, schema)
    return {
        "select1_p50_ms": _ms(times["select1"]),
        "plain_insert_commit_p50_ms": _ms(times["plain"]),
        "plain_insert_commit_p99_ms": _ms(times["plain"], 99),
        "append_sql_p50_ms": _ms(times["direct"]),
        "append_sql_p99_ms": _ms(times["direct"], 99),
        "emit_p50_ms": _ms(times["emit"]),
        "emit_p99_ms": _ms(times["emit"], 99),
        "server_append_fn_ms": _per_call(stats, "append"),
    }


def group_parts(url: str, writers: int, per_writer: int, track: bool) -> Figures:
    schema = scratch_schema("bd_group")
    try:
        with _log(url, schema, track=track) as (log, store):
            barrier = threading.Barrier(writers + 1)

            def work(writer: int) -> None:
                barrier.wait()
                for _ in range(per_writer):
                    log.emit(
                        EVENT_TYPE,
                        PAYLOAD,
                        stream=f"writer-{writer}",
                        agent_id=f"agent-{writer}",
                        task_id=f"task-{writer}",
                    )

            threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
            for thread in threads:
                thread.start()
            barrier.wait()
            started = time.perf_counter()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            calls = list(store.calls)
        stats = _function_stats(url, schema, len(calls)) if track else {}
    finally:
        drop_schema(url, schema)
    sizes = [n for n, _ in calls]
    seconds = [s for _, s in calls]
    histogram = Counter(sizes)
    figures: Figures = {
        "events": float(sum(sizes)),
        "events_per_s": sum(sizes) / elapsed,
        "append_calls": float(len(calls)),
        "mean_group": statistics.mean(sizes),
        "append_call_p50_ms": _ms(seconds),
        "time_in_append_share": sum(seconds) / elapsed,
        "server_append_fn_ms": _per_call(stats, "append"),
        "server_per_request_ms": _per_call(stats, "append_request"),
    }
    for size in range(1, writers + 1):
        figures[f"groups_of_{size}"] = float(histogram.get(size, 0))
    return figures


def group_sizes(url: str, runs: int, max_group: int) -> Figures:
    """One ``append()`` call carrying k single-event requests vs one request carrying k events (server view).

    Issued as plain SQL through one psycopg connection with the JSON meshlog's client sends, so it shows what
    the server does with a group, independently of how the client forms groups.
    """
    schema = scratch_schema("bd_gsize")
    figures: Figures = {}
    try:
        with _log(url, schema, track=False):
            pass
        with psycopg.connect(url, autocommit=True) as conn:
            call = _append_sql(schema)

            def single(w: int) -> str:
                return _event_json(f"writer-{w}", f"agent-{w}", f"task-{w}")

            def requests(k: int) -> Callable[[], str]:
                return lambda: "[" + ",".join(_request_json([single(w)]) for w in range(k)) + "]"

            def one_request(k: int) -> Callable[[], str]:
                return lambda: "[" + _request_json([single(w) for w in range(k)]) + "]"

            def run(payload: str) -> object:
                return conn.execute(call, (payload,)).fetchone()

            k = 1
            while k <= max_group:
                times = _interleaved({"many": (requests(k), run), "one": (one_request(k), run)}, runs)
                figures[f"{k}_requests_p50_ms"] = _ms(times["many"])
                figures[f"1_request_of_{k}_p50_ms"] = _ms(times["one"])
                k *= 2
    finally:
        drop_schema(url, schema)
    return figures


def batch_parts(url: str, batches: int, batch_size: int, track: bool) -> Figures:
    """``emit_batch`` of ``batch_size`` events against meshlog's append() called directly with the same
    (pre-encoded) events, in turns."""
    schema = scratch_schema("bd_batch")
    try:
        with _log(url, schema, track=track) as (log, _), psycopg.connect(url, autocommit=True) as conn:
            append = _append_sql(schema)

            def events() -> list[meshlog.NewEvent]:
                return [
                    meshlog.NewEvent(
                        type=EVENT_TYPE, data=PAYLOAD, stream="batch-0", agent_id=f"agent-{i % AGENTS}", task_id="b"
                    )
                    for i in range(batch_size)
                ]

            def direct_payload() -> str:
                encoded = [_event_json("batch-1", f"agent-{i % AGENTS}", "b") for i in range(batch_size)]
                return "[" + _request_json(encoded) + "]"

            times = _interleaved(
                {
                    "emit_batch": (events, log.emit_batch),
                    "direct": (direct_payload, lambda payload: conn.execute(append, (payload,)).fetchone()),
                },
                batches,
                warmup=5,
            )
        stats = _function_stats(url, schema, 2 * batches) if track else {}
    finally:
        drop_schema(url, schema)
    server = _per_call(stats, "append")
    p50 = _ms(times["emit_batch"])
    direct = _ms(times["direct"])
    return {
        "batch_size": float(batch_size),
        "emit_batch_p50_ms": p50,
        "append_sql_p50_ms": direct,
        "server_append_fn_ms": server,
        "client_us_per_event": (p50 - direct) * 1000.0 / batch_size,
        "server_us_per_event": server * 1000.0 / batch_size,
        "call_outside_fn_us_per_event": (direct - server) * 1000.0 / batch_size,
    }


def read_parts(url: str, events: int, runs: int) -> Figures:
    schema = scratch_schema("bd_read")
    page = 1000
    try:
        with _log(url, schema, track=False) as (log, _):
            for start in range(0, events, page):
                log.emit_batch(
                    [
                        meshlog.NewEvent(type=EVENT_TYPE, data=PAYLOAD, stream="read", agent_id="agent-0")
                        for _ in range(min(page, events - start))
                    ]
                )
            meshlog_read = _timed(lambda: sum(1 for _ in log.read_stream("read")), runs, warmup=1)
            with psycopg.connect(url, autocommit=True) as conn:
                table = sql.Identifier(schema, "events")

                def query(data: str, metadata: str) -> sql.Composed:
                    return sql.SQL(
                        "SELECT "
                        + _READ_COLUMNS.format(data=data, metadata=metadata)
                        + " FROM {} WHERE tenant = 'default' AND stream = 'read' AND stream_position >= %s"
                        " ORDER BY stream_position LIMIT %s"
                    ).format(table)

                decoded = query("data", "metadata")
                as_text = query("data::text", "metadata::text")

                def pages(q: sql.Composed) -> int:
                    n = 0
                    for low in range(1, events + 1, page):
                        n += len(conn.execute(q, (low, page)).fetchall())
                    return n

                jsonb_times = _timed(lambda: pages(decoded), runs, warmup=1)
                text_times = _timed(lambda: pages(as_text), runs, warmup=1)
                plan = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + decoded, (1, page)).fetchone()
                server_page_ms = float(plan[0][0]["Execution Time"]) if plan else float("nan")
            texts = [json.dumps(PAYLOAD, separators=(",", ":"))] * events
            loads = _timed(lambda: [json.loads(t) for t in texts], runs, warmup=1)
    finally:
        drop_schema(url, schema)
    return {
        "events": float(events),
        "read_stream_p50_ms": _ms(meshlog_read),
        "psycopg_pages_jsonb_p50_ms": _ms(jsonb_times),
        "psycopg_pages_text_p50_ms": _ms(text_times),
        "server_exec_all_pages_ms": server_page_ms * -(-events // page),
        "json_loads_payloads_p50_ms": _ms(loads),
    }


def breakdown(url: str, sizes: Sizes, stores: Sequence[str] = ("postgres",)) -> dict[str, Figures]:
    """Every part, on PostgreSQL (``stores`` is accepted for the runner's sake)."""
    if "postgres" not in stores:
        return {}
    track = _can_track(url)
    runs = max(100, sizes.single_events // 3)
    return {
        "emit": emit_parts(url, runs, track),
        "group": group_parts(url, sizes.writers, max(20, sizes.writer_events // sizes.rounds), track),
        "group_sizes": group_sizes(url, max(50, runs // 4), sizes.writers),
        "batch": batch_parts(url, max(20, sizes.batches // 3), sizes.batch_size, track),
        "read": read_parts(url, sizes.stream_events, max(3, sizes.read_runs)),
    }


def main() -> None:
    from benchmarks.common import FULL, QUICK

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dsn", default=None)
    args = parser.parse_args()
    print(json.dumps(breakdown(args.dsn or dsn(), QUICK if args.quick else FULL), indent=2))


if __name__ == "__main__":
    main()
