"""The HTTP store against a real meshlog server (uvicorn, tests/server_helpers.py), no mocked HTTP.

A small TCP proxy between the store and the server plays the network's part: it can lose the response of a request
the server has committed, or stop listening as a server that is down would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from meshlog import (
    NO_STREAM,
    AsyncEventLog,
    EventFilter,
    FunctionProjection,
    IdempotencyConflict,
    InvalidCursor,
    NewEvent,
    NotFound,
    RecordedEvent,
    StoreUnavailable,
    ValidationError,
    WrongExpectedVersion,
)
from meshlog.errors import ConfigurationError
from meshlog.spool import Spool, Spooled, emit_or_spool_async
from meshlog.stores.http_async import AUTO_KEY_PREFIX, AsyncHttpStore, error_from_response, parse_http_url
from server_helpers import free_port, running_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A real meshlog server over a SQLite file; yields its base URL."""
    with running_server(f"sqlite:///{tmp_path / 'server.db'}") as base_url:
        yield base_url


@pytest_asyncio.fixture
async def log(server: str) -> AsyncIterator[AsyncEventLog]:
    store = AsyncHttpStore(server, retries=1, backoff=0.01)
    await store.migrate()
    async with AsyncEventLog(store) as log:
        yield log


async def everything(log: AsyncEventLog) -> list[RecordedEvent]:
    return list(await log.query(limit=1000))


class Proxy:
    """A TCP proxy in front of the server, one request per connection.

    ``lose_responses = n`` forwards the next ``n`` POSTs of events to the server, waits for its answer and then
    drops the connection instead of passing the answer on: the server committed, the client never hears it.
    ``await stop()`` closes the listening socket (connections are refused, as by a server that is down) and
    ``await start()`` listens again on the same port.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream_port = httpx.URL(upstream).port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lose_responses = 0
        self.lost = 0
        self.posts = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next(
                (int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0
            )
            body = await reader.readexactly(length)
            kept = [line for line in lines[:-2] if not line.lower().startswith("connection:")]
            request = ("\r\n".join([*kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1") + body
            is_post = lines[0].startswith("POST /v1/events ")
            self.posts += is_post
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            up_writer.write(request)
            await up_writer.drain()
            response = await up_reader.read()
            up_writer.close()
            await up_writer.wait_closed()
            if is_post and self.lose_responses > 0:
                self.lose_responses -= 1
                self.lost += 1
                return
            writer.write(response)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest_asyncio.fixture
async def proxy(server: str) -> AsyncIterator[Proxy]:
    proxy = Proxy(server)
    await proxy.start()
    yield proxy
    await proxy.stop()


# -- the event log over HTTP ---------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_emit_query_get_read_and_replay(log: AsyncEventLog) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    started = await log.emit(
        "task.started",
        {"capability": "code", "nested": {"list": [1, 2.5, None, True, "ü"]}},
        task_id="42",
        agent_id="api-coder",
        trace_id="t-1",
        metadata={"host": "odin"},
        occurred_at=when,
    )
    assert (started.stream, started.stream_position, started.tenant, started.depth) == ("task:42", 1, "default", 0)
    assert started.data == {"capability": "code", "nested": {"list": [1, 2.5, None, True, "ü"]}}
    assert started.metadata == {"host": "odin"} and started.occurred_at == when
    assert started.recorded_at.tzinfo is not None
    assert started.idempotency_key == f"{AUTO_KEY_PREFIX}{started.id}"
    call = await log.emit("llm.call", {"model": "m"}, task_id="42", parent_id=started.id, related=[started.id])
    assert (call.root_id, call.depth, call.related) == (started.id, 1, (started.id,))
    batch = await log.emit_batch([NewEvent(type="tick", data={"i": i}, task_id="42") for i in range(3)])
    assert [e.stream_position for e in batch] == [3, 4, 5]

    assert await log.get(started.id) == started
    assert [e.id for e in await log.query(task_id="42", types=("tick",))] == [e.id for e in batch]
    last = await log.query(order="desc", limit=2)
    assert [e.id for e in last] == [batch[2].id, batch[1].id] and last.has_more
    rest = await log.query(cursor=last.next_cursor, limit=10)
    assert [e.id for e in rest] == [batch[0].id, call.id, started.id]
    assert (await log.query(text="ü", total_count=True, limit=1)).total_count == 1
    assert (await log.query(since=started.recorded_at - timedelta(seconds=1), limit=10)).events[0] == started
    assert [e.stream_position async for e in log.read_stream("task:42", backwards=True)] == [5, 4, 3, 2, 1]
    assert [e.stream_position async for e in log.read_stream("task:42", from_version=2, to_version=3)] == [2, 3]
    assert await log.stream_version("task:42") == 5 and await log.stream_version("nothing") == 0
    assert [s.stream for s in await log.list_streams()] == ["task:42"]
    assert await log.head_position() == batch[2].position

    counting = FunctionProjection(int, lambda n, e: n + 1)
    replay = await log.replay("task:42", counting)
    assert (replay.state, replay.last_version) == (5, 5)
    again = await log.replay("task:42", counting, to_version=2)
    assert again.state == 2

    lineage = await log.lineage(call.id)
    assert [e.id for e in lineage.ancestors] == [started.id]
    graph = await log.graph(started.id)
    assert {node.event.id: node.distance for node in graph.nodes} == {started.id: 0, call.id: 1}


@pytest.mark.asyncio
async def test_a_stream_name_with_slashes_and_colons(log: AsyncEventLog) -> None:
    await log.emit("a", stream="team/alpha:run 1?")
    assert [e.type async for e in log.read_stream("team/alpha:run 1?")] == ["a"]
    assert await log.stream_version("team/alpha:run 1?") == 1


@pytest.mark.asyncio
async def test_reads_longer_than_one_server_page(log: AsyncEventLog) -> None:
    await log.emit_batch([NewEvent(type="tick", data={"i": i}, stream="long") for i in range(600)])
    await log.emit_batch([NewEvent(type="tick", data={"i": i}, stream="long") for i in range(600, 1200)])
    events = [e async for e in log.read_stream("long")]
    assert [e.data["i"] for e in events] == list(range(1200))
    page = await log.query(limit=1000)
    assert len(page) == 1000 and page.has_more
    assert await log.store.count("default", EventFilter(stream="long")) == 1200


@pytest.mark.asyncio
async def test_subscribe_and_checkpoints(log: AsyncEventLog) -> None:
    first = await log.emit("a")
    seen: list[str] = []

    async def follow() -> None:
        async for event in log.subscribe(poll_interval=0.05):
            seen.append(event.type)
            if len(seen) == 2:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    await log.emit("b")
    await asyncio.wait_for(task, 10)
    assert seen == ["a", "b"]
    assert await log.checkpoint("worker-2") is None
    await log.save_checkpoint("worker-1", first.position)
    assert await log.checkpoint("worker-1") == first.position


@pytest.mark.asyncio
async def test_snapshots_are_kept_by_the_client(log: AsyncEventLog) -> None:
    await log.store.save_snapshot("default", "s", "total", 1, 4, '{"n": 4}')
    assert await log.store.load_snapshot("default", "s", "total", 1) == (4, '{"n": 4}')
    assert await log.store.load_snapshot("default", "s", "total", 2) is None


# -- errors --------------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_server_errors_become_meshlog_errors(log: AsyncEventLog, server: str) -> None:
    await log.emit("a", stream="s", expected_version=NO_STREAM)
    with pytest.raises(WrongExpectedVersion) as version:
        await log.emit("a", stream="s", expected_version=0)
    assert (version.value.stream, version.value.expected, version.value.actual) == ("s", 0, 1)
    with pytest.raises(WrongExpectedVersion) as state:
        await log.emit("a", stream="s", expected_version=NO_STREAM)
    assert state.value.expected is NO_STREAM

    first = await log.emit("call", {"n": 1}, idempotency_key="k")
    assert await log.emit("call", {"n": 1}, idempotency_key="k") == first
    with pytest.raises(IdempotencyConflict) as conflict:
        await log.emit("call", {"n": 2}, idempotency_key="k")
    assert (conflict.value.key, conflict.value.existing_id) == ("k", first.id)

    with pytest.raises(ValidationError) as parent:
        await log.emit("child", parent_id="0190a5a0-0000-7000-8000-000000000000")
    assert (parent.value.field, parent.value.rule) == ("events[0].parent_id", "parent_exists")
    with pytest.raises(ValidationError) as reused:
        await log.emit("again", id=first.id)
    assert reused.value.rule == "unique"

    with pytest.raises(NotFound):
        await log.get("0190a5a0-0000-7000-8000-000000000000")
    with pytest.raises(NotFound):
        await log.lineage("0190a5a0-0000-7000-8000-000000000000")
    assert await log.store.graph("default", "0190a5a0-0000-7000-8000-000000000000", max_depth=2, limit=5) == ([], False)

    async with httpx.AsyncClient(base_url=server) as http:
        answer = await http.get("/v1/events", params={"cursor": "not-a-cursor"})
        assert isinstance(error_from_response(answer), InvalidCursor)
        answer = await http.post("/v1/events", content=b"{not json")
        bad = error_from_response(answer)
        assert isinstance(bad, ValidationError) and bad.rule == "bad_request"


@pytest.mark.asyncio
async def test_an_unreachable_server_is_store_unavailable_after_the_retries() -> None:
    store = AsyncHttpStore(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01)
    started = time.monotonic()
    async with AsyncEventLog(store) as log:
        with pytest.raises(StoreUnavailable, match="cannot reach"):
            await log.emit("a")
        with pytest.raises(StoreUnavailable):
            await log.head_position()
        with pytest.raises(StoreUnavailable):
            await store.migrate()
    assert time.monotonic() - started < 10


def test_url_options() -> None:
    assert parse_http_url("http://h:1/prefix/?timeout=3&retries=0") == (
        "http://h:1/prefix",
        {"timeout": "3", "retries": "0"},
    )
    with pytest.raises(ConfigurationError, match="unknown HTTP store options"):
        parse_http_url("http://h:1?pool=3")
    with pytest.raises(ConfigurationError):
        parse_http_url("ftp://h")
    with pytest.raises(ConfigurationError):
        AsyncHttpStore("http://h:1?retries=-1")
    assert AsyncHttpStore("http://user:secret@h:1").url == "http://user:***@h:1"


# -- retry safety --------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_retry_after_a_lost_response_does_not_write_twice(proxy: Proxy) -> None:
    async with AsyncEventLog(AsyncHttpStore(proxy.url, retries=3, backoff=0.01)) as log:
        proxy.lose_responses = 1
        event = await log.emit("llm.call", {"model": "m"})  # no key given: the store assigned one
        assert proxy.lost == 1 and proxy.posts == 2
        proxy.lose_responses = 2
        batch = await log.emit_batch([NewEvent(type="tick", data={"i": i}) for i in range(3)])
        assert proxy.lost == 3 and proxy.posts == 5
        stored = await everything(log)
        assert stored == [event, *batch]


# -- the spool -----------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_spooled_while_down_delivered_in_order_exactly_once(proxy: Proxy, tmp_path: Path) -> None:
    spool_path = tmp_path / "spool.db"
    store = AsyncHttpStore(proxy.url, retries=1, backoff=0.01, spool=spool_path, spool_probe_interval=0)
    async with AsyncEventLog(store) as log:
        first = await log.emit("step", {"n": 0}, stream="run")
        await proxy.stop()
        await store.migrate()  # with a spool, an unreachable server is not an error
        with pytest.raises(Spooled) as info:
            await log.emit("step", {"n": 1}, stream="run")
        assert isinstance(info.value, StoreUnavailable) and info.value.spooled
        assert info.value.path == str(spool_path) and len(info.value.event_ids) == 1
        assert await emit_or_spool_async(log, "step", {"n": 2}, stream="run") is None
        with pytest.raises(Spooled):
            await log.emit_batch([NewEvent(type="step", data={"n": n}, stream="run") for n in (3, 4)])
        assert store.spool is not None
        status = store.spool.status()
        assert (status.pending, status.pending_events) == (3, 4)

        await proxy.start()
        last = await log.emit("step", {"n": 5}, stream="run")  # delivers the spool first, then itself
        assert last.stream_position == 6
        assert store.spool.status().pending == 0 and store.spool.status().delivered == 3
        events = [e async for e in log.read_stream("run")]
        assert [e.data["n"] for e in events] == [0, 1, 2, 3, 4, 5]
        assert events[0] == first and events[1].id == info.value.event_ids[0]
        assert len(await everything(log)) == 6


@pytest.mark.asyncio
async def test_a_spooled_request_already_committed_is_not_written_again(log: AsyncEventLog, tmp_path: Path) -> None:
    """A flush killed after the server committed an entry but before the spool forgot it sends it again."""
    committed = await log.emit("step", {"n": 1}, idempotency_key="step-1")
    spool = Spool(tmp_path / "spool.db")
    spool.put(json.dumps({"type": "step", "data": {"n": 1}, "stream": committed.stream, "idempotency_key": "step-1"}))
    spool.put(json.dumps({"type": "step", "data": {"n": 2}, "stream": committed.stream, "idempotency_key": "step-2"}))
    store = AsyncHttpStore(str(log.store.url), spool=spool)
    try:
        report = await store.flush_spool()
    finally:
        await store.close()
    assert (report.delivered, report.rejected, report.remaining) == (2, 0, 0)
    assert [e.data["n"] for e in await everything(log)] == [1, 2]
    spool.close()


@pytest.mark.asyncio
async def test_flush_reports_and_keeps_what_it_could_not_deliver(proxy: Proxy, tmp_path: Path) -> None:
    store = AsyncHttpStore(proxy.url, retries=0, spool=tmp_path / "spool.db")
    async with AsyncEventLog(store) as log:
        await proxy.stop()
        for n in range(2):
            with pytest.raises(Spooled):
                await log.emit("step", {"n": n}, stream="s", expected_version=n)
        report = await store.flush_spool()
        assert report.remaining == 2 and report.error is not None and "cannot reach" in report.error
        await proxy.start()
        report = await store.flush_spool()
        assert (report.delivered, report.rejected, report.remaining) == (2, 0, 0)
        assert [e.data["n"] async for e in log.read_stream("s")] == [0, 1]


@pytest.mark.asyncio
async def test_a_request_the_server_refuses_is_kept_aside(proxy: Proxy, tmp_path: Path) -> None:
    store = AsyncHttpStore(proxy.url, retries=0, spool=tmp_path / "spool.db", spool_probe_interval=0)
    async with AsyncEventLog(store) as log:
        await proxy.stop()
        with pytest.raises(Spooled):
            await log.emit("step", stream="s", expected_version=NO_STREAM)
        with pytest.raises(Spooled):
            await log.emit("other", stream="t")
        await proxy.start()
        other = AsyncHttpStore(proxy.url)
        async with AsyncEventLog(other) as direct:
            await direct.emit("first", stream="s")  # the stream now exists: the spooled request cannot hold
        report = await store.flush_spool()
        assert (report.delivered, report.rejected, report.remaining) == (1, 1, 0)
        assert store.spool is not None
        (rejected,) = store.spool.rejected()
        assert "WrongExpectedVersion" in rejected.reason
        assert [e.type async for e in log.read_stream("t")] == ["other"]


@pytest.mark.asyncio
async def test_a_full_spool_refuses_the_append(tmp_path: Path) -> None:
    store = AsyncHttpStore(f"http://127.0.0.1:{free_port()}", retries=0, spool=tmp_path / "s.db", spool_max_bytes=400)
    async with AsyncEventLog(store) as log:
        with pytest.raises(Spooled):
            await log.emit("a", {"text": "x" * 100})
        with pytest.raises(StoreUnavailable, match="full") as info:
            await log.emit("a", {"text": "x" * 300})
        assert not isinstance(info.value, Spooled)
        assert store.spool is not None and store.spool.status().refused == 1
