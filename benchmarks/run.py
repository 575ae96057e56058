"""Run meshlog's benchmarks against PostgreSQL, SQLite and the eventsourcing library, print the figures and the
targets, and save them as JSON in benchmarks/results/.

    python -m benchmarks.run                 # the full run (about 10 minutes on 2 cores)
    python -m benchmarks.run --quick         # small sizes: a smoke test (under a minute)
    python -m benchmarks.run --only single --only read
    python -m benchmarks.run --stores postgres,eventsourcing

PostgreSQL: ``$MESHLOG_BENCH_DSN`` or ``--dsn`` (default postgresql://postgres@127.0.0.1:5432/test). Every
benchmark works in fresh schemas (and SQLite files in a fresh temporary directory) that it drops at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import workloads
from benchmarks.breakdown import breakdown
from benchmarks.common import (
    FULL,
    PAYLOAD_BYTES,
    QUICK,
    Sizes,
    checkpoint,
    dsn,
    payload_json,
    server_settings,
    server_version,
)
from benchmarks.report import RESULTS_DIR, render
from benchmarks.workloads import ROOT

Runner = Callable[[str, Sizes, Sequence[str]], dict[str, Any]]

BENCHMARKS: dict[str, tuple[str, str]] = {
    "single": ("single_emit", "single emit, 1 writer"),
    "writers": ("concurrent_writers", "single emits from 8 writer threads"),
    "batch": ("batch_100", "batches of 100, and the COPY ceiling"),
    "read": ("read_stream", "read one 10,000-event stream"),
    "query": ("agent_query", "last 100 events of an agent in a 1,000,000-event table (also memory)"),
    "replay": ("replay", "replay 100 events"),
    "memory": ("memory", "peak RSS while emitting 1,000,000 events"),
    "breakdown": ("breakdown", "where the time of PostgreSQL appends and reads goes"),
}
ALIASES = {"copy": "batch", "emit": "single", "concurrent": "writers", "batches": "batch", "rss": "memory"}
RUNNERS: dict[str, Runner] = {
    "single": workloads.single_emit,
    "writers": workloads.concurrent_writers,
    "batch": workloads.batches,
    "read": workloads.read_stream,
    "replay": workloads.replay,
    "memory": workloads.memory,
    "breakdown": breakdown,
}


def _names(values: Sequence[str]) -> list[str]:
    names: list[str] = []
    for value in values:
        for part in value.split(","):
            name = ALIASES.get(part.strip(), part.strip())
            if not name:
                continue
            if name not in BENCHMARKS:
                raise SystemExit(f"unknown benchmark {part!r}; known: {', '.join(BENCHMARKS)}")
            if name not in names:
                names.append(name)
    return names


def _git() -> dict[str, Any]:
    """The commit measured, and whether src/ differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or "?",
        "src_modified": bool(git("status", "--porcelain", "src")),
    }


def _machine(url: str) -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        memory_gib = float("nan")

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(memory_gib, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": server_version(url),
        "postgresql_settings": server_settings(url),
        "sqlite": sqlite3.sqlite_version,
        "meshlog": version("meshlog"),
        "eventsourcing": version("eventsourcing"),
        "psycopg": version("psycopg"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="meshlog benchmarks (see docs/benchmarks.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="benchmarks: " + ", ".join(f"{k} ({v[1]})" for k, v in BENCHMARKS.items()),
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test that ends within a minute")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run only these (repeatable)")
    parser.add_argument(
        "--stores",
        default=",".join(workloads.STORES),
        help=f"comma-separated subset of {','.join(workloads.STORES)} (default: all)",
    )
    parser.add_argument("--dsn", default=None, help="PostgreSQL URL (default $MESHLOG_BENCH_DSN or local test db)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR, help="where to write the JSON results")
    parser.add_argument("--no-save", action="store_true", help="do not write the JSON results")
    args = parser.parse_args(argv)

    url = args.dsn or dsn()
    sizes = QUICK if args.quick else FULL
    names = _names(args.only) or list(BENCHMARKS)
    if "query" in names and "memory" in names:
        names.remove("memory")  # the agent-query benchmark's loader is the memory benchmark
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = set(stores) - set(workloads.STORES)
    if unknown:
        raise SystemExit(f"unknown stores {sorted(unknown)}; known: {', '.join(workloads.STORES)}")

    machine = _machine(url)
    print(
        f"meshlog {machine['meshlog']} benchmarks ({'quick' if args.quick else 'full'}): "
        f"Python {machine['python']}, PostgreSQL {machine['postgresql']}, SQLite {machine['sqlite']}, "
        f"eventsourcing {machine['eventsourcing']}, {machine['cpus']} CPUs",
        flush=True,
    )
    print(f"payload: {PAYLOAD_BYTES} bytes of JSON per llm.call event: {payload_json()}", flush=True)

    results: dict[str, Any] = {}
    checkpointed = False
    started_all = time.perf_counter()
    for name in names:
        key, title = BENCHMARKS[name]
        print(f"[{name}] {title} ...", file=sys.stderr, flush=True)
        checkpointed = checkpoint(url)
        started = time.perf_counter()
        if name == "query":
            query, loads = workloads.agent_query(url, sizes, stores)
            results["agent_query"] = query
            results["load"] = loads
            results["memory"] = {k: v for k, v in loads.items() if k.startswith("meshlog-")}
        else:
            results[key] = RUNNERS[name](url, sizes, stores)
            if name == "memory":
                results["load"] = results[key]
        print(f"[{name}] done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started_all

    data: dict[str, Any] = {
        "meta": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": ("python -m benchmarks.run " + shlex.join(argv if argv is not None else sys.argv[1:])).strip(),
            "mode": "quick" if args.quick else "full",
            "elapsed_s": round(elapsed, 1),
            "stores": stores,
            "checkpoint_between_benchmarks": checkpointed,
            "payload_bytes": PAYLOAD_BYTES,
            "payload": json.loads(payload_json()),
            "machine": machine,
            "git": _git(),
        },
        "sizes": asdict(sizes),
        "results": results,
    }
    print()
    print(render(data))
    print(f"\n{len(names)} benchmark(s) in {elapsed:.0f} s", flush=True)
    if not args.no_save:
        args.output.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        text = json.dumps(data, indent=2, allow_nan=True) + "\n"
        path = args.output / f"{stamp}-{'quick' if args.quick else 'full'}.json"
        path.write_text(text, encoding="utf-8")
        (args.output / "latest.json").write_text(text, encoding="utf-8")
        print(f"results: {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
