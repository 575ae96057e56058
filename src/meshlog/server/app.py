"""The FastAPI application: meshlog's HTTP API (see docs/server.md for every route).

One :class:`~meshlog.AsyncEventLog` per app, opened by the lifespan and closed at shutdown. Concurrent writes
share transactions through the log's group committer; each request awaits its own append, so a ``201`` is sent
only after that request's events are committed.

Bodies are read by the routes themselves rather than by FastAPI so that every bad input is refused in the same
way before anything is parsed or written: over ``max_body_bytes`` (by ``Content-Length`` or while streaming) is a
413, invalid UTF-8, malformed JSON, wrong JSON types and unknown fields a 400, and meshlog's own validation a
422; never a 500, never a partial batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Annotated, Any, Final, TypeVar, cast

import pydantic
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import meshlog
from meshlog.errors import MeshlogError, StoreError, StoreUnavailable, ValidationError
from meshlog.events import NewEvent, RecordedEvent
from meshlog.lineage import DEFAULT_GRAPH_LIMIT
from meshlog.log_async import AsyncEventLog
from meshlog.query import EventFilter
from meshlog.server.auth import Authenticator
from meshlog.server.explorer import include_explorer
from meshlog.server.instances import InstanceSettings
from meshlog.server.metrics import CONTENT_TYPE, Metrics
from meshlog.server.problems import Problem, from_meshlog_error, problem_response
from meshlog.server.schemas import BatchIn, CheckpointIn, EventIn, OutcomeIn, SingleEventIn
from meshlog.server.sse import event_stream, sse_response
from meshlog.session import SessionState
from meshlog.types import TypeRegistry

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY_BYTES", "ServerState", "begin_shutdown", "create_app", "get_log"]

logger = logging.getLogger("meshlog.server")

DEFAULT_MAX_BODY_BYTES: Final = 1_048_576 * 2
DEFAULT_MAX_BATCH: Final = 1000
READY_TIMEOUT: Final = 2.0
_MAX_CACHED_TYPES: Final = 1000
_EXPECTED: Final[Mapping[str, meshlog.StreamState]] = {
    "any": meshlog.ANY,
    "no_stream": meshlog.NO_STREAM,
    "stream_exists": meshlog.STREAM_EXISTS,
}
M = TypeVar("M", bound=pydantic.BaseModel)


class ServerState:
    """What the routes share: the log (opened lazily again if the store was down at startup), the metrics and
    the shutdown signal for open subscriptions."""

    def __init__(
        self,
        url: str | None,
        *,
        tenant: str,
        migrate: bool,
        types: TypeRegistry | Sequence[str] | None,
        validation: str,
        token_cache_ttl: float = 30.0,
    ) -> None:
        self.url = url
        self.tenant = tenant
        self.migrate = migrate
        self.types = types
        self.validation = validation
        self.log: AsyncEventLog | None = None
        self.stopping: asyncio.Event | None = None
        self._opening: asyncio.Lock | None = None
        self.metrics = Metrics(self._queue_depth)
        self.auth = Authenticator(cache_ttl=token_cache_ttl)
        self._tenant_logs: dict[str, AsyncEventLog] = {}
        self._written: dict[str, Any] = {}
        self.lifespan_hooks: list[Callable[[], AbstractAsyncContextManager[None]]] = []
        """Context managers entered after the store is opened and left before it is closed (background tasks)."""

    def _queue_depth(self) -> float:
        return float(self.log.queue_depth) if self.log is not None else 0.0

    async def open(self) -> AsyncEventLog:
        """The event log, connecting first if needed. Raises StoreUnavailable while the store cannot be reached."""
        if self.log is not None:
            return self.log
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self.log is None:
                self.log = await meshlog.connect_async(
                    self.url,
                    tenant=self.tenant,
                    migrate=self.migrate,
                    types=self.types,
                    validation=self.validation,  # type: ignore[arg-type]  # checked by the log
                )
            return self.log

    async def authorize(self, request: Request, scope: str) -> AsyncEventLog:
        """The log of the tenant the request may act for with ``scope``: the server's tenant while the store
        holds no API token; the token's tenant once it does (Problem 401/403 without a fitting token)."""
        log = await self.open()
        if not await self.auth.required(log):
            return log
        token = await self.auth.check(log, request, scope)
        if token.tenant == log.tenant:
            return log
        view = self._tenant_logs.get(token.tenant)
        if view is None:
            view = self._tenant_logs[token.tenant] = log.for_tenant(token.tenant)
        return view

    def count_written(self, event_type: str) -> None:
        """Count one acknowledged event in ``meshlog_events_written_total`` (the labelled child of each type is
        kept, a dictionary lookup instead of prometheus_client's label resolution on every event)."""
        child = self._written.get(event_type)
        if child is None:
            child = self.metrics.events_written.labels(event_type)
            if len(self._written) < _MAX_CACHED_TYPES:
                self._written[event_type] = child
        child.inc()

    def require_log(self) -> AsyncEventLog:
        """The open log; StoreUnavailable while the store could not be reached yet."""
        if self.log is None:
            raise StoreUnavailable("the store is not reachable yet")
        return self.log

    async def close(self) -> None:
        self._tenant_logs.clear()
        log, self.log = self.log, None
        if log is not None:
            await log.close()


def begin_shutdown(app: FastAPI) -> None:
    """Tell open subscriptions to end: call before the server waits for connections to close."""
    state: ServerState | None = getattr(app.state, "meshlog", None)
    if state is not None and state.stopping is not None:
        state.stopping.set()


async def get_log(request: Request) -> AsyncEventLog:
    """FastAPI dependency for routers included into the app: the log of the tenant the request acts for, checked
    for the ``read`` scope on GET and HEAD requests and ``write`` on the others (see :meth:`ServerState.authorize`)."""
    state: ServerState = request.app.state.meshlog
    return await state.authorize(request, "read" if request.method in {"GET", "HEAD"} else "write")


# -- request bodies ----------------------------------------------------------------------------------------------
async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON value; Problem 413 over ``limit`` bytes, 400 for invalid UTF-8 or malformed JSON."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise Problem(400, "bad-request", "Content-Length is not a number") from None
        if size > limit:
            raise Problem(413, "body-too-large", f"request body of {size} bytes is over {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise Problem(413, "body-too-large", f"request body is over {limit} bytes", limit=limit)
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(
            400, "bad-request", f"request body is not valid UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, "bad-request", f"request body is not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_model(model: type[M], value: Any) -> M:
    """``value`` as ``model``; Problem 400 naming the first offending field otherwise."""
    if not isinstance(value, dict):
        raise Problem(400, "bad-request", f"request body must be a JSON object, got {_json_kind(value)}")
    try:
        return model.model_validate(value)
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        field = _field_path(error["loc"])
        raise Problem(400, "bad-request", f"{field}: {error['msg']}", field=field) from None


def _field_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in {"int", "str", "literal['any','no_stream','stream_exists']"} or part.startswith(
            ("constrained-int", "function-", "literal[")
        ):
            continue  # union-member labels pydantic puts in the location
        else:
            path += f".{part}" if path else part
    return path or "body"


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return kinds.get(type(value), "null")


def _expected(value: int | str) -> meshlog.ExpectedVersion:
    return value if isinstance(value, int) else _EXPECTED[value]


def _new_event(item: EventIn, field: str) -> NewEvent:
    occurred_at = None
    if item.occurred_at is not None:
        try:
            occurred_at = datetime.fromisoformat(item.occurred_at)
        except ValueError:
            name = f"{field}.occurred_at" if field else "occurred_at"
            raise Problem(400, "bad-request", f"{name} is not an ISO 8601 timestamp", field=name) from None
    return NewEvent(
        type=item.type,
        data=item.data,
        stream=item.stream,
        metadata=item.metadata,
        trace_id=item.trace_id,
        task_id=item.task_id,
        agent_id=item.agent_id,
        parent_id=item.parent_id,
        related=tuple(item.related),
        idempotency_key=item.idempotency_key,
        version=item.version,
        occurred_at=occurred_at,
        id=item.id,
        external_parent=item.external_parent,
    )


def _events(events: Sequence[RecordedEvent]) -> list[dict[str, Any]]:
    return [e.to_dict() for e in events]


# -- POST /v1/events ---------------------------------------------------------------------------------------------
EVENTS_PATH: Final = "/v1/events"


async def append_events(state: ServerState, request: Request, *, max_body_bytes: int, max_batch: int) -> dict[str, Any]:
    """``POST /v1/events``: append the body's event, or its batch (``{"events": [...]}``) atomically, and return
    the ``201`` answer's body; raises :class:`Problem` or :class:`~meshlog.errors.MeshlogError` for the rest."""
    log = await state.authorize(request, "write")
    body = await read_json(request, max_body_bytes)
    if isinstance(body, dict) and "events" in body:
        batch = parse_model(BatchIn, body)
        if len(batch.events) > max_batch:
            raise ValidationError(
                f"a batch holds at most {max_batch} events, got {len(batch.events)}",
                field="events",
                rule="max_batch",
            )
        new = [_new_event(item, f"events[{i}]") for i, item in enumerate(batch.events)]
        recorded = await log.emit_batch(new, expected_version=_expected(batch.expected_version))
        for appended in recorded:
            state.count_written(appended.type)
        return {"events": _events(recorded)}
    single = parse_model(SingleEventIn, body)
    one = await log.append(_new_event(single, ""), expected_version=_expected(single.expected_version))
    state.count_written(one.type)
    return {"event": one.to_dict()}


def _route_path(scope: Scope) -> str:
    """The path the router matches: the request's path without the app's ``root_path`` (as Starlette's)."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    return path[len(root_path) :] if path[len(root_path)] == "/" else path


class _EventsFastPath:
    """Serves ``POST /v1/events``, the hot path of every writer, ahead of everything FastAPI does per request.

    :class:`MeshlogApp` hands it those requests before its own middleware stack (server errors, telemetry, body
    limit, latency), router, dependency solving and endpoint wrapper; the answers are the same either way
    (:func:`append_events`, the same problem responses and metrics, and for an unexpected error the same logged
    500 problem, then the exception raised again for the server, as Starlette's server-error middleware does).
    The route stays registered in the app for the OpenAPI document and for an app without the fast path.
    """

    def __init__(self, state: ServerState, max_body_bytes: int, max_batch: int) -> None:
        self.state = state
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self._latency: Any = None  # the histogram's child, made at the first request (as the router's would be)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        response_started = False

        async def sending(message: Message) -> None:
            nonlocal response_started
            response_started = True
            await send(message)

        try:
            try:
                content = await append_events(
                    self.state, Request(scope, receive), max_body_bytes=self.max_body_bytes, max_batch=self.max_batch
                )
            except Problem as exc:
                response = _answer(self.state, "POST", exc)
            except MeshlogError as exc:
                response = _answer(self.state, "POST", from_meshlog_error(exc))
            else:
                response = JSONResponse(content, status_code=201)
            await response(scope, receive, sending)
        except Exception:
            logger.exception("unexpected error serving POST %s", EVENTS_PATH)
            if not response_started:
                await _answer(self.state, "POST", _INTERNAL)(scope, receive, send)
            raise
        finally:
            if self._latency is None:
                self._latency = self.state.metrics.request_latency.labels(EVENTS_PATH, "POST")
            self._latency.observe(time.perf_counter() - started)


class MeshlogApp(FastAPI):
    """The FastAPI app :func:`create_app` builds: ``POST /v1/events`` goes to :attr:`events_fast_path` (unless it
    is None) before FastAPI sees the request; everything else is FastAPI's. Middleware added to the app after
    :func:`create_app` (CORS, compression, a gateway's) turns the fast path off, so that it applies to every
    request."""

    events_fast_path: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None
    own_middleware = 0
    """How many of ``user_middleware`` :func:`create_app` added itself."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.events_fast_path
        if (
            fast is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and _route_path(scope) == EVENTS_PATH
            and len(self.user_middleware) == self.own_middleware
        ):
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


# -- latency middleware ------------------------------------------------------------------------------------------
class _LatencyMiddleware:
    """Observes each HTTP request's duration under its route template (``/v1/events/{id}``), not its path."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], Metrics]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics().request_latency.labels(template, scope["method"]).observe(time.perf_counter() - started)


# -- the app -----------------------------------------------------------------------------------------------------
def create_app(
    url: str | None = None,
    *,
    tenant: str = "default",
    migrate: bool = True,
    types: TypeRegistry | Sequence[str] | None = None,
    validation: str = "known",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    sse_ping: float = 15.0,
    routers: Sequence[APIRouter] = (),
    dapr: object = None,
    token_cache_ttl: float = 30.0,
    otlp: bool = True,
    instances: InstanceSettings | bool = True,
    ui: bool = True,
) -> FastAPI:
    """The meshlog HTTP API for ``tenant`` of the store at ``url`` (resolved as by :func:`meshlog.connect`).

    ``migrate=False`` skips schema migration; ``types`` and ``validation`` are passed to the log. Bodies over
    ``max_body_bytes`` are a 413; batches of more than ``max_batch`` events a 422. ``sse_ping`` is the interval
    of keep-alive comments on subscriptions. ``routers`` are included into the app (they may depend on
    :func:`get_log`). ``dapr=True`` (or a ``meshlog.server.dapr.DaprSettings``) adds the Dapr pub/sub routes.
    When the store cannot be reached at startup the server still starts: ``/readyz`` answers
    503 and every store route a 503 ``store-unavailable`` until it can.

    Once the store holds an API token, every route but ``/healthz``, ``/readyz``, ``/dapr/subscribe`` and the
    OpenAPI documents needs one, and the token's tenant is the one served (see :mod:`meshlog.server.auth`);
    ``token_cache_ttl`` is how long a verified token is trusted before it is looked up again. ``otlp`` serves
    the OpenTelemetry trace receiver at ``POST /v1/traces`` (docs/tracing.md). ``instances`` (True or an
    :class:`~meshlog.server.instances.InstanceSettings`) serves the instance registry at ``/v1/instances``, runs
    its stale detector and, with the ``mcp`` extra, the MCP tools at ``/mcp`` (docs/sessions.md, docs/mcp.md).
    ``GET /v1/stats``, ``GET /v1/traces`` and ``GET /v1/traces/{trace_id}/spans`` are always served; ``ui`` also
    serves the event explorer's page at ``/`` and its files at ``/ui/`` (:mod:`meshlog.server.explorer`).
    """
    state = ServerState(
        url, tenant=tenant, migrate=migrate, types=types, validation=validation, token_cache_ttl=token_cache_ttl
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.stopping = asyncio.Event()
        try:
            await state.open()
        except StoreError as exc:
            logger.warning("meshlog store unreachable at startup, will retry on demand: %s", exc)
        try:
            async with AsyncExitStack() as hooks:
                for hook in state.lifespan_hooks:
                    await hooks.enter_async_context(hook())
                yield
        finally:
            state.stopping.set()
            await state.close()

    app = MeshlogApp(
        title="meshlog",
        version=meshlog.__version__,
        description="A durable, append-only event store for AI-agent systems.",
        lifespan=lifespan,
    )
    app.state.meshlog = state
    app.add_middleware(_LatencyMiddleware, metrics=lambda: state.metrics)
    app.events_fast_path = _EventsFastPath(state, max_body_bytes=max_body_bytes, max_batch=max_batch)
    _install_handlers(app, state)
    app.include_router(_router(state, max_body_bytes=max_body_bytes, max_batch=max_batch, sse_ping=sse_ping))
    if otlp:
        from meshlog.server.otlp import otlp_router

        app.include_router(otlp_router())
    if instances is not False:
        from meshlog.server.instances import include_instances

        include_instances(app, state, None if instances is True else instances)
    include_explorer(app, state, ui=ui)
    for router in routers:
        app.include_router(router)
    if dapr is not None and dapr is not False:
        _include_dapr(app, state, dapr)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    app.own_middleware = len(app.user_middleware)
    return app


def _include_dapr(app: FastAPI, state: ServerState, dapr: object) -> None:
    """Include the Dapr pub/sub routes of :mod:`meshlog.server.dapr` (imported only when asked for)."""
    from meshlog.server import dapr as dapr_module

    settings = None if dapr is True else cast("dapr_module.DaprSettings", dapr)
    messages = state.metrics.dapr_messages
    authorized_log: ContextVar[AsyncEventLog | None] = ContextVar("meshlog_dapr_log", default=None)

    def on_status(topic: str, status: str, reason: str | None) -> None:
        messages.labels(topic, status).inc()

    async def authorize(request: Request) -> None:
        # Deliveries carry the sidecar's app API token (dapr-api-token) once the server requires tokens; an
        # answer other than 200 makes Dapr redeliver, so a credential problem never loses a message.
        if request.method == "POST":
            authorized_log.set(await state.authorize(request, "write"))

    async def current_log() -> AsyncEventLog:
        log = authorized_log.get()
        return log if log is not None else await state.open()

    router = dapr_module.dapr_router(current_log, settings, on_status=on_status)
    app.include_router(router, dependencies=[Depends(authorize)])


def _answer(state: ServerState, method: str, problem: Problem) -> Response:
    """The response for ``problem``, counted in the rejection and store-error metrics."""
    if method in {"POST", "PUT"} and problem.status < 500:
        state.metrics.events_rejected.labels(problem.code).inc()
    if problem.code in {"store-unavailable", "store-error"}:
        state.metrics.store_errors.inc()
    return problem_response(problem)


_INTERNAL: Final = Problem(500, "internal", "the server failed; see its log")


def _install_handlers(app: FastAPI, state: ServerState) -> None:
    def answer(request: Request, problem: Problem) -> Response:
        return _answer(state, request.method, problem)

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return answer(request, exc)

    async def on_meshlog_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MeshlogError)
        return answer(request, from_meshlog_error(exc))

    async def on_request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        error = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [part for part in error.get("loc", ()) if part not in {"query", "path", "header", "body"}]
        field = _field_path(loc)
        return answer(request, Problem(400, "bad-request", f"{field}: {error.get('msg')}", field=field))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "bad-request")
        return answer(request, Problem(exc.status_code, code, str(exc.detail), headers=exc.headers))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error serving %s %s", request.method, request.url.path, exc_info=exc)
        return answer(request, _INTERNAL)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(MeshlogError, on_meshlog_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


def _body_schema(name: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """OpenAPI with the request bodies (which the routes read themselves) added to the components."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _, defs = models_json_schema(
                [(m, "validation") for m in (SingleEventIn, BatchIn, EventIn, OutcomeIn, CheckpointIn)],
                ref_template="#/components/schemas/{model}",
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            schema["components"]["schemas"]["EventsBody"] = {
                "oneOf": [{"$ref": "#/components/schemas/SingleEventIn"}, {"$ref": "#/components/schemas/BatchIn"}]
            }
            app.openapi_schema = schema
        return app.openapi_schema

    return build


def _router(state: ServerState, *, max_body_bytes: int, max_batch: int, sse_ping: float) -> APIRouter:
    router = APIRouter()
    written = state.metrics.events_written

    def count(events: Sequence[RecordedEvent]) -> None:
        for event in events:
            written.labels(event.type).inc()

    # -- writing --
    @router.post("/v1/events", status_code=201, openapi_extra=_body_schema("EventsBody"), tags=["writing"])
    async def post_events(request: Request) -> JSONResponse:
        """Append one event, or a batch (``{"events": [...]}``) atomically."""
        # Served by MeshlogApp.events_fast_path before FastAPI sees the request; this route documents it and
        # serves an app without the fast path.
        return JSONResponse(
            await append_events(state, request, max_body_bytes=max_body_bytes, max_batch=max_batch), status_code=201
        )

    @router.post(
        "/v1/events/{event_id}/outcome", status_code=201, openapi_extra=_body_schema("OutcomeIn"), tags=["writing"]
    )
    async def post_outcome(event_id: str, request: Request) -> JSONResponse:
        """Record what came of an event (an ``outcome.recorded`` child event)."""
        log = await state.authorize(request, "write")
        body = parse_model(OutcomeIn, await read_json(request, max_body_bytes))
        event = await log.record_outcome(
            event_id, body.outcome, agent_id=body.agent_id, metadata=body.metadata, idempotency_key=body.idempotency_key
        )
        count([event])
        return JSONResponse({"event": event.to_dict()}, status_code=201)

    @router.put("/v1/checkpoints/{consumer:path}", openapi_extra=_body_schema("CheckpointIn"), tags=["writing"])
    async def put_checkpoint(consumer: str, request: Request) -> dict[str, Any]:
        """Save a consumer's checkpoint position."""
        log = await state.authorize(request, "write")
        body = parse_model(CheckpointIn, await read_json(request, max_body_bytes))
        await log.save_checkpoint(consumer, body.position)
        return {"consumer": consumer, "position": body.position}

    @router.get("/v1/checkpoints/{consumer:path}", tags=["reading"])
    async def get_checkpoint(request: Request, consumer: str) -> dict[str, Any]:
        """A consumer's checkpoint position, or null."""
        log = await state.authorize(request, "read")
        return {"consumer": consumer, "position": await log.checkpoint(consumer)}

    # -- reading --
    @router.get("/v1/events", tags=["reading"])
    async def query_events(
        request: Request,
        stream: str | None = None,
        type: Annotated[list[str] | None, Query()] = None,
        trace_id: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
        parent_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_position: int | None = None,
        before_position: int | None = None,
        text: str | None = None,
        order: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        total_count: bool = False,
        raw: bool = False,
    ) -> dict[str, Any]:
        """One page of matching events; pass ``next_cursor`` as ``cursor`` for the next."""
        log = await state.authorize(request, "read")
        page = await log.query(
            stream=stream,
            types=type,
            trace_id=trace_id,
            task_id=task_id,
            agent_id=agent_id,
            parent_id=parent_id,
            since=since,
            until=until,
            after_position=after_position,
            before_position=before_position,
            text=text,
            order=order,  # type: ignore[arg-type]  # checked by the log
            limit=limit,
            cursor=cursor,
            total_count=total_count,
            raw=raw,
        )
        return {
            "events": _events(page.events),
            "has_more": page.has_more,
            "next_cursor": page.next_cursor,
            "total_count": page.total_count,
        }

    @router.get("/v1/events/{event_id}", tags=["reading"])
    async def get_event(
        request: Request, event_id: str, with_outcome: bool = False, raw: bool = False
    ) -> dict[str, Any]:
        """One event by id."""
        log = await state.authorize(request, "read")
        return {"event": (await log.get(event_id, with_outcome=with_outcome, raw=raw)).to_dict()}

    @router.get("/v1/events/{event_id}/lineage", tags=["reading"])
    async def get_lineage(request: Request, event_id: str) -> dict[str, Any]:
        """The event, its ancestors and its descendants."""
        log = await state.authorize(request, "read")
        return (await log.lineage(event_id)).to_dict()

    @router.get("/v1/events/{event_id}/graph", tags=["reading"])
    async def get_graph(
        request: Request, event_id: str, max_depth: int = 3, limit: int = DEFAULT_GRAPH_LIMIT
    ) -> dict[str, Any]:
        """The events within ``max_depth`` parent/related hops, with their links: the ``limit`` nearest
        (``truncated`` when there were more)."""
        log = await state.authorize(request, "read")
        return (await log.graph(event_id, max_depth=max_depth, limit=limit)).to_dict()

    @router.get("/v1/streams", tags=["streams"])
    async def list_streams(
        request: Request, prefix: str | None = None, after: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        """Streams by name with their versions."""
        log = await state.authorize(request, "read")
        infos = await log.list_streams(prefix=prefix, after=after, limit=limit)
        return {
            "streams": [
                {
                    "stream": i.stream,
                    "version": i.version,
                    "last_position": i.last_position,
                    "created_at": i.created_at.isoformat(),
                    "updated_at": i.updated_at.isoformat(),
                }
                for i in infos
            ]
        }

    @router.get("/v1/streams/{stream:path}/events", tags=["streams"])
    async def read_stream(
        request: Request,
        stream: str,
        from_version: int = 1,
        to_version: int | None = None,
        backwards: bool = False,
        limit: int = 1000,
        raw: bool = False,
    ) -> dict[str, Any]:
        """The stream's events in stream order (newest first with ``backwards=true``), at most ``limit``."""
        if not 1 <= limit <= 1000:
            raise ValidationError("limit must be an integer from 1 to 1000", field="limit", rule="range")
        log = await state.authorize(request, "read")
        events: list[RecordedEvent] = []
        async for event in log.read_stream(
            stream, from_version=from_version, to_version=to_version, backwards=backwards, raw=raw
        ):
            events.append(event)
            if len(events) >= limit:
                break
        return {"events": _events(events)}

    @router.get("/v1/streams/{stream:path}/version", tags=["streams"])
    async def stream_version(request: Request, stream: str) -> dict[str, Any]:
        """The stream's version (0 when it has no events)."""
        log = await state.authorize(request, "read")
        return {"stream": stream, "version": await log.stream_version(stream)}

    @router.get("/v1/streams/{stream:path}/state", tags=["streams"])
    async def stream_state(request: Request, stream: str, to_version: int | None = None) -> dict[str, Any]:
        """The stream replayed through the session projection."""
        log = await state.authorize(request, "read")
        replayed = await log.replay(stream, SessionState(), to_version=to_version)
        return {
            "stream": stream,
            "state": replayed.state.to_final_state(),
            "events_replayed": replayed.events_replayed,
            "last_version": replayed.last_version,
            "duration_ms": replayed.duration_ms,
        }

    @router.get("/v1/streams/{stream:path}/resume", tags=["streams"])
    async def stream_resume(request: Request, stream: str) -> dict[str, Any]:
        """Where the session stands and what to do next."""
        log = await state.authorize(request, "read")
        return (await log.resume(stream)).to_dict()

    @router.get("/v1/streams/{stream:path}/narrative", response_class=Response, tags=["streams"])
    async def stream_narrative(request: Request, stream: str) -> Response:
        """A Markdown timeline of the stream."""
        log = await state.authorize(request, "read")
        return Response(await log.narrative(stream=stream), media_type="text/markdown; charset=utf-8")

    @router.get("/v1/traces/{trace_id}/narrative", response_class=Response, tags=["reading"])
    async def trace_narrative(request: Request, trace_id: str) -> Response:
        """A Markdown timeline of the trace."""
        log = await state.authorize(request, "read")
        return Response(await log.narrative(trace_id=trace_id), media_type="text/markdown; charset=utf-8")

    @router.get("/v1/event-types", tags=["reading"])
    async def event_types(request: Request) -> dict[str, Any]:
        """The event types the server knows (from its catalogues)."""
        log = await state.authorize(request, "read")
        return {"event_types": [t.to_dict() for t in log.event_types()]}

    @router.get("/v1/head", tags=["reading"])
    async def head(request: Request) -> dict[str, Any]:
        """The position of the last committed event."""
        log = await state.authorize(request, "read")
        return {"position": await log.head_position()}

    @router.get("/v1/subscribe", response_class=Response, tags=["reading"])
    async def subscribe(
        request: Request,
        after_position: int | None = None,
        type: Annotated[list[str] | None, Query()] = None,
        stream: str | None = None,
        trace_id: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
        parent_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        text: str | None = None,
    ) -> Response:
        """Server-Sent Events: matching events after ``after_position`` (or ``Last-Event-ID``), then live; the
        filters are those of ``GET /v1/events``."""
        last_event_id = request.headers.get("last-event-id")
        if last_event_id is not None and last_event_id.strip():
            try:
                after_position = int(last_event_id)
            except ValueError:
                raise Problem(
                    400, "bad-request", "Last-Event-ID must be an event position", field="Last-Event-ID"
                ) from None
        position = after_position or 0
        if position < 0:
            raise ValidationError("after_position must be >= 0", field="after_position", rule="min")
        flt = EventFilter(
            types=tuple(type) if type else None,
            stream=stream,
            trace_id=trace_id,
            task_id=task_id,
            agent_id=agent_id,
            parent_id=parent_id,
            since=since,
            until=until,
            text=text,
        )
        log = await state.authorize(request, "read")
        stopping = state.stopping or asyncio.Event()
        return sse_response(event_stream(log, position, flt, stopping), ping=sse_ping)

    # -- operations --
    @router.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @router.get("/readyz", tags=["operations"])
    async def readyz() -> dict[str, Any]:
        """The store answers a query."""
        try:
            log = await asyncio.wait_for(state.open(), READY_TIMEOUT)
            position = await asyncio.wait_for(log.head_position(), READY_TIMEOUT)
        except (MeshlogError, TimeoutError) as exc:
            raise Problem(
                503, "store-unavailable", f"the store does not answer: {exc}", headers={"Retry-After": "1"}
            ) from None
        return {"status": "ready", "position": position}

    @router.get("/metrics", response_class=Response, tags=["operations"])
    async def metrics(request: Request) -> Response:
        """Prometheus metrics (with tokens: an ``admin`` token)."""
        await state.authorize(request, "admin")
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    return router
