"""meshlog.tracing: trace context, spans, the background writer, the spool, an outage, exit.

Real stores (memory, a SQLite file, PostgreSQL) and a real meshlog server (uvicorn) for the outage tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

import meshlog
import meshlog.tracing as tracing
from meshlog.server import Server, create_app
from meshlog.spool import Spool
from meshlog.tracing._writer import Writer, decode_events, encode_events
from server_helpers import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def log(store_url: str) -> Iterator[meshlog.EventLog]:
    """A store of each kind, with tracing configured to write to it."""
    opened = meshlog.connect(store_url)
    tracing.configure(log=opened, spool=False)
    try:
        yield opened
    finally:
        tracing.shutdown()
        opened.close()


def everything(log: meshlog.EventLog, **flt: str) -> list[meshlog.RecordedEvent]:
    """Every event matching ``flt``, page by page."""
    page = log.query(limit=1000, **flt)  # type: ignore[arg-type]
    found = list(page.events)
    while page.next_cursor is not None:
        page = log.query(cursor=page.next_cursor, limit=1000)
        found.extend(page.events)
    return found


def events(log: meshlog.EventLog) -> list[meshlog.RecordedEvent]:
    assert tracing.flush(30)
    return everything(log)


def test_spans_form_a_tree_with_trace_task_and_agent(log: meshlog.EventLog) -> None:
    with meshlog.trace(task_id="42", agent_id="api-coder") as ctx, meshlog.span("plan") as plan:
        plan.set(steps=3)
        with meshlog.span("step"):
            pass
    written = events(log)
    assert [e.type for e in written] == ["span.start", "span.start", "span.end", "span.end"]
    outer_start, inner_start, inner_end, outer_end = written
    assert outer_start.id == plan.id and outer_start.parent_id is None
    assert inner_start.parent_id == outer_start.id and inner_end.parent_id == inner_start.id
    assert outer_end.parent_id == outer_start.id
    assert inner_start.root_id == outer_start.id and inner_start.depth == 1
    assert {(e.trace_id, e.task_id, e.agent_id, e.stream) for e in written} == {
        (ctx.trace_id, "42", "api-coder", "task:42")
    }
    assert outer_end.data["ok"] is True and outer_end.data["steps"] == 3 and outer_end.data["duration_ms"] >= 0
    assert all(e.idempotency_key == f"trace:{e.id}" for e in written)


def test_an_error_is_recorded_and_raised_unchanged(log: meshlog.EventLog) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom, match="bad input"), meshlog.trace(), meshlog.span("parse"):
        raise Boom("bad input")
    end = events(log)[-1]
    assert end.type == "span.end"
    assert end.data["ok"] is False and end.data["error"] == "bad input"
    assert end.data["error_type"].endswith("Boom")


def test_traced_functions_and_tools(log: meshlog.EventLog) -> None:
    @meshlog.traced
    def plan(n: int) -> int:
        return read_file("a.py") + n

    @meshlog.traced(tool=True, name="read_file")
    def read_file(path: str) -> int:
        return 7

    @meshlog.traced
    async def act() -> str:
        return "done"

    with meshlog.trace(agent_id="a", log_full_payload=True):
        assert plan(1) == 8
        assert asyncio.run(act()) == "done"
    written = events(log)
    assert [e.type for e in written] == [
        "span.start",
        "tool.call",
        "tool.result",
        "span.end",
        "span.start",
        "span.end",
    ]
    call, result = written[1], written[2]
    assert call.data == {"tool": "read_file", "args": {"path": "a.py"}}
    assert result.data["ok"] is True and result.data["result"] == 7 and result.parent_id == call.id
    assert call.parent_id == written[0].id
    assert written[0].data["name"].endswith("plan")


def test_tool_arguments_are_kept_only_with_full_payloads(log: meshlog.EventLog) -> None:
    @meshlog.traced(tool=True)
    def lookup(secret: str) -> str:
        return secret

    with meshlog.trace():
        lookup("s3cr3t")
    call, result = events(log)
    assert "args" not in call.data and "result" not in result.data


def test_context_reaches_asyncio_tasks_threads_and_pools(log: meshlog.EventLog) -> None:
    def work(name: str) -> None:
        with meshlog.span(name):
            pass

    async def main() -> None:
        async def child(name: str) -> None:
            await asyncio.sleep(0)
            work(name)

        await asyncio.gather(child("task-a"), child("task-b"))

    with meshlog.trace(task_id="t-1", agent_id="agent") as ctx, meshlog.span("root") as root:
        asyncio.run(main())
        thread = threading.Thread(target=work, args=("thread",))
        thread.start()
        thread.join()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(work, ["pool-1", "pool-2"]))
    # Work submitted to the same pool outside the trace runs outside it.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(work, "outside").result()
    starts = {e.data["name"]: e for e in events(log) if e.type == "span.start"}
    for name in ("task-a", "task-b", "thread", "pool-1", "pool-2"):
        assert starts[name].parent_id == root.id, name
        assert (starts[name].trace_id, starts[name].task_id) == (ctx.trace_id, "t-1")
    assert starts["outside"].parent_id is None and starts["outside"].trace_id != ctx.trace_id


def test_tracing_off_calls_through_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MESHLOG_URL", "DATABASE_URL", "PG_PRIMARY_URL"):
        monkeypatch.delenv(name, raising=False)
    tracing.configure()
    try:

        @meshlog.traced
        def f() -> int:
            return 1

        with meshlog.trace(), meshlog.span("x") as s:
            assert f() == 1
        assert s.id is None
        assert tracing.stats() == tracing.TracingStats(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        assert tracing.flush(1) is False
    finally:
        tracing.shutdown()


def test_configured_from_meshlog_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("MESHLOG_URL", url)
    tracing.configure(spool=False)
    try:
        with meshlog.span("from-env"):
            pass
        assert tracing.flush(30)
    finally:
        tracing.shutdown()
    with meshlog.connect(url) as log:
        assert [e.type for e in log.query().events] == ["span.start", "span.end"]


def test_a_failing_redact_hook_keeps_nothing_and_never_raises(log: meshlog.EventLog) -> None:
    def redact(kind: str, value: object) -> object:
        raise RuntimeError("hook bug")

    tracing.configure(log=log, spool=False, log_full_payload=True, redact=redact)

    @meshlog.traced(tool=True)
    def tool(x: int) -> int:
        return x

    with meshlog.trace():
        assert tool(3) == 3
    call, result = events(log)
    assert "args" not in call.data and "result" not in result.data
    assert tracing.stats().errors == 2


def test_writer_batches_and_counts(tmp_path: Path) -> None:
    with meshlog.connect(f"sqlite:///{tmp_path / 'w.db'}") as log:
        writer = Writer(log=log, spool=False, batch_size=50)
        from meshlog.tracing._context import new_event

        for i in range(500):
            assert writer.enqueue(new_event("span.start", {"name": f"s{i}"}, ctx=None, parent_id=None))
        assert writer.flush(30)
        stats = writer.stats()
        assert (stats.enqueued, stats.written, stats.dropped, stats.queue_depth) == (500, 500, 0, 0)
        writer.close()
        assert [e.data["name"] for e in everything(log)] == [f"s{i}" for i in range(500)]


def test_pending_events_are_built_in_queue_order_and_a_failing_one_is_counted(tmp_path: Path) -> None:
    from meshlog.events import NewEvent
    from meshlog.tracing._context import new_event
    from meshlog.tracing._writer import PendingEvent

    class Pending(PendingEvent):
        __slots__ = ("name",)

        def __init__(self, name: str) -> None:
            self.name = name

        def build(self) -> NewEvent | None:
            if self.name == "bad":
                raise ValueError("cannot build")
            return (
                None if self.name == "none" else new_event("span.start", {"name": self.name}, ctx=None, parent_id=None)
            )

    with meshlog.connect(f"sqlite:///{tmp_path / 'w.db'}") as log:
        writer = Writer(log=log, spool=False)
        for name in ("a", "bad", "none", "b"):
            writer.enqueue(Pending(name))
        writer.enqueue(new_event("span.start", {"name": "c"}, ctx=None, parent_id=None))
        assert writer.flush(30)
        stats = writer.stats()
        writer.close()
        assert (stats.enqueued, stats.written, stats.errors) == (5, 3, 1)
        assert [e.data["name"] for e in everything(log)] == ["a", "b", "c"]


def test_a_full_queue_drops_and_counts_never_blocks(tmp_path: Path) -> None:
    from meshlog.tracing._context import new_event

    spool_path = tmp_path / "spool.db"
    writer = Writer(f"http://127.0.0.1:{free_port()}", spool=spool_path, max_queue=10, probe_interval=60)
    accepted = sum(
        writer.enqueue(new_event("span.start", {"name": str(i)}, ctx=None, parent_id=None)) for i in range(1000)
    )
    assert writer.flush(30)
    stats = writer.stats()
    assert stats.dropped == 1000 - accepted and stats.dropped > 0
    assert stats.enqueued == accepted == stats.spooled
    assert stats.spool_pending == accepted
    writer.close()


def test_spool_bodies_round_trip() -> None:
    from meshlog.tracing._context import TraceContext, new_event

    ctx = TraceContext(trace_id="t", task_id="k", agent_id="a", metadata={"env": "test"})
    event = new_event("llm.call", {"model": "m"}, ctx=ctx, parent_id=meshlog.uuid7(), attributes={"x": 1})
    (back,) = decode_events(encode_events([event]))
    assert back == event


# -- the server goes away -----------------------------------------------------------------------------------------
class _Serving:
    """A meshlog server on a fixed port, that can be stopped and started again on the same port."""

    def __init__(self, url: str, port: int) -> None:
        self.url = url
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.server: Server | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        app = create_app(self.url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        config = uvicorn.Config(app, log_level="error", lifespan="on", timeout_graceful_shutdown=2)
        self.server = Server(config, app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        self._sock = sock

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.should_exit = True
        self.thread.join(20)
        self._sock.close()
        assert not self.thread.is_alive()


@pytest.fixture(params=["sqlite", "postgres"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path / 'server.db'}"


def test_events_survive_an_outage_and_arrive_exactly_once(durable_url: str, tmp_path: Path) -> None:
    serving = _Serving(durable_url, free_port())
    spool = tmp_path / "tracing-spool.db"
    tracing.configure(serving.base_url, spool=spool, probe_interval=0.2, batch_size=20)
    names: list[str] = []
    stop = threading.Event()

    def agent() -> None:
        """Traces steps continuously while the server comes and goes."""
        i = 0
        while not stop.is_set():
            with meshlog.trace(task_id="outage", agent_id="survivor"), meshlog.span(f"step-{i}"):
                names.append(f"step-{i}")
            i += 1
            time.sleep(0.002)

    try:
        # Unreachable from the start: everything goes to the spool.
        worker = threading.Thread(target=agent)
        worker.start()
        time.sleep(0.3)
        assert tracing.flush(30)
        assert tracing.stats().spooled > 0
        serving.start()
        time.sleep(0.5)
        serving.stop()  # goes away while the agent is writing
        time.sleep(0.5)
        serving.start()
        time.sleep(0.5)
        stop.set()
        worker.join()
        assert tracing.flush(30)
        deadline = time.monotonic() + 30
        while tracing.stats().spool_pending and time.monotonic() < deadline:
            tracing.flush(1)
            time.sleep(0.1)
        stats = tracing.stats()
        assert stats.spool_pending == 0 and stats.dropped == 0 and stats.spool_full == 0 and stats.rejected == 0
        assert stats.spooled > 0 and stats.delivered > 0
    finally:
        stop.set()
        tracing.shutdown()
        if serving.server is not None and serving.thread is not None and serving.thread.is_alive():
            serving.stop()
    with meshlog.connect(durable_url) as log:
        stored = everything(log, task_id="outage")
    per_step = Counter(e.data["name"] for e in stored)
    assert set(per_step) == set(names)
    assert set(per_step.values()) == {2}  # each step's start and end, exactly once
    assert len({e.idempotency_key for e in stored}) == len(stored) == 2 * len(names)
    # In order: each step's end after its start.
    position = {(e.data["name"], e.type): e.position for e in stored}
    assert all(position[(n, "span.start")] < position[(n, "span.end")] for n in names)


def test_exit_writes_the_queue_and_spools_what_cannot_be_written(tmp_path: Path) -> None:
    db = tmp_path / "exit.db"
    spool = tmp_path / "exit-spool.db"
    script = textwrap.dedent(
        f"""
        import meshlog, meshlog.tracing
        meshlog.tracing.configure({f"sqlite:///{db}"!r}, spool=False)
        with meshlog.trace(task_id="exit"):
            for i in range(200):
                with meshlog.span(f"s{{i}}"):
                    pass
        # no flush: the interpreter exits with events queued

        meshlog.tracing.configure("http://127.0.0.1:{free_port()}", spool={str(spool)!r}, exit_timeout=2)
        with meshlog.trace(task_id="exit"):
            with meshlog.span("unreachable"):
                pass
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=120)
    with meshlog.connect(f"sqlite:///{db}") as log:
        assert len(everything(log, task_id="exit")) == 400
    with Spool(spool) as kept:
        assert kept.status().pending_events == 2
