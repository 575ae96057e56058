"""Running the app under uvicorn with a graceful shutdown that does not hang on open subscriptions."""

from __future__ import annotations

import ipaddress

import uvicorn
from fastapi import FastAPI

from meshlog.server.app import begin_shutdown

__all__ = ["Server", "is_loopback", "run"]


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


def run(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8080, log_level: str = "info") -> None:
    """Serve ``app`` until SIGINT or SIGTERM; in-flight requests finish, subscriptions end."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", timeout_graceful_shutdown=30)
    Server(config, app).run()
