"""Benchmark meshlog's tracing: what a traced LLM call costs the caller, and how fast the background writer goes.

    python -m benchmarks.tracing                 # about a minute
    python -m benchmarks.tracing --calls 500     # quicker

1. **Added latency of a traced call.** The real ``openai`` client calls the fake model server (tests/fake_llm.py,
   run in a process of its own so that its threads do not compete with the measured calls for this interpreter's
   lock; ``--server-in-process`` for threads of this process) over HTTP, alternately untraced and traced
   (``meshlog.tracing.instrument``, writing to a SQLite file through the background writer), ``--calls`` times
   each; p50 and p99 of both, their differences, and the median of the differences between neighbouring calls.
   The HTTP round trip dominates both and varies by tens of microseconds, so the same run also measures the
   wrapper's time in the caller's thread: timed in place during real calls, and in a tight loop around an
   already-parsed response (warm caches: a lower bound); and what the writer thread then spends building the
   two events of a call.
2. **Events per second of the background writer**: ``--events`` events queued at once, timed until written, into
   a SQLite file and (when reachable) PostgreSQL.

Langfuse's OpenAI wrapper is not measured: from version 3 it sends its spans through OpenTelemetry to a Langfuse
server, which needs a server (or a stand-in for its ingestion API) to run offline, and it is not a dependency.
Results: ``benchmarks/results/tracing-latest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai

import meshlog
import meshlog.tracing as tracing
from meshlog.tracing import _llm
from meshlog.tracing._context import active_writer, context_for_call, new_event
from meshlog.tracing._llm import CallEvent, CallRecord, ResponseEvent, snapshot
from meshlog.tracing._writer import Writer
from meshlog.tracing.openai import chat_hooks

# The fake model server the tests use (tests/fake_llm.py).
FAKE_LLM = Path(__file__).resolve().parent.parent / "tests" / "fake_llm.py"
sys.path.insert(0, str(FAKE_LLM.parent))
fake_llm_server: Any = importlib.import_module("fake_llm").fake_llm_server

RESULTS = Path(__file__).resolve().parent / "results" / "tracing-latest.json"
MESSAGES: list[Any] = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Say hello."}]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values_ns: list[float]) -> dict[str, float]:
    us = [v / 1000 for v in values_ns]
    return {"p50_us": round(percentile(us, 0.5), 1), "p99_us": round(percentile(us, 0.99), 1)}


@contextlib.contextmanager
def fake_server(in_process: bool) -> Iterator[str]:
    """The fake model server's OpenAI base URL: by default in a process of its own, so that its threads do not
    compete for this interpreter's lock with the calls measured here."""
    if in_process:
        with fake_llm_server() as server:
            yield server.openai_url
        return
    proc = subprocess.Popen([sys.executable, str(FAKE_LLM)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        yield proc.stdout.readline().strip() + "/v1"
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def call_latency(calls: int, db: Path, *, in_process: bool = False) -> dict[str, Any]:
    with fake_server(in_process) as url:
        plain = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        traced = tracing.instrument(openai.OpenAI(base_url=url, api_key="x", max_retries=0))
        log = meshlog.connect(f"sqlite:///{db}")
        tracing.configure(log=log, spool=False)
        for client in (plain, traced):  # warm up connections and code paths
            for _ in range(50):
                client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        untraced_ns: list[float] = []
        traced_ns: list[float] = []
        with meshlog.trace(task_id="bench", agent_id="bench"):
            for i in range(calls):
                pair = ((plain, untraced_ns), (traced, traced_ns))
                for client, sink in pair if i % 2 else reversed(pair):  # neither always goes first
                    start = time.perf_counter_ns()
                    client.chat.completions.create(model="gpt-test", messages=MESSAGES)
                    sink.append(time.perf_counter_ns() - start)
        in_call_ns = wrapper_in_calls(traced, calls)
        reply = plain.chat.completions.create(model="gpt-test", messages=MESSAGES)
        # The wrapper's own work in the caller's thread, around an already-parsed response, in a tight loop.
        hooks = chat_hooks("openai")
        kwargs = {"model": "gpt-test", "messages": MESSAGES}
        own_ns: list[float] = []
        with meshlog.trace(task_id="bench", agent_id="bench"):
            for _ in range(calls * 10):
                start = time.perf_counter_ns()
                record = CallRecord.start(hooks.request, kwargs)
                assert record is not None
                record.respond(functools.partial(hooks.result, reply))
                own_ns.append(time.perf_counter_ns() - start)
        # What the writer thread does per call before writing: build llm.call and llm.response from them.
        writer = active_writer()
        assert writer is not None
        build_ns: list[float] = []
        with meshlog.trace(task_id="bench", agent_id="bench"):
            for _ in range(calls * 10):
                record = CallRecord(writer, context_for_call(), hooks.request, snapshot(kwargs), False)
                response = ResponseEvent(record, functools.partial(hooks.result, reply), 1.0)
                start = time.perf_counter_ns()
                CallEvent(record).build()
                response.build()
                build_ns.append(time.perf_counter_ns() - start)
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
        "added_paired_median_us": paired_median(untraced_ns, traced_ns),
        "wrapper_in_call": summary(in_call_ns),
        "wrapper_own_work": summary(own_ns),
        "writer_build_per_call": summary(build_ns),
        "events_written": stats.written,
        "events_dropped": stats.dropped,
    }


def paired_median(untraced_ns: list[float], traced_ns: list[float]) -> float:
    """The median of each traced call's time minus its neighbouring untraced call's, in µs: a machine that slows
    down for a while (other processes) slows both calls of a pair, so this moves less than the p50s' difference."""
    return round(percentile([t - u for u, t in zip(untraced_ns, traced_ns, strict=True)], 0.5) / 1000, 1)


def wrapper_in_calls(client: openai.OpenAI, calls: int) -> list[float]:
    """The wrapper's time in the caller's thread during real traced calls: ``CallRecord.start`` before the
    request and ``_finish`` after the response, timed in place (their sum per call)."""
    spent: list[int] = [0]
    start_fn, finish_fn = _llm.CallRecord.start, _llm._finish
    descriptor = vars(_llm.CallRecord)["start"]

    def timed_start(build: Any, kwargs: Any) -> Any:
        t = time.perf_counter_ns()
        try:
            return start_fn(build, kwargs)
        finally:
            spent[0] += time.perf_counter_ns() - t

    def timed_finish(*args: Any, **kwargs: Any) -> None:
        t = time.perf_counter_ns()
        try:
            finish_fn(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter_ns() - t

    result: list[float] = []
    _llm.CallRecord.start = timed_start  # type: ignore[method-assign]
    _llm._finish = timed_finish
    try:
        with meshlog.trace(task_id="bench", agent_id="bench"):
            for _ in range(calls):
                spent[0] = 0
                client.chat.completions.create(model="gpt-test", messages=MESSAGES)
                result.append(spent[0])
    finally:
        _llm.CallRecord.start = descriptor  # type: ignore[method-assign]
        _llm._finish = finish_fn
    return result


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
    parser.add_argument(
        "--server-in-process",
        action="store_true",
        help="run the fake model server as threads of this process (how it was measured before, for comparison)",
    )
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["latency"] = call_latency(args.calls, Path(tmp) / "latency.db", in_process=args.server_in_process)
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
