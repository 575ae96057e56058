"""How long ``EventLog.stats()`` (the explorer's overview, ``GET /v1/stats``) takes on a large tenant.

``python -m benchmarks.stats [--events N] [--runs R]`` loads N events of a first tenant, then N of the measured
one (default 100,000 each; 20 types, 50 agents, batches of 1,000), into a fresh SQLite file and a fresh PostgreSQL
schema, then times, median of R runs each:

- ``hour``: the default window (the last hour, 60 one-minute buckets), which holds every event of both tenants;
- ``week``: a 7-day window in hourly buckets (168), the same events;
- ``recent``: a window holding only the last 1 % of the measured tenant's events (the index range narrows the
  work);
- ``traces``, ``traces_500``, ``traces_agent``: ``EventLog.traces()`` (the explorer's Traces page, ``GET
  /v1/traces``) over the same hour, the 50 and the 500 last active of its 1,000 traces (100 events each), and the
  traces of one agent;
- ``read_all``: for scale, counting the same hour in Python from the events read page by page with ``query()``
  (what the stats replace).

The stores count with ``GROUP BY`` over the ``recorded_at`` index and never load the events, so ``hour`` should
be a small fraction of ``read_all``. Prints one JSON object; figures vary ±30 % on a shared machine, so compare
the ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import meshlog
from benchmarks.common import AGENTS, PAYLOAD, drop_schema, dsn, meshlog_pg_url, scratch_schema

TYPES = [f"bench.type{i:02d}" for i in range(18)] + ["llm.error", "task.result.failure"]


def _load(log: meshlog.EventLog, events: int) -> None:
    for start in range(0, events, 1000):
        log.emit_batch(
            [
                meshlog.NewEvent(
                    type=TYPES[i % len(TYPES)], data=PAYLOAD, agent_id=f"agent-{i % AGENTS}", trace_id=f"run-{i // 100}"
                )
                for i in range(start, min(events, start + 1000))
            ]
        )


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm caches and connections
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def _read_all(log: meshlog.EventLog, since: datetime, until: datetime) -> Counter[str]:
    counts: Counter[str] = Counter()
    page = log.query(since=since, until=until, limit=1000)
    counts.update(e.type for e in page)
    while page.has_more:
        page = log.query(cursor=page.next_cursor, limit=1000)
        counts.update(e.type for e in page)
    return counts


def measure(url: str, events: int, runs: int) -> dict[str, Any]:
    with meshlog.connect(url, tenant="bench") as log:
        started = time.perf_counter()
        _load(log.for_tenant("other"), events)
        _load(log, events)
        load_s = time.perf_counter() - started
        recent = log.query(order="desc", limit=1000, before_position=log.head_position() - events // 100 + 1)
        recent_since = recent.events[0].recorded_at
        now = datetime.now(UTC) + timedelta(seconds=1)
        hour = log.stats(until=now)
        assert hour.total == events, hour.total
        assert sum(n for _, n in hour.timeline) == events
        assert len(log.traces(until=now, limit=500)) == 500
        figures = {
            "load_s": round(load_s, 1),
            "hour_ms": _median_ms(lambda: log.stats(until=now), runs),
            "week_ms": _median_ms(
                lambda: log.stats(since=now - timedelta(days=7), until=now, bucket=timedelta(hours=1)), runs
            ),
            "recent_ms": _median_ms(lambda: log.stats(since=recent_since, until=now), runs),
            "traces_ms": _median_ms(lambda: log.traces(until=now), runs),
            "traces_500_ms": _median_ms(lambda: log.traces(until=now, limit=500), runs),
            "traces_agent_ms": _median_ms(lambda: log.traces(until=now, agent_id="agent-7"), runs),
            "read_all_ms": _median_ms(lambda: _read_all(log, now - timedelta(hours=1), now), max(1, runs // 5)),
        }
        figures["read_all_over_hour"] = round(figures["read_all_ms"] / figures["hour_ms"], 1)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    results: dict[str, Any] = {"events": args.events}
    with tempfile.TemporaryDirectory() as folder:
        results["sqlite"] = measure(f"sqlite:///{Path(folder) / 'stats.db'}?synchronous=normal", args.events, args.runs)
    schema = scratch_schema("stats")
    try:
        results["postgres"] = measure(meshlog_pg_url(dsn(), schema), args.events, args.runs)
    finally:
        drop_schema(dsn(), schema)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
