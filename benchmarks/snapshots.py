"""Replay of a long session stream, with and without snapshots.

    python -m benchmarks.snapshots [--events 100000] [--dsn URL]

Fills one stream per store with realistic session events (epics, tests, commits, deployments), then replays it
through ``meshlog.session.SessionState``: from version 1 every time, and with ``snapshot_every`` so that the
replay starts from the last snapshot. Prints a table and writes ``benchmarks/results/snapshots-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import meshlog
from meshlog.session import SessionState

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _session_events(count: int, stream: str) -> list[meshlog.NewEvent]:
    """A long agent session: mostly heartbeats, context updates and test runs, with an epic every 200 events
    (its start, commits, a deployment, a checkpoint and its completion)."""
    cycle: list[tuple[str, dict[str, Any]]] = [
        ("epic_started", {"epic_id": "epic-{n}", "feature_name": "feature {n}", "estimated_hours": 8}),
    ]
    for step in range(196):
        if step % 4 == 0:
            cycle.append(("test_passed", {"epic_id": "epic-{n}", "test_type": "unit", "passed_count": 40}))
        elif step % 4 == 1:
            cycle.append(("context_window_updated", {"context_percent": 42}))
        elif step % 20 == 2:
            cycle.append(("commit_created", {"hash": "c{n}", "message": "feat: step {n}", "files_changed": 3}))
        else:
            cycle.append(("instance_heartbeat", {"instance_id": "odin3-ps"}))
    cycle += [
        ("deployment_started", {"service": "api", "port": 8081}),
        ("deployment_completed", {"service": "api", "port": 8081, "health_status": "healthy"}),
        ("epic_completed", {"epic_id": "epic-{n}", "duration_hours": 7.5, "tests_passed": 40}),
    ]
    events = []
    for i in range(count):
        event_type, template = cycle[i % len(cycle)]
        n = i // len(cycle)
        data = {k: v.format(n=n) if isinstance(v, str) else v for k, v in template.items()}
        events.append(meshlog.NewEvent(type=event_type, data=data, stream=stream))
    return events


def _measure(log: meshlog.EventLog, stream: str, runs: int, snapshot_every: int | None) -> dict[str, float]:
    times = []
    replayed = 0
    for _ in range(runs):
        started = time.perf_counter()
        result = log.replay(stream, SessionState(), snapshot_every=snapshot_every)
        times.append(time.perf_counter() - started)
        replayed = result.events_replayed
    return {"median_ms": statistics.median(times) * 1000, "events_replayed": float(replayed)}


def run(events: int, dsn: str, runs: int) -> dict[str, dict[str, dict[str, float]]]:
    schema = f"bench_snap_{uuid.uuid4().hex[:8]}"
    out: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": f"sqlite:///{tmp}/snap.db", "postgres": f"{dsn}?schema={schema}"}
        try:
            for name, url in urls.items():
                with meshlog.connect(url) as log:
                    stream = "instance:long-session"
                    batch = _session_events(events, stream)
                    for start in range(0, events, 1000):
                        log.emit_batch(batch[start : start + 1000])
                    out[name] = {
                        "without": _measure(log, stream, runs, None),
                        "first with snapshots": _measure(log, stream, 1, 1000),
                        "with snapshots": _measure(log, stream, runs, 1000),
                    }
                    # a few more events after the snapshot: what a resume typically reads
                    log.emit_batch([meshlog.NewEvent(type="test_failed", data={"failed_count": 1}, stream=stream)] * 20)
                    out[name]["20 events after the snapshot"] = _measure(log, stream, runs, 1000)
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    args = parser.parse_args()
    results = run(args.events, args.dsn, args.runs)
    print(f"replay of a {args.events:,}-event session stream through SessionState (median of {args.runs})")
    print(f"{'store':<10} {'case':<30} {'ms':>10} {'events read':>12}")
    for store, cases in results.items():
        for case, figures in cases.items():
            print(f"{store:<10} {case:<30} {figures['median_ms']:>10.1f} {int(figures['events_replayed']):>12,}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "snapshots-latest.json").write_text(json.dumps({"events": args.events, "results": results}, indent=2))


if __name__ == "__main__":
    main()
