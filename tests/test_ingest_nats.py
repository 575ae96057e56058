"""NATS JetStream ingestion against real servers: the NATS at $MESHLOG_TEST_NATS (default 127.0.0.1:4222), a
three-node JetStream cluster started here with nats-server, and PostgreSQL behind a TCP proxy that is cut.

Every test uses streams of its own (unique names) and deletes them. Without NATS (or nats-server) the tests are
skipped with the reason, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js import errors as js_errors

import meshlog
from meshlog.ingest import decode_message
from meshlog.ingest.nats import AsyncNatsPublisher, NatsIngest, NatsPublisher
from server_helpers import free_port

pytestmark = pytest.mark.nats

NATS_URL = os.environ.get("MESHLOG_TEST_NATS", "nats://127.0.0.1:4222")
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
DEADLINE = 60.0  # seconds any wait may take before the test fails (a bound against hangs, not a timing check)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; required under CI=true")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def nats_url() -> str:
    async def probe() -> None:
        client = await nats.connect(NATS_URL, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=1)
        try:
            await client.jetstream().account_info()
        finally:
            await client.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        _unavailable(f"NATS JetStream at {NATS_URL} unreachable ({exc!r}); set MESHLOG_TEST_NATS to run these tests")
    return NATS_URL


@dataclass
class Stream:
    """A stream of this test's own: ``name``, its ``subject`` (``prefix.events``) and a ``dead`` subject."""

    name: str
    prefix: str
    client: Client
    js: JetStreamContext

    @property
    def subject(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dead(self) -> str:
        return f"dead.{self.prefix}"

    async def publish(self, body: bytes | str, msg_id: str | None = None) -> api.PubAck:
        raw = body.encode() if isinstance(body, str) else body
        return await self.js.publish(self.subject, raw, headers={"Nats-Msg-Id": msg_id} if msg_id else None)


@pytest_asyncio.fixture
async def stream(nats_url: str) -> AsyncIterator[Stream]:
    token = uuid.uuid4().hex[:10]
    client = await nats.connect(nats_url)
    made = Stream(f"MLT_{token}", f"mlt.{token}", client, client.jetstream())
    try:
        yield made
    finally:
        for name in (made.name, f"{made.name}_DEAD"):
            with contextlib.suppress(js_errors.NotFoundError):
                await made.js.delete_stream(name)
        await client.close()


async def wait_until(condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(worker: NatsIngest) -> AsyncIterator[asyncio.Task[meshlog.ingest.nats.IngestStats]]:
    task = asyncio.create_task(worker.run())
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait({task, ready}, timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED)
    if not worker.ready.is_set():
        ready.cancel()
        await task  # raises what stopped the worker
        raise AssertionError("the worker did not start")
    try:
        yield task
    finally:
        worker.stop()
        await asyncio.wait_for(task, DEADLINE)


def body(i: int, **more: object) -> str:
    return json.dumps({"type": "test.item", "data": {"i": i}, "task_id": "t", **more})


async def count(log: meshlog.AsyncEventLog) -> int:
    page = await log.query(limit=1, total_count=True)
    assert page.total_count is not None
    return page.total_count


async def all_items(log: meshlog.AsyncEventLog) -> list[int]:
    """The ``i`` of every stored event, in order (duplicates would show twice)."""
    items: list[int] = []
    cursor: str | None = None
    while True:
        page = await log.query(limit=1000, cursor=cursor)
        items += [event.data["i"] for event in page.events]
        if not page.has_more:
            return sorted(items)
        cursor = page.next_cursor


# -- publish, ingest, exactly once ----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_published_events_are_stored_once_with_the_ids_the_publisher_got(
    stream: Stream, nats_url: str, tmp_path: Path
) -> None:
    log = await meshlog.connect_async(f"sqlite:///{tmp_path / 'events.db'}")
    worker = NatsIngest(nats_url, stream=stream.name, subjects=[f"{stream.prefix}.>"], store=log, fetch_timeout=0.5)
    async with running(worker):
        async with await AsyncNatsPublisher.connect(nats_url, subject=stream.subject) as publisher:
            started = await publisher.publish("task.started", {"capability": "code"}, task_id="42", agent_id="a")
            call = await publisher.publish("llm.call", {"model": "m"}, task_id="42", parent_id=started.id)
            again = await publisher.publish("llm.call", {"model": "m"}, task_id="42", idempotency_key="call-7")
            retried = await publisher.publish("llm.call", {"model": "m"}, task_id="42", idempotency_key="call-7")
            with pytest.raises(meshlog.ValidationError):
                await publisher.publish("bad type!", {})
        assert (again.duplicate, retried.duplicate) == (False, True)  # JetStream kept the retry once
        assert retried.id != again.id  # ... so the id of the second try is never stored
        with NatsPublisher(nats_url, subject=stream.subject) as sync_publisher:
            done = sync_publisher.publish("task.finished", {"ok": True}, task_id="42", parent_id=started.id)
        one_shot = await asyncio.to_thread(meshlog.publish_nats, nats_url, stream.subject, "note", {"x": 1})
        await wait_until(lambda: worker.stats.processed == 5, "5 messages stored")
    events = {e.id: e for e in (await log.query(limit=100)).events}
    assert set(events) == {started.id, call.id, again.id, done.id, one_shot.id}
    assert events[call.id].parent_id == started.id and events[call.id].root_id == started.id
    assert events[again.id].idempotency_key == "call-7"
    assert events[started.id].stream == "task:42" and events[started.id].agent_id == "a"
    assert worker.stats.to_dict() == {
        "processed": 5,
        "duplicates": 0,
        "malformed": 0,
        "failures": 0,
        "dead_lettered": 0,
        "malformed_reasons": {},
    }
    await log.close()


@pytest.mark.asyncio
async def test_the_same_message_id_twice_and_a_cloud_event_twice_are_stored_once(stream: Stream, nats_url: str) -> None:
    # A short duplicate window lets both copies into the stream: the ingest worker must then dedupe them.
    await stream.js.add_stream(name=stream.name, subjects=[f"{stream.prefix}.>"], duplicate_window=0.2)
    envelope = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "orchestrator",
        "type": "com.dapr.event.sent",
        "topic": "task-progress",
        "data": {"taskId": "42", "status": "running"},
    }
    first = [await stream.publish(body(1), "m-1"), await stream.publish(json.dumps(envelope))]
    await asyncio.sleep(0.4)
    second = [await stream.publish(body(1), "m-1"), await stream.publish(json.dumps(envelope))]
    assert [a.seq for a in first + second] == [1, 2, 3, 4] and not any(a.duplicate for a in second)
    async with await meshlog.connect_async("memory://") as log:
        worker = NatsIngest(nats_url, stream=stream.name, store=log, fetch_timeout=0.5, batch=1)
        async with running(worker):
            await wait_until(lambda: worker.stats.processed == 4, "4 messages answered")
        events = (await log.query(limit=100)).events
        assert sorted(e.idempotency_key or "" for e in events) == ["dapr:orchestrator:ce-1", "m-1"]
        assert {e.type for e in events} == {"test.item", "task.progress"}
        assert (worker.stats.processed, worker.stats.duplicates) == (4, 2)


@pytest.mark.asyncio
async def test_messages_of_a_worker_that_died_before_acking_are_redelivered_and_stored_once(
    stream: Stream, nats_url: str
) -> None:
    await stream.js.add_stream(name=stream.name, subjects=[f"{stream.prefix}.>"])
    for i in range(5):
        await stream.publish(body(i), f"m-{i}")
    durable = "workers"
    await stream.js.add_consumer(
        stream.name,
        api.ConsumerConfig(durable_name=durable, ack_policy=api.AckPolicy.EXPLICIT, ack_wait=1.0, max_deliver=-1),
    )
    async with await meshlog.connect_async("memory://") as log:
        # The first worker takes all five, commits three, and dies before acking any.
        dead = await stream.js.pull_subscribe_bind(durable=durable, stream=stream.name)
        taken = await dead.fetch(5, timeout=5)
        assert len(taken) == 5
        for msg in taken[:3]:
            await log.emit_batch(decode_message(msg.data, subject=msg.subject, headers=msg.headers).events)
        await dead.unsubscribe()
        assert await count(log) == 3
        worker = NatsIngest(nats_url, stream=stream.name, durable=durable, store=log, fetch_timeout=0.5)
        async with running(worker):
            await wait_until(lambda: worker.stats.processed == 5, "5 redelivered messages answered")
        assert await all_items(log) == [0, 1, 2, 3, 4]
        assert worker.stats.duplicates == 3
        info = await stream.js.consumer_info(stream.name, durable)
        assert (info.num_ack_pending, info.num_pending) == (0, 0)


# -- malformed messages ---------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_malformed_messages_are_terminated_counted_and_dead_lettered(stream: Stream, nats_url: str) -> None:
    await stream.js.add_stream(name=f"{stream.name}_DEAD", subjects=[stream.dead])
    bad_cloud_event = {"specversion": "1.0", "id": "x", "source": "s", "type": "t", "data": [1]}
    published = {
        "not_json": b"{not json",
        "invalid_event": b'{"type": "ok", "typo": 1}',
        "invalid_event-2": b'{"type": "bad type!"}',
        "data_not_object": json.dumps(bad_cloud_event).encode(),
        "idempotency_conflict": body(2, idempotency_key="k").encode(),
    }
    async with await meshlog.connect_async("memory://") as log:
        worker = NatsIngest(
            nats_url,
            stream=stream.name,
            subjects=[f"{stream.prefix}.>"],
            store=log,
            dead_letter=stream.dead,
            fetch_timeout=0.5,
        )
        async with running(worker):
            await stream.publish(body(1, idempotency_key="k"), "good")
            await wait_until(lambda: worker.stats.processed == 1, "the good message stored")
            for name, raw in published.items():
                await stream.publish(raw, name)
            await wait_until(lambda: worker.stats.malformed == 5, "5 malformed messages terminated")
            await asyncio.sleep(1.5)  # a terminated message is never delivered again
        assert worker.stats.malformed_reasons == {
            "not_json": 1,
            "invalid_event": 2,
            "data_not_object": 1,
            "idempotency_conflict": 1,
        }
        assert (worker.stats.malformed, worker.stats.dead_lettered, worker.stats.processed) == (5, 5, 1)
        assert await count(log) == 1
    info = await stream.js.consumer_info(stream.name, "meshlog-ingest")
    assert (info.num_ack_pending, info.num_pending, info.num_redelivered) == (0, 0, 0)  # none comes back
    reader = await stream.js.pull_subscribe(stream.dead, stream=f"{stream.name}_DEAD")
    letters = await reader.fetch(10, timeout=5)
    assert len(letters) == 5
    by_id = {(m.headers or {})["Meshlog-Msg-Id"]: m for m in letters}
    assert {k: m.data for k, m in by_id.items()} == published
    headers = by_id["idempotency_conflict"].headers or {}
    assert headers["Meshlog-Reason"] == "idempotency_conflict" and headers["Meshlog-Subject"] == stream.subject
    assert "idempotency key 'k'" in headers["Meshlog-Error"] and headers["Meshlog-Stream"] == stream.name


# -- a PostgreSQL outage --------------------------------------------------------------------------------------------
class Proxy:
    """A TCP proxy on a free loopback port in front of ``target``, that can be cut (the listener closed and every
    connection dropped: PostgreSQL unreachable) and restored."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


@pytest.mark.asyncio
async def test_a_postgres_outage_naks_messages_and_all_arrive_once_it_is_back(
    stream: Stream, nats_url: str, pg_url: str
) -> None:
    parts = urlsplit(pg_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    proxied = parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    worker = NatsIngest(
        nats_url,
        stream=stream.name,
        subjects=[f"{stream.prefix}.>"],
        store=proxied,
        fetch_timeout=0.5,
        nak_delay=0.1,
        max_nak_delay=0.5,
    )
    async with await meshlog.connect_async(pg_url) as direct, running(worker):
        for i in range(100):
            await stream.publish(body(i), f"m-{i}")
        await wait_until(lambda: worker.stats.processed == 100, "100 messages stored")
        await proxy.cut()
        for i in range(100, 300):
            await stream.publish(body(i), f"m-{i}")
        await wait_until(lambda: worker.stats.failures >= 10, "messages nak'd while PostgreSQL is unreachable")
        assert await count(direct) == 100
        await proxy.start()
        await wait_until(_at_least(direct, 300), "every message stored after the outage")
        items = await all_items(direct)
    assert items == list(range(300))  # nothing lost, nothing doubled
    assert worker.stats.malformed == 0
    await proxy.cut()


# -- kill -9 of a worker process ------------------------------------------------------------------------------------
def _worker(nats_url: str, stream: Stream, store: str, *extra: str) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "meshlog.cli",
        "--url",
        store,
        "ingest",
        "nats",
        "--url",
        nats_url,
        "--stream",
        stream.name,
        "--subjects",
        f"{stream.prefix}.>",
        "--ack-wait",
        "2",
        "--batch",
        "50",
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_kill_9_mid_batch_then_sigterm_then_a_new_worker_lose_and_double_nothing(
    stream: Stream, nats_url: str, pg_url: str
) -> None:
    total = 6000
    await stream.js.add_stream(name=stream.name, subjects=[f"{stream.prefix}.>"])
    pending = [
        stream.js.publish_async(stream.subject, body(i).encode(), headers={"Nats-Msg-Id": f"m-{i}"})
        for i in range(total)
    ]
    for future in pending:
        await future
    async with await meshlog.connect_async(pg_url) as log:
        processes: list[subprocess.Popen[str]] = []
        try:
            first = _worker(nats_url, stream, pg_url)
            processes.append(first)
            await wait_until(_at_least(log, 500), "the first worker storing")
            first.send_signal(signal.SIGKILL)
            assert first.wait(DEADLINE) == -signal.SIGKILL
            killed_at = await count(log)
            assert killed_at < total, "the first worker finished before it could be killed"

            second = _worker(nats_url, stream, pg_url, "--json")
            processes.append(second)
            await wait_until(_at_least(log, killed_at + 500), "the second worker storing")
            second.send_signal(signal.SIGTERM)
            out, err = second.communicate(timeout=DEADLINE)
            assert second.returncode == 0, err
            stats = json.loads(out)
            assert stats["processed"] > 0 and stats["malformed"] == 0 and stats["failures"] == 0
            stopped_at = await count(log)

            third = _worker(nats_url, stream, pg_url, "--json")
            processes.append(third)
            await wait_until(_at_least(log, total), "the third worker storing the rest")
            await wait_until(_acked(stream, total), "every message acked")
            third.send_signal(signal.SIGTERM)
            out, err = third.communicate(timeout=DEADLINE)
            assert third.returncode == 0, err
            assert json.loads(out)["processed"] >= total - stopped_at
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                process.communicate()  # waits, and closes the pipes
        items = await all_items(log)
    assert items == list(range(total))


def _at_least(log: meshlog.AsyncEventLog, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await count(log) >= n

    return check


def _acked(stream: Stream, total: int, durable: str = "meshlog-ingest") -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        info = await stream.js.consumer_info(stream.name, durable)
        delivered: int = info.delivered.stream_seq
        return info.num_pending == 0 and info.num_ack_pending == 0 and delivered >= total

    return check


# -- a three-node cluster -------------------------------------------------------------------------------------------
@dataclass
class Node:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Node]]:
    if not Path(NATS_SERVER).is_file():
        _unavailable(f"{NATS_SERVER} not found: install Debian's nats-server package")
    ports = [(free_port(), free_port()) for _ in range(3)]
    nodes: list[Node] = []
    try:
        for index, (client_port, route_port) in enumerate(ports):
            name = f"n{index + 1}"
            routes = ", ".join(f"nats-route://127.0.0.1:{r}" for i, (_, r) in enumerate(ports) if i != index)
            config = tmp_path / f"{name}.conf"
            config.write_text(
                f"server_name: {name}\n"
                f"listen: 127.0.0.1:{client_port}\n"
                f'jetstream {{ store_dir: "{tmp_path / name}", max_memory_store: 64MB, max_file_store: 256MB }}\n'
                f"cluster {{ name: meshlog_test, listen: 127.0.0.1:{route_port}, routes: [{routes}] }}\n",
                encoding="utf-8",
            )
            process = subprocess.Popen(
                [NATS_SERVER, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            nodes.append(Node(name, client_port, process))
        yield nodes
    finally:
        for node in nodes:
            if node.process.poll() is None:
                node.process.kill()
            node.process.wait()


async def _cluster_ready(urls: list[str]) -> None:
    async def ready() -> bool:
        try:
            client = await nats.connect(urls, connect_timeout=1, allow_reconnect=False, max_reconnect_attempts=1)
        except Exception:
            return False
        try:
            await client.jetstream().account_info()
            return True
        except Exception:
            return False
        finally:
            await client.close()

    await wait_until(ready, "the JetStream cluster to elect its leader")


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_three_node_cluster_losing_a_node_during_ingestion_loses_and_doubles_nothing(
    cluster: list[Node], tmp_path: Path
) -> None:
    urls = [node.url for node in cluster]
    await _cluster_ready(urls)
    total = 900
    name, subject = "MESHLOG_R3", "meshlog.r3.events"
    async with await meshlog.connect_async(f"sqlite:///{tmp_path / 'events.db'}") as log:
        worker = NatsIngest(
            urls, stream=name, subjects=["meshlog.r3.>"], replicas=3, store=log, ack_wait=2.0, fetch_timeout=0.5
        )
        published: list[str] = []
        async with await AsyncNatsPublisher.connect(urls, subject=subject, timeout=2.0, retries=20) as publisher:

            async def publish(start: int, stop: int) -> None:
                for i in range(start, stop):
                    result = await publisher.publish("test.item", {"i": i}, task_id="t", idempotency_key=f"k-{i}")
                    published.append(result.idempotency_key)

            async with running(worker):
                await publish(0, 300)
                await wait_until(lambda: worker.stats.processed >= 100, "ingestion under way")
                leaders: list[str] = []

                async def leader_known() -> bool:
                    info = await publisher.client.jetstream().stream_info(name)
                    assert info.config.num_replicas == 3 and info.cluster is not None
                    leaders[:] = [info.cluster.leader] if info.cluster.leader else []
                    return bool(leaders)

                await wait_until(leader_known, "the stream's leader")
                leader = next(node for node in cluster if node.name == leaders[0])
                leader.process.kill()  # the stream's leader goes: the two others elect a new one
                leader.process.wait()
                await publish(300, total)
                await wait_until(_at_least(log, total), "every event stored")
        items = await all_items(log)
    assert sorted(published) == sorted(f"k-{i}" for i in range(total))
    assert items == list(range(total))
    assert worker.stats.malformed == 0
