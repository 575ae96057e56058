"""meshlog's HTTP server: the API of docs/server.md as a FastAPI app, run by ``meshlog serve``.

Needs the ``server`` extra: ``pip install 'meshlog[server]'``.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import prometheus_client  # noqa: F401
    import sse_starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by the install smoke test
    raise ImportError(f"meshlog.server needs the server extra: pip install 'meshlog[server]' ({exc})") from exc

from meshlog.server.app import begin_shutdown, create_app, get_log
from meshlog.server.problems import Problem
from meshlog.server.runner import Server, app_from_options, is_loopback, run, run_workers

__all__ = [
    "Problem",
    "Server",
    "app_from_options",
    "begin_shutdown",
    "create_app",
    "get_log",
    "is_loopback",
    "run",
    "run_workers",
]
