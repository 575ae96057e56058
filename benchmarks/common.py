"""What every benchmark shares: the payload, the sizes, timing and percentiles, scratch schemas."""

from __future__ import annotations

import json
import os
import re
import resource
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

DEFAULT_DSN: Final = "postgresql://postgres@127.0.0.1:5432/test"
DSN_VARIABLE: Final = "MESHLOG_BENCH_DSN"

EVENT_TYPE: Final = "llm.call"
AGENTS: Final = 50
"""The number of agents the events of the large benchmarks are spread over."""

PAYLOAD: Final[dict[str, Any]] = {
    "model": "gpt-4o-mini-2024-07-18",
    "provider": "openai",
    "prompt_tokens": 1843,
    "completion_tokens": 312,
    "total_tokens": 2155,
    "duration_ms": 1284.6,
    "cost_usd": 0.000462,
    "temperature": 0.2,
    "finish_reason": "stop",
    "tool_calls": 1,
    "prompt_preview": "Summarize the failing pytest output and propose a minimal patch.",
}
"""The ``llm.call`` payload every benchmark writes, to every store."""


def payload_json() -> str:
    """The payload as compact JSON, the form meshlog stores (and the state given to eventsourcing)."""
    return json.dumps(PAYLOAD, separators=(",", ":"))


PAYLOAD_BYTES: Final = len(payload_json().encode("utf-8"))


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each benchmark does."""

    single_events: int
    """Events per store in the single-writer benchmark (split over ``rounds``)."""
    rounds: int
    """The single- and 8-writer benchmarks alternate the stores this many times (noise hits them alike)."""
    writers: int
    writer_events: int
    """Events per writer thread per store (split over ``rounds``)."""
    batch_size: int
    batches: int
    stream_events: int
    """Events in the stream the read benchmark reads."""
    read_runs: int
    table_events: int
    """Events in the table of the agent-query and memory benchmarks."""
    load_batch: int
    queries: int
    replay_stream: int
    replay_events: int
    replay_runs: int
    warmup: int


FULL: Final = Sizes(
    single_events=10_000,
    rounds=5,
    writers=8,
    writer_events=2000,
    batch_size=100,
    batches=500,
    stream_events=10_000,
    read_runs=11,
    table_events=1_000_000,
    load_batch=1000,
    queries=500,
    replay_stream=1000,
    replay_events=100,
    replay_runs=500,
    warmup=50,
)

QUICK: Final = Sizes(
    single_events=300,
    rounds=3,
    writers=8,
    writer_events=60,
    batch_size=100,
    batches=20,
    stream_events=10_000,
    read_runs=3,
    table_events=20_000,
    load_batch=1000,
    queries=50,
    replay_stream=1000,
    replay_events=100,
    replay_runs=50,
    warmup=10,
)


# -- figures -----------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, interpolated linearly between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_figures(seconds: list[float]) -> dict[str, float]:
    """p50, p99 and max of latencies given in seconds, in milliseconds."""
    return {
        "p50_ms": percentile(seconds, 50) * 1000.0,
        "p99_ms": percentile(seconds, 99) * 1000.0,
        "max_ms": max(seconds) * 1000.0 if seconds else float("nan"),
    }


def throughput(events: int, seconds: float) -> dict[str, float]:
    return {"events": float(events), "seconds": seconds, "events_per_s": events / seconds if seconds else 0.0}


class Clock:
    """Accumulates the time of timed sections (one per round) and the latency of each timed call."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.elapsed = 0.0
        self.sections: list[float] = []

    @contextmanager
    def section(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(time.perf_counter() - started)

    def add(self, seconds: float) -> None:
        self.elapsed += seconds
        self.sections.append(seconds)


def rss_mb() -> float:
    """This process's resident set size now, in MB (Linux)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def high_water_rss_mb() -> float:
    """``VmHWM``: the peak resident set size of this process image since it was executed, in MB (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- PostgreSQL ----------------------------------------------------------------------------------------------
def dsn() -> str:
    """The PostgreSQL server to benchmark: ``$MESHLOG_BENCH_DSN`` or the local test database."""
    return os.environ.get(DSN_VARIABLE) or DEFAULT_DSN


@dataclass(frozen=True, slots=True)
class PgParams:
    host: str
    port: int
    user: str
    password: str
    dbname: str


def pg_params(url: str) -> PgParams:
    """The parts of a ``postgresql://`` URL (eventsourcing takes them one by one)."""
    parts = urlsplit(url)
    return PgParams(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        dbname=unquote(parts.path.lstrip("/")) or "postgres",
    )


def meshlog_pg_url(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


_SCHEMA_RE: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def scratch_schema(name: str) -> str:
    """A fresh schema name for one benchmark of this process."""
    schema = f"bench_{name}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    assert _SCHEMA_RE.fullmatch(schema), schema
    return schema


def admin_execute(url: str, statement: sql.SQL | sql.Composed) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def create_schema(url: str, schema: str) -> None:
    admin_execute(url, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))


def drop_schema(url: str, schema: str) -> None:
    admin_execute(url, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def analyze(url: str, schema: str) -> None:
    """Refresh the planner's statistics of every table of ``schema``, as autovacuum eventually does."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
            (schema,),
        ).fetchall()
        for (table,) in rows:
            conn.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))


def checkpoint(url: str) -> bool:
    """Flush PostgreSQL's dirty pages now (CHECKPOINT), so that the writes of one benchmark are not flushed
    during the next. Needs a superuser or pg_checkpoint; returns whether it ran."""
    try:
        admin_execute(url, sql.SQL("CHECKPOINT"))
    except psycopg.Error:
        return False
    return True


def server_version(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def server_settings(url: str) -> dict[str, str]:
    names = ("synchronous_commit", "fsync", "shared_buffers", "wal_level")
    out: dict[str, str] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name in names:
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            out[name] = str(row[0]) if row else "?"
    return out
