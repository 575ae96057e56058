"""The concurrency primitives of the async code and their sync twins.

Async modules (``*_async.py``) import the ``Async``/``async_`` names; ``tools/gen_sync.py`` renames them to the
sync names when it writes the sync module, so both variants share one source.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

AsyncCondition = asyncio.Condition
Condition = threading.Condition


AsyncLock = asyncio.Lock
Lock = threading.Lock


async def async_wait(condition: asyncio.Condition, timeout: float) -> None:
    """Wait on ``condition`` (its lock held) until notified or ``timeout`` seconds pass."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(condition.wait(), timeout)


def wait(condition: threading.Condition, timeout: float) -> None:
    """Wait on ``condition`` (its lock held) until notified or ``timeout`` seconds pass."""
    condition.wait(timeout)


async def async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


async def async_complete(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to completion even if the caller is cancelled meanwhile, then let the cancellation through.

    For work that others depend on (a group commit writes other callers' events): cancelling it halfway would
    leave them with an unknown outcome.
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
            continue
        break
    if cancelled:
        raise asyncio.CancelledError
    return result


def complete(work: T) -> T:
    """The sync twin of :func:`async_complete`: the work has already run."""
    return work
