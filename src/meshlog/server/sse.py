"""The live tail, ``GET /v1/subscribe``: matching events as Server-Sent Events, catch-up first, then live.

Each event is sent as ``id: <position>``, ``event: <type>``, ``data: <event JSON>``; a client that reconnects
with ``Last-Event-ID`` continues after that position, so it neither misses nor repeats an event. A comment line
is sent every ``ping`` seconds so that proxies keep the connection open.

The stream ends when the client disconnects (sse-starlette cancels the generator) and when the server shuts
down: ``stopping`` is set by :func:`meshlog.server.begin_shutdown` before uvicorn waits for open connections,
so a graceful shutdown never hangs on an open subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

from sse_starlette import EventSourceResponse, ServerSentEvent

from meshlog.events import RecordedEvent
from meshlog.log_async import AsyncEventLog
from meshlog.query import EventFilter

__all__ = ["event_stream", "sse_response"]


async def event_stream(
    log: AsyncEventLog,
    after_position: int,
    flt: EventFilter,
    stopping: asyncio.Event,
    *,
    poll_interval: float = 1.0,
) -> AsyncIterator[ServerSentEvent]:
    """The SSE messages of the events matching ``flt`` after ``after_position``, until ``stopping`` is set."""
    subscription = cast(
        "AsyncGenerator[RecordedEvent, None]",
        log.subscribe(after_position=after_position, filter=flt, poll_interval=poll_interval),
    )
    stop = asyncio.ensure_future(stopping.wait())
    try:
        while True:
            # Race the next event against shutdown: the subscription waits forever when nothing is written.
            following = asyncio.ensure_future(anext(subscription))
            done, _ = await asyncio.wait({following, stop}, return_when=asyncio.FIRST_COMPLETED)
            if following not in done:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await following
                return
            event = following.result()
            yield ServerSentEvent(
                data=json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":")),
                id=str(event.position),
                event=event.type,
            )
    finally:
        stop.cancel()
        await subscription.aclose()


def sse_response(messages: AsyncIterator[ServerSentEvent], *, ping: float) -> EventSourceResponse:
    """The streaming response: keep-alive comments every ``ping`` seconds, no caching, no proxy buffering."""
    return EventSourceResponse(messages, ping=ping, headers={"X-Accel-Buffering": "no"}, sep="\n")
