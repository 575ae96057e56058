"""A real meshlog server for tests: uvicorn on a free port in a background thread, against a given store URL.

    with running_server("sqlite:///events.db") as base_url:
        httpx.get(f"{base_url}/healthz")

Reusable by any test module (the HTTP client's tests, the Dapr routes' tests): no mocks, real sockets.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from meshlog.server import Server, create_app

__all__ = ["RunningServer", "free_port", "running_app", "running_server"]

STARTUP_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RunningServer:
    """A uvicorn server running ``app`` in a thread; ``base_url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=10)
        self.server = Server(config, app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> None:
        """Start serving and wait until ``/healthz`` answers."""
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the meshlog server did not start (see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError("the meshlog server did not start in time")
            time.sleep(0.01)
        httpx.get(f"{self.base_url}/healthz", timeout=5).raise_for_status()

    def stop(self) -> None:
        """Shut down gracefully (in-flight requests finish, subscriptions end) and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=STARTUP_TIMEOUT)
        self.sock.close()
        if self.thread.is_alive():
            raise TimeoutError("the meshlog server did not shut down in time")


@contextlib.contextmanager
def running_app(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` while the block runs; yields the base URL."""
    server = RunningServer(app)
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()


@contextlib.contextmanager
def running_server(url: str, **options: Any) -> Iterator[str]:
    """Serve ``create_app(url, **options)`` while the block runs; yields the base URL."""
    with running_app(create_app(url, **options)) as base_url:
        yield base_url
