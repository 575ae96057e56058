"""Running the app under uvicorn with a graceful shutdown that does not hang on open subscriptions."""

from __future__ import annotations

import gc
import ipaddress
import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import uvicorn
from fastapi import FastAPI

from meshlog.server.app import begin_shutdown, create_app

__all__ = [
    "GC_THRESHOLD",
    "Server",
    "app_from_environment",
    "app_from_options",
    "is_loopback",
    "run",
    "run_workers",
    "settled_heap",
]

OPTIONS_VARIABLE: Final = "MESHLOG_SERVE_OPTIONS"
GC_THRESHOLD: Final = (10_000, 10, 10)
"""The collector's thresholds while serving (Python's default is 700, 10, 10): see :func:`settled_heap`."""


class Server(uvicorn.Server):
    """uvicorn's server, which first ends the app's open SSE subscriptions when it shuts down.

    uvicorn waits for every open connection before the lifespan shutdown runs; a live tail never closes by
    itself, so without this a shutdown would wait forever. In-flight requests still finish.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.meshlog_app = app

    async def shutdown(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        begin_shutdown(self.meshlog_app)
        await super().shutdown(sockets)  # type: ignore[arg-type]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(
    app: FastAPI, *, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info", access_log: bool = True
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM; in-flight requests finish, subscriptions end."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
    Server(config, app).run()


def run_workers(
    options: Mapping[str, Any],
    *,
    workers: int,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    access_log: bool = True,
) -> None:
    """Serve the app that ``create_app(**options)`` builds in ``workers`` processes sharing one socket (uvicorn's
    supervisor restarts a worker that dies). Each worker has its own connections and group committer; the store
    keeps them consistent, as it does for separate servers. On shutdown in-flight requests finish; live tails are
    closed after at most 10 seconds (clients resume them with ``Last-Event-ID``)."""
    os.environ[OPTIONS_VARIABLE] = json.dumps(dict(options))
    uvicorn.run(
        f"{__name__}:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )


@asynccontextmanager
async def settled_heap() -> AsyncIterator[None]:
    """While serving: everything the process holds once the app has started (modules, the app, its routes and
    models, the store's pool) is moved out of the garbage collector's reach (``gc.freeze()``), and the youngest
    generation is collected every 10,000 allocations rather than every 700.

    A full collection otherwise walks every object of the process, 80-120 ms each time here, about once every
    two seconds under load, and every request in flight waits for it: that was the server's p99. Frozen objects
    are still freed by reference counting; only cycles among them are never collected, and the startup heap
    holds no garbage worth that walk. Restored when the server stops.
    """
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def app_from_environment() -> FastAPI:
    """The app a worker process serves: ``create_app`` with the options :func:`run_workers` left in the
    environment."""
    return app_from_options(json.loads(os.environ.get(OPTIONS_VARIABLE, "{}")))


def app_from_options(options: Mapping[str, Any]) -> FastAPI:
    """``create_app`` from JSON-ready options (what ``meshlog serve`` passes to each worker); ``dapr`` may be
    ``{"pubsub_name": ..., "topics": ["topic", "topic=event.type", ...]}`` (topics added to the defaults). The
    process's heap is settled once the app has started (:func:`settled_heap`): this builds a server process's app,
    not one to embed."""
    kwargs = dict(options)
    dapr = kwargs.pop("dapr", None)
    if isinstance(dapr, Mapping):
        from meshlog.server.dapr import DaprSettings

        kwargs["dapr"] = DaprSettings(pubsub_name=dapr.get("pubsub_name") or "pubsub").with_topics(
            dapr.get("topics") or ()
        )
    elif dapr:
        kwargs["dapr"] = True
    app = create_app(**kwargs)
    app.state.meshlog.lifespan_hooks.append(settled_heap)
    return app
