"""Benchmark NATS JetStream ingestion: messages per second from a stream into SQLite and PostgreSQL.

    python -m benchmarks.ingest                 # 20,000 messages per case, both stores (about 2 minutes)
    python -m benchmarks.ingest --quick         # 3,000 messages per case: a smoke test
    python -m benchmarks.ingest --messages 50000 --stores postgres --nats nats://127.0.0.1:4222

Each case publishes the messages into a fresh stream first (the ``llm.call`` payload of the other benchmarks as
meshlog event bodies, ten per task stream, each with its ``Nats-Msg-Id``), then starts the worker(s) on the full
backlog and measures from their start (for worker processes: from the first event stored, after Python's
start-up) until every message is stored (``--seconds`` caps a case). The cases: one worker in this process
(``NatsIngest``) with batches of 100 and of 500; ``meshlog ingest nats`` as 1 and as 2 worker processes on one
durable consumer; and, as the ceiling, the library appending the same events (idempotency keys included)
itself, 100 per ``emit_batch``, without NATS. Publishing is measured too: one ``AsyncNatsPublisher.publish`` at
a time (each awaits JetStream's acknowledgement) and pipelined (``publish_async``, raw bodies). Stores are
fresh: a new PostgreSQL schema (dropped at the end) or a SQLite file in a new temporary directory.
Results: ``benchmarks/results/ingest-latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

import nats
from nats.js import JetStreamContext

import meshlog
from benchmarks.common import EVENT_TYPE, PAYLOAD, create_schema, drop_schema, dsn, meshlog_pg_url, scratch_schema
from benchmarks.report import RESULTS_DIR
from meshlog.ingest import decode_message
from meshlog.ingest.nats import AsyncNatsPublisher, NatsIngest

DEFAULT_NATS: Final = os.environ.get("MESHLOG_BENCH_NATS", "nats://127.0.0.1:4222")
Figures = dict[str, Any]


def body(i: int) -> bytes:
    event = {"type": EVENT_TYPE, "data": PAYLOAD, "task_id": f"task-{i // 10}", "agent_id": f"agent-{i % 50}"}
    return json.dumps(event, separators=(",", ":")).encode()


@contextmanager
def fresh_store(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="meshlog-ingest-") as folder:
            yield f"sqlite:///{folder}/events.db"
        return
    base = dsn()
    schema = scratch_schema("ingest")
    create_schema(base, schema)
    try:
        yield meshlog_pg_url(base, schema)
    finally:
        drop_schema(base, schema)


async def fill(js: JetStreamContext, stream: str, subject: str, messages: int) -> float:
    """Create ``stream`` and publish ``messages`` pipelined; returns messages per second."""
    await js.add_stream(name=stream, subjects=[subject])
    started = time.perf_counter()
    for start in range(0, messages, 1000):
        futures = [
            await js.publish_async(subject, body(i), headers={"Nats-Msg-Id": f"m-{i}"})
            for i in range(start, min(start + 1000, messages))
        ]
        await asyncio.gather(*futures)
    return messages / (time.perf_counter() - started)


async def stored(log: meshlog.AsyncEventLog) -> int:
    page = await log.query(limit=1, total_count=True)
    return page.total_count or 0


async def in_process(nats_url: str, store: str, messages: int, batch: int, cap: float) -> Figures:
    client = await nats.connect(nats_url)
    js = client.jetstream()
    stream = f"BENCH_{uuid.uuid4().hex[:8]}"
    try:
        await fill(js, stream, f"{stream.lower()}.events", messages)
        async with await meshlog.connect_async(store) as log:
            worker = NatsIngest(nats_url, stream=stream, store=log, batch=batch, fetch_timeout=0.5)
            started = time.perf_counter()
            task = asyncio.create_task(worker.run())
            while worker.stats.processed < messages and time.perf_counter() - started < cap:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # polling costs the worker less than a callback per message
            elapsed = time.perf_counter() - started
            worker.stop()
            await task
            count = await stored(log)
    finally:
        await js.delete_stream(stream)
        await client.close()
    return {"messages": worker.stats.processed, "stored": count, "seconds": elapsed, "per_s": count / elapsed}


def spawn(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def processes(nats_url: str, store: str, messages: int, workers: int, cap: float) -> Figures:
    client = await nats.connect(nats_url)
    js = client.jetstream()
    stream = f"BENCH_{uuid.uuid4().hex[:8]}"
    running: list[subprocess.Popen[str]] = []
    try:
        await fill(js, stream, f"{stream.lower()}.events", messages)
        async with await meshlog.connect_async(store) as log:  # migrated before the workers start
            command = [sys.executable, "-m", "meshlog.cli", "--url", store, "ingest", "nats", "--url", nats_url]
            command += ["--stream", stream, "--no-migrate", "--json"]
            running = [spawn(command) for _ in range(workers)]
            launched = time.perf_counter()
            count = 0
            while count == 0 and time.perf_counter() - launched < cap:  # the processes start (about 1 s)
                await asyncio.sleep(0.05)
                count = await stored(log)
            started, first = time.perf_counter(), count
            while count < messages and time.perf_counter() - started < cap:
                await asyncio.sleep(0.05)
                count = await stored(log)
            elapsed = time.perf_counter() - started
    finally:
        for process in running:
            process.terminate()
            process.communicate(timeout=60)
        await js.delete_stream(stream)
        await client.close()
    return {"messages": messages, "stored": count, "seconds": elapsed, "per_s": (count - first) / elapsed}


async def direct(store: str, messages: int, cap: float) -> Figures:
    """The ceiling: the same events (keys included) appended by the library itself, 100 per ``emit_batch``."""
    async with await meshlog.connect_async(store) as log:
        started = time.perf_counter()
        done = 0
        while done < messages and time.perf_counter() - started < cap:
            batch = [
                decode_message(body(i), subject="s", default_key=f"m-{i}").events[0] for i in range(done, done + 100)
            ]
            await log.emit_batch(batch)
            done += len(batch)
        elapsed = time.perf_counter() - started
        count = await stored(log)
    return {"messages": done, "stored": count, "seconds": elapsed, "per_s": count / elapsed}


async def publishing(nats_url: str, messages: int) -> Figures:
    stream = f"BENCH_{uuid.uuid4().hex[:8]}"
    subject = f"{stream.lower()}.events"
    async with await AsyncNatsPublisher.connect(nats_url, subject=subject) as publisher:
        js = publisher.client.jetstream()
        pipelined = await fill(js, stream, subject, messages)
        started = time.perf_counter()
        single = min(messages, 5000)
        for i in range(single):
            await publisher.publish(EVENT_TYPE, PAYLOAD, task_id=f"task-{i // 10}", agent_id=f"agent-{i % 50}")
        one_by_one = single / (time.perf_counter() - started)
        await js.delete_stream(stream)
    return {"publish_per_s": one_by_one, "publish_async_per_s": pipelined}


async def main_async(args: argparse.Namespace) -> Figures:
    figures: Figures = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "messages": args.messages,
        "nats": args.nats,
        "publishing": await publishing(args.nats, args.messages),
    }
    print(f"publish: {figures['publishing']}", flush=True)
    for kind in args.stores.split(","):
        results: Figures = {}
        cases: list[tuple[str, Any]] = [
            ("library emit_batch of 100 (no NATS)", lambda url: direct(url, args.messages, args.seconds)),
            ("in-process, batch 100", lambda url: in_process(args.nats, url, args.messages, 100, args.seconds)),
            ("in-process, batch 500", lambda url: in_process(args.nats, url, args.messages, 500, args.seconds)),
            ("meshlog ingest nats, 1 process", lambda url: processes(args.nats, url, args.messages, 1, args.seconds)),
            ("meshlog ingest nats, 2 processes", lambda url: processes(args.nats, url, args.messages, 2, args.seconds)),
        ]
        for title, case in cases:
            with fresh_store(kind) as url:
                results[title] = await case(url)
            print(f"{kind}: {title}: {results[title]['per_s']:,.0f} messages/s", flush=True)
        figures[kind] = results
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nats", default=DEFAULT_NATS, help="NATS server URL ($MESHLOG_BENCH_NATS)")
    parser.add_argument("--stores", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per case")
    parser.add_argument("--seconds", type=float, default=120.0, help="the longest a case may take")
    parser.add_argument("--quick", action="store_true", help="3,000 messages per case")
    args = parser.parse_args()
    if args.quick:
        args.messages = 3000
    figures = asyncio.run(main_async(args))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "ingest-latest.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
