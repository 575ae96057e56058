"""Group commit: concurrent appends share transactions.

Each append waits in a queue; one caller at a time (the leader) takes everything queued and writes it with one
``store.append`` call, which stores in one transaction, then hands every caller its own outcome. Under load the
queue fills while the leader writes, so the cost of a transaction (commit, fsync, position lock) is shared by
many appends; with a single writer nothing waits. Every caller is answered only after its own request is
committed, so "acknowledged means durable" holds.

When the previous group held several requests (several writers are active), the leader waits a little
(at most ``max_wait`` seconds, 1 ms by default) for as many requests to queue before it writes: the writers
that were answered a moment ago are usually about to append again, and one transaction for all of them costs
far less than one each. A lone writer never waits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from meshlog._concurrency import AsyncCondition, AsyncLock, async_complete, async_wait
from meshlog._validation import AppendRequest
from meshlog.errors import MeshlogError, StoreError, StoreUnavailable
from meshlog.store_async import AppendOutcome, AsyncStore

MAX_GROUP_EVENTS = 2000
MAX_WAIT = 0.001


@dataclass(slots=True)
class _Slot:
    request: AppendRequest
    outcome: AppendOutcome | None = None
    done: bool = False
    error: BaseException | None = field(default=None)


class AsyncGroupCommitter:
    """Writes queued append requests together (see the module's docstring)."""

    def __init__(
        self, store: AsyncStore, *, max_group_events: int = MAX_GROUP_EVENTS, max_wait: float = MAX_WAIT
    ) -> None:
        self._store = store
        self._max_group_events = max_group_events
        self._max_wait = max_wait
        lock = AsyncLock()
        self._cond = AsyncCondition(lock)
        self._arrived = AsyncCondition(lock)
        self._pending: list[_Slot] = []
        self._busy = False
        self._last_group = 1

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the group being written (a gauge for metrics)."""
        return len(self._pending)

    async def submit(self, request: AppendRequest) -> AppendOutcome:
        """Append one request (in a group with whatever else is queued) and return its outcome."""
        slot = _Slot(request)
        async with self._cond:
            self._pending.append(slot)
            self._arrived.notify()
            try:
                while self._busy and not slot.done:
                    await self._cond.wait()
            except BaseException:
                # The caller gave up while queued: take the request back, so that it is not written later
                # behind the caller's back. (Once a leader has taken it, it is being written.)
                if slot in self._pending:
                    self._pending.remove(slot)
                raise
            lead = not slot.done
            if lead:
                self._busy = True
        if lead:
            # Runs to completion even if this caller is cancelled: the group holds other callers' events.
            slot = await async_complete(self._lead(slot))
        if slot.error is not None:
            raise slot.error
        assert slot.outcome is not None
        return slot.outcome

    async def _gather(self) -> None:
        """With other writers active, wait (bounded) until as many requests are queued as the last group had."""
        if self._last_group < 2 or self._max_wait <= 0:
            return
        deadline = time.monotonic() + self._max_wait
        while len(self._pending) < self._last_group:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await async_wait(self._arrived, remaining)

    def _take(self) -> list[_Slot]:
        taken = 0
        count = 0
        for slot in self._pending:
            if count and taken + len(slot.request.events) > self._max_group_events:
                break
            taken += len(slot.request.events)
            count += 1
        group, self._pending = self._pending[:count], self._pending[count:]
        return group

    async def _lead(self, own: _Slot) -> _Slot:
        """Write groups until ``own`` is written, then hand the lead back; returns ``own``."""
        try:
            while not own.done:
                async with self._cond:
                    await self._gather()
                    group = self._take()
                self._last_group = len(group)
                await self._write(group)
                async with self._cond:
                    self._cond.notify_all()
            return own
        finally:
            async with self._cond:
                self._busy = False
                self._cond.notify_all()

    async def _write(self, group: Sequence[_Slot]) -> None:
        try:
            outcomes = await self._store.append([slot.request for slot in group])
        except StoreUnavailable as exc:
            # The store is unreachable, or the commit's fate is unknown: retrying each request would only wait
            # again, or write twice. Every caller gets the error; idempotency keys make their retries safe.
            for slot in group:
                self._finish(slot, None, exc)
        except Exception as exc:
            if len(group) == 1:
                self._finish(group[0], None, _store_error(exc))
            else:
                # One request may have caused it: write each on its own, so it fails alone.
                await self._write_one_by_one(group)
        except BaseException as exc:
            self._finish_all(group, exc)
            raise
        else:
            for slot, outcome in zip(group, outcomes, strict=True):
                self._finish(slot, outcome, None)

    async def _write_one_by_one(self, group: Sequence[_Slot]) -> None:
        for index, slot in enumerate(group):
            try:
                (outcome,) = await self._store.append([slot.request])
            except StoreUnavailable as exc:
                for rest in group[index:]:
                    self._finish(rest, None, exc)
                return
            except Exception as exc:
                self._finish(slot, None, _store_error(exc))
            except BaseException as exc:
                self._finish_all(group, exc)
                raise
            else:
                self._finish(slot, outcome, None)

    @staticmethod
    def _finish(slot: _Slot, outcome: AppendOutcome | None, error: BaseException | None) -> None:
        slot.outcome, slot.error, slot.done = outcome, error, True

    @staticmethod
    def _finish_all(group: Sequence[_Slot], exc: BaseException) -> None:
        for slot in group:
            if not slot.done:
                slot.outcome = None
                slot.error = StoreError(f"the append was interrupted: {exc!r}")
                slot.done = True


def _store_error(exc: Exception) -> MeshlogError:
    if isinstance(exc, MeshlogError):
        return exc
    error = StoreError(f"the store failed: {exc!r}")
    error.__cause__ = exc
    return error
