"""Events per second of ``emit_batch`` by the shape of the events: what idempotency keys, caller-given ids and
parents cost each store.

    python -m benchmarks.append_shapes [--events 20000] [--batch 500] [--rounds 3] [--dsn URL] [--no-postgres]

The events are the ones the tracing writer sends: spread over traces of ten events (each trace its own stream,
``trace:<id>``), written in batches of ``--batch``. Four shapes, each adding to the one before:

- ``plain``: type, data and trace id; the store gives the ids;
- ``keys``: with an idempotency key per event;
- ``keys+ids``: with a caller-given id (UUIDv7) too, as the tracing helpers fix ids before queueing;
- ``keys+ids+parents``: with a parent too (an earlier event of its trace) for every event but a trace's first,
  marked ``external_parent`` as the tracing helpers do; about two parents in five are in an earlier batch.

Each shape writes ``--events`` events into a fresh PostgreSQL schema and a fresh SQLite file (as a new store, or
a new month's partition, starts), the events built before the clock starts; ``--rounds`` rounds alternate the
shapes, and the median round is reported with the p50 and max time of one batch. Prints a table and writes
``benchmarks/results/append-shapes-latest.json``. Figures vary ±30 % on a shared machine: compare the shapes
within one run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import meshlog
from benchmarks.common import drop_schema, dsn, meshlog_pg_url, percentile, scratch_schema
from meshlog import NewEvent
from meshlog.events import uuid7

RESULTS = Path(__file__).resolve().parent / "results" / "append-shapes-latest.json"
SHAPES = ("plain", "keys", "keys+ids", "keys+ids+parents")
TRACE_EVENTS = 10
CONCURRENT_TRACES = 80
"""Traces in progress at once: their events interleave, so a trace spans batch boundaries."""


def build_events(shape: str, count: int, seed: int = 7) -> list[NewEvent]:
    """``count`` events of ``shape``: traces of ``TRACE_EVENTS`` events, ``CONCURRENT_TRACES`` interleaved."""
    rng = random.Random(seed)
    keys = shape != "plain"
    ids = shape in ("keys+ids", "keys+ids+parents")
    parents = shape == "keys+ids+parents"
    open_traces: list[tuple[str, list[str]]] = []
    events: list[NewEvent] = []
    while len(events) < count:
        if len(open_traces) < CONCURRENT_TRACES:
            open_traces.append((uuid.uuid4().hex, []))
            continue
        slot = rng.randrange(len(open_traces))
        trace_id, written = open_traces[slot]
        event_id = uuid7()
        parent = rng.choice(written) if parents and written else None
        events.append(
            NewEvent(
                type="span.start",
                data={"name": f"step-{len(events)}", "attempt": 1},
                trace_id=trace_id,
                id=event_id if ids else None,
                idempotency_key=f"trace:{event_id}" if keys else None,
                parent_id=parent,
                external_parent=parent is not None,
            )
        )
        written.append(event_id)
        if len(written) == TRACE_EVENTS:
            open_traces.pop(slot)
    return events


def write(log: meshlog.EventLog, events: list[NewEvent], batch: int) -> dict[str, float]:
    seconds: list[float] = []
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        began = time.perf_counter()
        log.emit_batch(chunk)
        seconds.append(time.perf_counter() - began)
    total = sum(seconds)
    return {
        "events_per_s": round(len(events) / total),
        "batch_p50_ms": round(percentile(seconds, 50) * 1000, 1),
        "batch_max_ms": round(max(seconds) * 1000, 1),
    }


def postgres_store(url: str) -> Callable[[], tuple[meshlog.EventLog, Callable[[], None]]]:
    def open_store() -> tuple[meshlog.EventLog, Callable[[], None]]:
        schema = scratch_schema("shapes")
        log = meshlog.connect(meshlog_pg_url(url, schema))

        def cleanup() -> None:
            log.close()
            drop_schema(url, schema)

        return log, cleanup

    return open_store


def sqlite_store(folder: Path) -> Callable[[], tuple[meshlog.EventLog, Callable[[], None]]]:
    def open_store() -> tuple[meshlog.EventLog, Callable[[], None]]:
        path = folder / f"shapes-{uuid.uuid4().hex[:8]}.db"
        log = meshlog.connect(f"sqlite:///{path}")

        def cleanup() -> None:
            log.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

        return log, cleanup

    return open_store


def measure(
    open_store: Callable[[], tuple[meshlog.EventLog, Callable[[], None]]], events: int, batch: int, rounds: int
) -> dict[str, dict[str, Any]]:
    runs: dict[str, list[dict[str, float]]] = {shape: [] for shape in SHAPES}
    for round_ in range(rounds):
        # Alternate the order, so that a slow stretch of the machine does not always hit the same shape.
        order = SHAPES if round_ % 2 == 0 else tuple(reversed(SHAPES))
        for shape in order:
            built = build_events(shape, events)
            log, cleanup = open_store()
            try:
                runs[shape].append(write(log, built, batch))
            finally:
                cleanup()
    out: dict[str, dict[str, Any]] = {}
    for shape, results in runs.items():
        median = statistics.median_low(r["events_per_s"] for r in results)
        chosen = next(r for r in results if r["events_per_s"] == median)
        out[shape] = {**chosen, "rounds": [r["events_per_s"] for r in results]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events per shape and round")
    parser.add_argument("--batch", type=int, default=500, help="events per emit_batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn", default=dsn(), help="PostgreSQL server (default $MESHLOG_BENCH_DSN or local)")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"events": args.events, "batch": args.batch, "rounds": args.rounds}
    stores: list[tuple[str, Callable[[], tuple[meshlog.EventLog, Callable[[], None]]]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_postgres:
            stores.append(("postgres", postgres_store(args.dsn)))
        stores.append(("sqlite", sqlite_store(Path(tmp))))
        print(f"{'store':<10} {'shape':<18} {'events/s':>9} {'batch p50':>10} {'batch max':>10}  rounds")
        for name, open_store in stores:
            results[name] = measure(open_store, args.events, args.batch, args.rounds)
            for shape, r in results[name].items():
                print(
                    f"{name:<10} {shape:<18} {r['events_per_s']:>9,} {r['batch_p50_ms']:>8} ms "
                    f"{r['batch_max_ms']:>7} ms  {r['rounds']}"
                )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
