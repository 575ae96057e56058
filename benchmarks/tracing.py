"""Benchmark meshlog's tracing: what a traced LLM call costs the caller, and how fast the background writer goes.

    python -m benchmarks.tracing                 # about a minute
    python -m benchmarks.tracing --calls 500     # quicker

1. **Added latency of a traced call.** The real ``openai`` client calls the local fake model server
   (tests/fake_llm.py) over HTTP, alternately untraced and traced (``meshlog.tracing.instrument``, writing to a
   SQLite file through the background writer), ``--calls`` times each; p50 and p99 of both and their difference.
   The HTTP round trip dominates both and varies by tens of microseconds, so the same run also measures the
   wrapper's own work in the caller's thread (building and queueing ``llm.call`` and ``llm.response`` around an
   already-parsed response), which is what the traced call adds.
2. **Events per second of the background writer**: ``--events`` events queued at once, timed until written, into
   a SQLite file and (when reachable) PostgreSQL.

Langfuse's OpenAI wrapper is not measured: from version 3 it sends its spans through OpenTelemetry to a Langfuse
server, which needs a server (or a stand-in for its ingestion API) to run offline, and it is not a dependency.
Results: ``benchmarks/results/tracing-latest.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

import meshlog
import meshlog.tracing as tracing
from meshlog.tracing._context import new_event
from meshlog.tracing._llm import CallRecord
from meshlog.tracing._writer import Writer
from meshlog.tracing.openai import chat_hooks

# The fake model server the tests use (tests/fake_llm.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
fake_llm_server: Any = importlib.import_module("fake_llm").fake_llm_server

RESULTS = Path(__file__).resolve().parent / "results" / "tracing-latest.json"
MESSAGES: list[Any] = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Say hello."}]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values_ns: list[float]) -> dict[str, float]:
    us = [v / 1000 for v in values_ns]
    return {"p50_us": round(percentile(us, 0.5), 1), "p99_us": round(percentile(us, 0.99), 1)}


def call_latency(calls: int, db: Path) -> dict[str, Any]:
    with fake_llm_server() as server:
        plain = openai.OpenAI(base_url=server.openai_url, api_key="x", max_retries=0)
        traced = tracing.instrument(openai.OpenAI(base_url=server.openai_url, api_key="x", max_retries=0))
        log = meshlog.connect(f"sqlite:///{db}")
        tracing.configure(log=log, spool=False)
        for client in (plain, traced):  # warm up connections and code paths
            for _ in range(50):
                client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        untraced_ns: list[float] = []
        traced_ns: list[float] = []
        with meshlog.trace(task_id="bench", agent_id="bench"):
            for _ in range(calls):
                for client, sink in ((plain, untraced_ns), (traced, traced_ns)):
                    start = time.perf_counter_ns()
                    client.chat.completions.create(model="gpt-test", messages=MESSAGES)
                    sink.append(time.perf_counter_ns() - start)
        reply = plain.chat.completions.create(model="gpt-test", messages=MESSAGES)
        # The wrapper's own work in the caller's thread, around an already-parsed response.
        hooks = chat_hooks("openai")
        kwargs = {"model": "gpt-test", "messages": MESSAGES}
        own_ns: list[float] = []
        with meshlog.trace(task_id="bench", agent_id="bench"):
            for _ in range(calls * 10):
                start = time.perf_counter_ns()
                record = CallRecord.start(lambda: hooks.request(kwargs))
                assert record is not None
                record.respond(lambda: hooks.result(reply))
                own_ns.append(time.perf_counter_ns() - start)
        assert tracing.flush(60)
        stats = tracing.stats()
        tracing.shutdown()
        log.close()
    untraced, traced_s = summary(untraced_ns), summary(traced_ns)
    return {
        "calls": calls,
        "untraced": untraced,
        "traced": traced_s,
        "added_p50_us": round(traced_s["p50_us"] - untraced["p50_us"], 1),
        "added_p99_us": round(traced_s["p99_us"] - untraced["p99_us"], 1),
        "wrapper_own_work": summary(own_ns),
        "events_written": stats.written,
        "events_dropped": stats.dropped,
    }


def writer_rate(url: str, events: int) -> dict[str, Any]:
    log = meshlog.connect(url)
    writer = Writer(log=log, spool=False, max_queue=events + 1, batch_size=500)
    batch = [new_event("span.start", {"name": f"step-{i}"}, ctx=None, parent_id=None) for i in range(events)]
    start = time.perf_counter()
    for event in batch:
        writer.enqueue(event)
    enqueued = time.perf_counter() - start
    assert writer.flush(600)
    elapsed = time.perf_counter() - start
    stats = writer.stats()
    writer.close()
    log.close()
    assert stats.written == events, stats
    return {
        "events": events,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed),
        "enqueue_us_per_event": round(enqueued / events * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["latency"] = call_latency(args.calls, Path(tmp) / "latency.db")
        print(json.dumps(results["latency"], indent=2))
        results["writer_sqlite"] = writer_rate(f"sqlite:///{Path(tmp) / 'writer.db'}", args.events)
        print("sqlite writer", results["writer_sqlite"])
    schema = f"meshlog_bench_tracing_{int(time.time())}"
    try:
        import psycopg

        with psycopg.connect(args.dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
        sep = "&" if "?" in args.dsn else "?"
        try:
            results["writer_postgres"] = writer_rate(f"{args.dsn}{sep}schema={schema}", args.events)
            print("postgres writer", results["writer_postgres"])
        finally:
            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except Exception as exc:  # PostgreSQL is optional here
        print(f"PostgreSQL skipped: {exc}")
    results["python"] = sys.version.split()[0]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
