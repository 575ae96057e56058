"""The workloads. Each one opens its stores in fresh scratch space, runs them in the same process one after the
other (interleaved where the figures are compared, so that a burst of noise on this shared machine hits every
store alike), and returns ``{store label: {figure: value}}``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import (
    AGENTS,
    Clock,
    Sizes,
    analyze,
    latency_figures,
    percentile,
    throughput,
)
from benchmarks.copy_ceiling import run_copy_ceiling
from benchmarks.subjects import (
    COPY_PG,
    EVENTSOURCING_PG,
    EventsourcingSubject,
    MeshlogSubject,
    Subject,
)

Figures = dict[str, float]
Results = dict[str, Any]

ROOT = Path(__file__).resolve().parent.parent
STORES = ("postgres", "sqlite", "eventsourcing")


@contextmanager
def open_subjects(name: str, dsn: str, stores: Sequence[str], *, pool_size: int = 8) -> Iterator[list[Subject]]:
    """The selected stores, each in fresh scratch space that is removed on exit."""
    with ExitStack() as stack:
        subjects: list[Subject] = []
        for store in stores:
            if store in {"postgres", "sqlite"}:
                subjects.append(stack.enter_context(MeshlogSubject(store, name, dsn)))
            elif store == "eventsourcing":
                subjects.append(stack.enter_context(EventsourcingSubject(name, dsn, pool_size=pool_size)))
            else:
                raise ValueError(f"unknown store {store!r}")
        yield subjects


def _log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _rounds(subjects: Sequence[Subject], rounds: int, step: Callable[[Subject, Clock], None]) -> dict[str, Clock]:
    """Run ``step`` for every subject, ``rounds`` times, alternating subjects."""
    clocks = {s.label: Clock() for s in subjects}
    for _ in range(rounds):
        for subject in subjects:
            step(subject, clocks[subject.label])
    return clocks


# -- 1. single writer ----------------------------------------------------------------------------------------
def single_emit(dsn: str, sizes: Sizes, stores: Sequence[str]) -> Results:
    per_round = max(1, sizes.single_events // sizes.rounds)

    def step(subject: Subject, clock: Clock) -> None:
        latencies = clock.latencies
        with clock.section():
            for _ in range(per_round):
                started = time.perf_counter()
                subject.emit_one(0)
                latencies.append(time.perf_counter() - started)

    with open_subjects("single", dsn, stores) as subjects:
        for subject in subjects:
            for _ in range(sizes.warmup):
                subject.emit_one(0)
        clocks = _rounds(subjects, sizes.rounds, step)
    return {
        label: {
            **throughput(len(c.latencies), c.elapsed),
            **latency_figures(c.latencies),
            "round_events_per_s": [per_round / t for t in c.sections],
        }
        for label, c in clocks.items()
    }


# -- 2. concurrent writers -----------------------------------------------------------------------------------
def _concurrent_round(subject: Subject, writers: int, per_writer: int, clock: Clock) -> None:
    barrier = threading.Barrier(writers + 1)
    latencies: list[list[float]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []

    def work(writer: int) -> None:
        own = latencies[writer]
        barrier.wait()
        try:
            for _ in range(per_writer):
                started = time.perf_counter()
                subject.emit_one(writer)
                own.append(time.perf_counter() - started)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,), name=f"writer-{w}") for w in range(writers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    clock.add(time.perf_counter() - started)
    if errors:
        raise errors[0]
    for own in latencies:
        clock.latencies.extend(own)


def concurrent_writers(dsn: str, sizes: Sizes, stores: Sequence[str]) -> Results:
    per_writer = max(1, sizes.writer_events // sizes.rounds)
    with open_subjects("writers", dsn, stores, pool_size=sizes.writers) as subjects:
        warm = Clock()
        for subject in subjects:
            _concurrent_round(subject, sizes.writers, max(1, sizes.warmup // sizes.writers), warm)
        clocks = _rounds(subjects, sizes.rounds, lambda s, c: _concurrent_round(s, sizes.writers, per_writer, c))
    return {
        label: {
            **throughput(len(c.latencies), c.elapsed),
            **latency_figures(c.latencies),
            "writers": float(sizes.writers),
            "round_events_per_s": [per_writer * sizes.writers / t for t in c.sections],
        }
        for label, c in clocks.items()
    }


# -- 3 and 4. batches, and the COPY ceiling ------------------------------------------------------------------
def batches(dsn: str, sizes: Sizes, stores: Sequence[str]) -> Results:
    per_round = max(1, sizes.batches // sizes.rounds)

    def step(subject: Subject, clock: Clock) -> None:
        with clock.section():
            for _ in range(per_round):
                started = time.perf_counter()
                subject.emit_batch(0, sizes.batch_size)
                clock.latencies.append(time.perf_counter() - started)

    with open_subjects("batch", dsn, stores) as subjects:
        for subject in subjects:
            for _ in range(max(1, sizes.warmup // 10)):
                subject.emit_batch(0, sizes.batch_size)
        clocks = _rounds(subjects, sizes.rounds, step)
    results: Results = {
        label: {
            **throughput(len(c.latencies) * sizes.batch_size, c.elapsed),
            **{f"batch_{k}": v for k, v in latency_figures(c.latencies).items()},
            "batch_size": float(sizes.batch_size),
            "round_events_per_s": [per_round * sizes.batch_size / t for t in c.sections],
        }
        for label, c in clocks.items()
    }
    if "postgres" in stores or "eventsourcing" in stores:
        _log("COPY ceiling")
        copy = run_copy_ceiling(dsn, batches=sizes.batches, batch_size=sizes.batch_size, warmup=sizes.warmup)
        results[COPY_PG] = copy["batches"]
        results[f"{COPY_PG}-single"] = copy["single_copy"]
    return results


# -- 5. reading one stream -----------------------------------------------------------------------------------
def read_stream(dsn: str, sizes: Sizes, stores: Sequence[str]) -> Results:
    stream = "read-stream"
    timings: dict[str, list[float]] = {}
    with open_subjects("read", dsn, stores) as subjects:
        for subject in subjects:
            subject.fill_stream(stream, sizes.stream_events, sizes.load_batch)
            timings[subject.label] = []
            if isinstance(subject, EventsourcingSubject):
                timings[f"{subject.label}+decode"] = []
        for subject in subjects:  # warm-up: caches, prepared statements
            assert subject.read_stream(stream) == sizes.stream_events
        for _ in range(sizes.read_runs):
            for subject in subjects:
                started = time.perf_counter()
                count = subject.read_stream(stream)
                timings[subject.label].append(time.perf_counter() - started)
                assert count == sizes.stream_events, (subject.label, count)
                if isinstance(subject, EventsourcingSubject):
                    started = time.perf_counter()
                    subject.read_stream_decoded(stream)
                    timings[f"{subject.label}+decode"].append(time.perf_counter() - started)
    return {
        label: {
            "events": float(sizes.stream_events),
            "runs": float(len(t)),
            "p50_ms": percentile(t, 50) * 1000.0,
            "min_ms": min(t) * 1000.0,
            "max_ms": max(t) * 1000.0,
            "events_per_s": sizes.stream_events / percentile(t, 50),
        }
        for label, t in timings.items()
    }


_SPAWN = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


# -- 6 and 8. the last 100 events of an agent in a large table; memory while loading it -----------------------
def _load_in_subprocess(url: str, events: int, batch: int) -> Figures:
    """Run benchmarks.loader in a fresh interpreter and return its figures.

    Linux keeps ``ru_maxrss`` across ``execve``: a child forked from this (large) process would report this
    process's RSS as its own peak. So the loader is started by a bare interpreter that does nothing else; the
    loader also reports ``VmHWM``, the high-water mark of its own address space, which exec resets.
    """
    loader = [sys.executable, "-m", "benchmarks.loader", "--url", url, "--events", str(events), "--batch", str(batch)]
    done = subprocess.run(
        [sys.executable, "-c", _SPAWN, *loader],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the loader failed ({done.returncode}):\n{done.stderr}")
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    samples = raw.pop("samples")
    figures: Figures = {k: float(v) for k, v in raw.items()}
    rss = [float(s[1]) for s in samples]
    figures["rss_first_sample_mb"] = rss[1] if len(rss) > 1 else rss[0]
    figures["rss_last_sample_mb"] = rss[-1]
    figures["rss_growth_mb"] = rss[-1] - (rss[1] if len(rss) > 1 else rss[0])
    return figures


def memory(dsn: str, sizes: Sizes, stores: Sequence[str]) -> Results:
    """Peak RSS of a process emitting ``table_events`` events with ``emit_batch`` (meshlog stores only)."""
    results: Results = {}
    with open_subjects("memory", dsn, [s for s in stores if s in {"postgres", "sqlite"}]) as subjects:
        for subject in subjects:
            assert isinstance(subject, MeshlogSubject)
            _log(f"{subject.label}: loading {sizes.table_events:,} events in a subprocess")
            results[subject.label] = _load_in_subprocess(subject.url, sizes.table_events, sizes.load_batch)
    return results


def agent_query(dsn: str, sizes: Sizes, stores: Sequence[str]) -> tuple[Results, Results]:
    """The last 100 events of one agent, in a table of ``table_events`` events over ``AGENTS`` agents.

    meshlog's tables are loaded by :mod:`benchmarks.loader` in a subprocess, whose figures are returned as the
    memory benchmark's; eventsourcing's table (one aggregate per agent) is loaded in this process. Every table
    is analyzed after loading, then the queries cycle over the agents, the stores interleaved.
    """
    loads: Results = {}
    latencies: dict[str, list[float]] = {}
    with open_subjects("query", dsn, stores) as subjects:
        for subject in subjects:
            _log(f"{subject.label}: loading {sizes.table_events:,} events")
            if isinstance(subject, MeshlogSubject):
                loads[subject.label] = _load_in_subprocess(subject.url, sizes.table_events, sizes.load_batch)
                subject.analyze()
            elif isinstance(subject, EventsourcingSubject):
                started = time.perf_counter()
                subject.fill_agents(sizes.table_events, sizes.load_batch)
                loads[subject.label] = throughput(sizes.table_events, time.perf_counter() - started)
                assert subject.schema is not None
                analyze(dsn, subject.schema)
            latencies[subject.label] = []
        for subject in subjects:
            for i in range(sizes.warmup):
                subject.last_of_agent(i % AGENTS, 100)
        for i in range(sizes.queries):
            for subject in subjects:
                started = time.perf_counter()
                count = subject.last_of_agent(i % AGENTS, 100)
                latencies[subject.label].append(time.perf_counter() - started)
                assert count == 100, (subject.label, count)
    query = {
        label: {"table_events": float(sizes.table_events), "queries": float(len(t)), **latency_figures(t)}
        for label, t in latencies.items()
    }
    return query, loads


# -- 7. replay ------------------------------------------------------------------------------------------------
def replay(dsn: str, sizes: Sizes, stores: Sequence[str]) -> Results:
    stream = "replay-stream"
    latencies: dict[str, list[float]] = {}
    with open_subjects("replay", dsn, stores) as subjects:
        for subject in subjects:
            subject.fill_stream(stream, sizes.replay_stream, sizes.load_batch)
            for _ in range(sizes.warmup):
                assert subject.replay(stream, sizes.replay_events) == sizes.replay_events
            latencies[subject.label] = []
        for _ in range(sizes.replay_runs):
            for subject in subjects:
                started = time.perf_counter()
                subject.replay(stream, sizes.replay_events)
                latencies[subject.label].append(time.perf_counter() - started)
    return {
        label: {"events": float(sizes.replay_events), "runs": float(len(t)), **latency_figures(t)}
        for label, t in latencies.items()
    }


__all__ = [
    "EVENTSOURCING_PG",
    "STORES",
    "agent_query",
    "batches",
    "concurrent_writers",
    "memory",
    "read_stream",
    "replay",
    "single_emit",
]
