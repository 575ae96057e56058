"""What the event explorer (the browser UI in ``meshlog/server/ui/``) reads, and the UI itself.

:func:`include_explorer` adds to an app made by :func:`~meshlog.server.create_app`:

- ``GET /v1/stats``: counts of the events recorded in a window, per time bucket, type and agent, and the failures
  (:mod:`meshlog.stats`; the stores count in SQL);
- ``GET /v1/traces``: the traces active in a window, the last active first, each summed up (events, agents, LLM
  calls, tokens, failures; :class:`meshlog.stats.TraceSummary`, grouped in SQL). ``POST /v1/traces`` is the OTLP
  receiver (:mod:`meshlog.server.otlp`): the same path, another method;
- ``GET /v1/traces/{trace_id}/spans``: a trace's events paired into spans for a waterfall (:mod:`meshlog.waterfall`);
- with ``ui``: ``GET /`` (the UI's ``index.html``) and ``/ui/...`` (its static files).

The API routes need the ``read`` scope like every other route once the store holds API tokens; the UI's files
hold no data and are served to anyone, with a Content-Security-Policy that lets the page load only its own scripts
and styles and talk only to this server.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from meshlog.errors import NotFound, ValidationError
from meshlog.events import RecordedEvent
from meshlog.stats import DEFAULT_BUCKET_SECONDS, DEFAULT_TRACE_LIMIT, MAX_TRACE_LIMIT
from meshlog.waterfall import build_waterfall

if TYPE_CHECKING:
    from meshlog.server.app import ServerState

__all__ = ["MAX_SPAN_EVENTS", "SECURITY_HEADERS", "UI_DIRECTORY", "include_explorer"]

UI_DIRECTORY: Final = Path(__file__).resolve().parent / "ui"
"""The UI's files, shipped in the wheel."""
MAX_SPAN_EVENTS: Final = 5000
"""The most events of one trace the spans route reads (its default ``limit``)."""
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
"""Headers of every UI file: no inline script or style, no other origin, not framed."""
_PAGE: Final = 1000
_BUCKET_RE: Final = re.compile(r"([0-9]{1,9})([smhd]?)")
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def include_explorer(app: FastAPI, state: ServerState, *, ui: bool = True) -> None:
    """Add the stats, traces and spans routes to ``app`` and, with ``ui``, the explorer's page and files."""
    app.include_router(_router(state))
    if ui:
        app.include_router(_page_router())
        app.mount("/ui", _UiFiles(directory=UI_DIRECTORY, check_dir=False), name="ui")


# -- parameters ---------------------------------------------------------------------------------------------------
def _time(name: str, text: str | None) -> datetime | None:
    """An ISO 8601 timestamp with its offset; ValidationError (422) otherwise."""
    if text is None or text == "":
        return None
    candidates = [text]
    if " " in text:
        candidates.append(text.replace(" ", "+"))  # a "+hh:mm" offset sent unencoded arrives as a space
    for candidate in candidates:
        try:
            value = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        if value.tzinfo is None:
            raise ValidationError(
                f"{name} needs a time zone offset (like 2026-01-02T03:04:05Z), got {text!r}", field=name, rule="aware"
            )
        return value
    raise ValidationError(f"{name} is not an ISO 8601 timestamp: {text!r}", field=name, rule="timestamp")


def _bucket(text: str | None) -> timedelta:
    """A bucket size: seconds (``60``) or with a unit (``30s``, ``5m``, ``1h``, ``1d``)."""
    if text is None or text == "":
        return timedelta(seconds=DEFAULT_BUCKET_SECONDS)
    match = _BUCKET_RE.fullmatch(text.strip())
    if match is None:
        raise ValidationError(
            f"bucket is a number of seconds, or a number with s, m, h or d (5m), got {text!r}",
            field="bucket",
            rule="duration",
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _limit(text: str | None, *, default: int = MAX_SPAN_EVENTS, most: int = MAX_SPAN_EVENTS) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= most:
        raise ValidationError(f"limit must be an integer from 1 to {most}, got {text!r}", field="limit", rule="range")
    return value


# -- the API ------------------------------------------------------------------------------------------------------
def _router(state: ServerState) -> APIRouter:
    router = APIRouter(tags=["explorer"])

    @router.get("/v1/stats")
    async def get_stats(
        request: Request, since: str | None = None, until: str | None = None, bucket: str | None = None
    ) -> dict[str, Any]:
        """Counts of the events recorded in ``[since, until)`` (default: the hour up to now): per ``bucket``
        (seconds, or 30s, 5m, 1h, 1d; default 60 s), per type, per agent, and the failures by type."""
        log = await state.authorize(request, "read")
        stats = await log.stats(since=_time("since", since), until=_time("until", until), bucket=_bucket(bucket))
        return stats.to_dict()

    @router.get("/v1/traces")
    async def get_traces(
        request: Request,
        since: str | None = None,
        until: str | None = None,
        limit: str | None = None,
        agent_id: str | None = None,
    ) -> dict[str, Any]:
        """The traces with events recorded in ``[since, until)`` (default: the hour up to now; at most 7 days), the
        last active first, at most ``limit`` (default 50, at most 500); with ``agent_id``, those that agent took
        part in. Each with its first and last ``recorded_at`` in the window, its events, agents (at most 10), LLM
        calls, tokens and failures, counted over the window's events."""
        log = await state.authorize(request, "read")
        end = _time("until", until) or datetime.now(UTC)
        start = _time("since", since) or end - timedelta(hours=1)
        most = _limit(limit, default=DEFAULT_TRACE_LIMIT, most=MAX_TRACE_LIMIT)
        traces = await log.traces(since=start, until=end, limit=most, agent_id=agent_id or None)
        return {
            "since": start.astimezone(UTC).isoformat(),
            "until": end.astimezone(UTC).isoformat(),
            "traces": [t.to_dict() for t in traces],
        }

    @router.get("/v1/traces/{trace_id}/spans")
    async def get_spans(request: Request, trace_id: str, limit: str | None = None) -> dict[str, Any]:
        """The trace's events as spans for a waterfall (start/end pairs, markers for other events), from its first
        ``limit`` events (default and at most 5,000); ``truncated`` says the trace has more."""
        log = await state.authorize(request, "read")
        most = _limit(limit)
        events: list[RecordedEvent] = []
        page = await log.query(trace_id=trace_id, limit=min(_PAGE, most + 1))
        events.extend(page)
        while page.has_more and len(events) <= most:
            page = await log.query(cursor=page.next_cursor, limit=min(_PAGE, most + 1 - len(events)))
            events.extend(page)
        if not events:
            raise NotFound(f"no events in trace {trace_id!r}")
        truncated = len(events) > most
        waterfall = build_waterfall(events[:most])
        return {
            "trace_id": trace_id,
            "start": None if waterfall.start is None else waterfall.start.isoformat(),
            "end": None if waterfall.end is None else waterfall.end.isoformat(),
            "event_count": waterfall.event_count,
            "truncated": truncated,
            "spans": [s.to_dict() for s in waterfall.spans],
        }

    return router


# -- the UI -------------------------------------------------------------------------------------------------------
class _UiFiles(StaticFiles):
    """The UI's static files, each with :data:`SECURITY_HEADERS`."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def _page_router() -> APIRouter:
    router = APIRouter(tags=["explorer"])

    @router.api_route("/", methods=["GET", "HEAD"], response_class=FileResponse, include_in_schema=False)
    async def index() -> Response:
        """The explorer's page."""
        page = UI_DIRECTORY / "index.html"
        if not page.is_file():
            raise NotFound("the event explorer is not installed")
        return FileResponse(page, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    return router
