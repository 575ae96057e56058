"""Group commit: concurrent emits share store calls, and every caller still gets its own outcome."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from meshlog import AsyncEventLog, EventLog, StoreError, StoreUnavailable, WrongExpectedVersion
from meshlog._validation import AppendRequest
from meshlog.store import AppendOutcome
from meshlog.stores._threaded import AsyncThreadedStore
from meshlog.stores.memory import MemoryStore


class SlowMemoryStore(MemoryStore):
    """A real memory store whose commits take a millisecond, like a disk flush, and that counts them."""

    def __init__(self, delay: float = 0.001) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.poison_groups = False
        self.unavailable = False
        self.delay = delay

    def append(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        self.calls.append(len(requests))
        time.sleep(self.delay)
        if self.unavailable:
            raise StoreUnavailable("the store went away")
        if any(r.events[0].type == "encoding.bug" for r in requests):
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "a driver-level failure caused by one request")
        if self.poison_groups and len(requests) > 1 and any(r.events[0].type == "poison" for r in requests):
            raise StoreError("the group failed")
        if any(r.events[0].type == "poison" for r in requests):
            raise StoreError("poison")
        return super().append(requests)


def test_concurrent_emits_share_store_calls() -> None:
    store = SlowMemoryStore()
    log = EventLog(store)
    barrier = threading.Barrier(8)

    def write(w: int) -> list[int]:
        barrier.wait()
        return [log.emit("tick", {"w": w, "i": i}, stream=f"w{w}").position for i in range(25)]

    with ThreadPoolExecutor(8) as pool:
        positions = [p for chunk in pool.map(write, range(8)) for p in chunk]
    assert sorted(positions) == list(range(1, 201))
    assert sum(store.calls) == 200
    assert len(store.calls) < 200 * 0.6, f"{len(store.calls)} store calls for 200 emits"
    assert max(store.calls) > 1
    for w in range(8):
        assert [e.data["i"] for e in log.read_stream(f"w{w}")] == list(range(25))


def test_one_failing_request_does_not_fail_its_group() -> None:
    store = SlowMemoryStore()
    store.poison_groups = True
    log = EventLog(store)
    log.emit("created", stream="race")
    barrier = threading.Barrier(6)

    def attempt(i: int) -> str:
        barrier.wait()
        try:
            if i == 0:
                log.emit("poison")
            else:
                log.emit("ok", {"i": i}, stream="race", expected_version=1)
        except StoreError:
            return "store-error"
        except WrongExpectedVersion:
            return "wrong-version"
        return "ok"

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(attempt, range(6)))
    assert results[0] == "store-error"
    assert results[1:].count("ok") == 1
    assert results[1:].count("wrong-version") == 4
    assert [e.type for e in log.query()] == ["created", "ok"]


@pytest.mark.asyncio
async def test_async_emits_share_store_calls() -> None:
    store = SlowMemoryStore()
    log = AsyncEventLog(AsyncThreadedStore(store, offload=True, poll_interval=0.01))
    events = await asyncio.gather(*(log.emit("tick", {"i": i}) for i in range(100)))
    assert sorted(e.position for e in events) == list(range(1, 101))
    assert len(store.calls) < 100


def test_an_unreachable_store_fails_the_group_once_without_retrying_each_request() -> None:
    store = SlowMemoryStore(delay=0.02)
    log = EventLog(store)
    store.unavailable = True
    barrier = threading.Barrier(6)

    def attempt(i: int) -> str:
        barrier.wait()
        try:
            log.emit("x", {"i": i})
        except StoreUnavailable:
            return "unavailable"
        return "ok"

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(attempt, range(6))) == ["unavailable"] * 6
    assert sum(store.calls) == 6  # each request was tried once: no group was split into retries


def test_an_unexpected_error_of_one_request_stays_with_it() -> None:
    store = SlowMemoryStore(delay=0.005)
    log = EventLog(store)
    barrier = threading.Barrier(5)

    def attempt(i: int) -> str:
        barrier.wait()
        try:
            log.emit("encoding.bug" if i == 2 else "fine", {"i": i})
        except StoreError as exc:
            return f"store-error from {type(exc.__cause__).__name__}"
        return "ok"

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(attempt, range(5)))
    assert results == ["ok", "ok", "store-error from UnicodeEncodeError", "ok", "ok"]
    assert sorted(e.data["i"] for e in log.query()) == [0, 1, 3, 4]


@pytest.mark.asyncio
async def test_cancelling_the_leader_does_not_fail_the_others() -> None:
    store = SlowMemoryStore(delay=0.05)
    log = AsyncEventLog(AsyncThreadedStore(store, offload=True, poll_interval=0.01))
    opener = asyncio.create_task(log.emit("opener"))
    await asyncio.sleep(0.01)  # the opener's write is in flight; the next callers queue behind it
    leader = asyncio.create_task(log.emit("leader"))
    await asyncio.sleep(0)
    followers = [asyncio.create_task(log.emit("follower", {"i": i})) for i in range(4)]
    await opener
    await asyncio.sleep(0.02)  # the leader now writes its group (itself and the followers)
    assert store.calls == [1, 5]
    leader.cancel()
    results = await asyncio.gather(*followers)
    assert [e.type for e in results] == ["follower"] * 4
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert sorted(e.type for e in await log.query()) == ["follower"] * 4 + ["leader", "opener"]


@pytest.mark.asyncio
async def test_a_caller_that_gives_up_in_the_queue_is_never_written_later() -> None:
    store = SlowMemoryStore(delay=0.1)
    log = AsyncEventLog(AsyncThreadedStore(store, offload=True, poll_interval=0.01))
    first = asyncio.create_task(log.emit("first"))
    await asyncio.sleep(0.02)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(log.emit("abandoned"), timeout=0.02)
    await first
    await log.emit("later")
    assert [e.type for e in await log.query()] == ["first", "later"]
