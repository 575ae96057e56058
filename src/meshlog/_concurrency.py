"""The concurrency primitives of the async code and their sync twins.

Async modules (``*_async.py``) import the ``Async``/``async_`` names; ``tools/gen_sync.py`` renames them to the
sync names when it writes the sync module, so both variants share one source.
"""

from __future__ import annotations

import asyncio
import threading
import time

AsyncCondition = asyncio.Condition
Condition = threading.Condition


async def async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def sleep(seconds: float) -> None:
    time.sleep(seconds)
