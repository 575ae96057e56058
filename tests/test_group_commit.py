"""Group commit: concurrent emits share store calls, and every caller still gets its own outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from meshlog import EventLog, StoreError, WrongExpectedVersion
from meshlog._validation import AppendRequest
from meshlog.store import AppendOutcome
from meshlog.stores.memory import MemoryStore


class SlowMemoryStore(MemoryStore):
    """A real memory store whose commits take a millisecond, like a disk flush, and that counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.poison_groups = False

    def append(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        self.calls.append(len(requests))
        time.sleep(0.001)
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
    import asyncio

    from meshlog import AsyncEventLog
    from meshlog.stores._threaded import AsyncThreadedStore

    store = SlowMemoryStore()
    log = AsyncEventLog(AsyncThreadedStore(store, offload=True, poll_interval=0.01))
    events = await asyncio.gather(*(log.emit("tick", {"i": i}) for i in range(100)))
    assert sorted(e.position for e in events) == list(range(1, 101))
    assert len(store.calls) < 100
