"""The async event log on every store: the same API, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import meshlog
from meshlog import AsyncEventLog, NewEvent, WrongExpectedVersion


@pytest_asyncio.fixture
async def alog(store_url: str) -> AsyncIterator[AsyncEventLog]:
    log = await meshlog.connect_async(store_url)
    yield log
    await log.close()


@pytest.mark.asyncio
async def test_emit_query_read_replay(alog: AsyncEventLog) -> None:
    first = await alog.emit("task.started", {"capability": "code"}, task_id="42", agent_id="api-coder")
    call = await alog.emit("llm.call", {"model": "m"}, task_id="42", parent_id=first.id, idempotency_key="c1")
    assert await alog.emit("llm.call", {"model": "m"}, task_id="42", parent_id=first.id, idempotency_key="c1") == call
    batch = await alog.emit_batch([NewEvent(type="llm.response", data={"i": i}, task_id="42") for i in range(3)])
    assert [e.stream_position for e in batch] == [3, 4, 5]
    page = await alog.query(task_id="42", order="desc", limit=2)
    assert [e.data["i"] for e in page] == [2, 1] and page.has_more
    assert [e.type async for e in alog.read_stream("task:42", to_version=2)] == ["task.started", "llm.call"]
    replay = await alog.replay("task:42", meshlog.FunctionProjection(list, lambda s, e: [*s, e.type]))
    assert replay.events_replayed == 5 and replay.last_version == 5
    assert (await alog.get(call.id)).depth == 1
    with pytest.raises(WrongExpectedVersion):
        await alog.emit("x", stream="task:42", expected_version=0)


@pytest.mark.asyncio
async def test_concurrent_emits_are_group_committed_and_ordered(alog: AsyncEventLog) -> None:
    events = await asyncio.gather(*(alog.emit("tick", {"i": i}, stream=f"s{i % 4}") for i in range(60)))
    assert len({e.position for e in events}) == 60
    for s in range(4):
        assert [e.stream_position async for e in alog.read_stream(f"s{s}")] == list(range(1, 16))
    same = await asyncio.gather(*(alog.emit("once", {"v": 1}, idempotency_key="k") for _ in range(10)))
    assert len({e.id for e in same}) == 1


@pytest.mark.asyncio
async def test_subscribe_follows_live_events(alog: AsyncEventLog) -> None:
    await alog.emit("before")

    async def later() -> None:
        await asyncio.sleep(0.2)
        for i in range(3):
            await alog.emit("live", {"i": i})

    writer = asyncio.create_task(later())
    got = []
    async for event in alog.subscribe(poll_interval=0.05):
        got.append(event.type)
        if len(got) == 4:
            break
    await writer
    assert got == ["before", "live", "live", "live"]
