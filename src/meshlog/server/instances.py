"""The instance registry over HTTP (``/v1/instances…``), the stale detector, and the MCP endpoint ``/mcp``.

:func:`include_instances` adds all three to an app made by :func:`~meshlog.server.create_app`:

- the routes register, list, read, beat, close and resume instances of the tenant the request acts for;
- the stale detector runs in the app's lifespan, every ``check_every`` seconds, over every tenant of the store
  (each lapse is marked and recorded once even with several server replicas: see
  :meth:`~meshlog.instances_async.AsyncInstances.detect_stale`);
- ``/mcp`` serves meshlog's MCP tools over streamable HTTP when the ``mcp`` extra is installed. With API tokens
  required, it needs one like every route: ``read`` to connect, ``write`` for the tools that write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import pydantic
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from meshlog.errors import MeshlogError, StoreError
from meshlog.instances_async import DEFAULT_HEARTBEAT_EVENT_EVERY, DEFAULT_STALE_AFTER, AsyncInstances
from meshlog.log_async import AsyncEventLog
from meshlog.registry import InstanceChange
from meshlog.server.problems import Problem, from_meshlog_error, problem_response

if TYPE_CHECKING:
    from meshlog.server.app import ServerState

__all__ = ["InstanceSettings", "detect_stale_forever", "include_instances"]

logger = logging.getLogger("meshlog.server")

MAX_BODY: Final = 256 * 1024
LOCAL_HOSTS: Final = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True, slots=True)
class InstanceSettings:
    """The registry's intervals (seconds), the detector's period (0: no detector in this server) and the MCP
    endpoint's options.

    ``mcp_allowed_hosts``: ``Host`` values ``/mcp`` accepts (``name`` or ``name:port``; ``name:*`` for any port).
    The MCP SDK checks them against DNS rebinding; by default this machine's names and loopback addresses are
    accepted, plus those in ``$MESHLOG_MCP_ALLOWED_HOSTS`` (comma-separated); ``["*"]`` turns the check off.
    ``mcp_allowed_origins`` likewise for browsers' ``Origin`` header.
    """

    stale_after: float = DEFAULT_STALE_AFTER
    check_every: float = 30.0
    heartbeat_event_every: float = DEFAULT_HEARTBEAT_EVENT_EVERY
    mcp: bool = True
    require_registration: bool = True
    mcp_allowed_hosts: Sequence[str] | None = None
    mcp_allowed_origins: Sequence[str] = field(default_factory=tuple)


class RegisterIn(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    id: str
    name: str | None = None
    project: str | None = None
    host: str | None = None
    metadata: dict[str, Any] | None = None


class HeartbeatIn(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    data: dict[str, Any] | None = None


class CloseIn(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    reason: str | None = None


def _change(change: InstanceChange) -> dict[str, Any]:
    return {
        "instance": change.current.to_dict(),
        "previous": None if change.previous is None else change.previous.to_dict(),
        "heartbeat_event": change.heartbeat_event,
    }


def include_instances(app: FastAPI, state: ServerState, settings: InstanceSettings | None = None) -> None:
    """Add the ``/v1/instances`` routes, the stale detector and (with the ``mcp`` extra) ``/mcp`` to ``app``."""
    config = settings or InstanceSettings()
    app.include_router(_router(state, config))
    if config.check_every > 0:
        state.lifespan_hooks.append(lambda: _detector(state, config))
    if config.mcp:
        _mount_mcp(app, state, config)


def _registry(log: AsyncEventLog, config: InstanceSettings) -> AsyncInstances:
    return AsyncInstances(log, heartbeat_event_every=config.heartbeat_event_every, stale_after=config.stale_after)


def _router(state: ServerState, config: InstanceSettings) -> APIRouter:
    from meshlog.server.app import parse_model, read_json

    router = APIRouter(tags=["instances"])

    async def body(request: Request, model: type[pydantic.BaseModel]) -> Any:
        raw = await request.body()
        if not raw.strip():
            return model()
        return parse_model(model, await read_json(request, MAX_BODY))

    @router.post("/v1/instances", status_code=201)
    async def register(request: Request) -> JSONResponse:
        """Register an instance (again: replaces its record and reopens it); writes ``instance_registered``."""
        log = await state.authorize(request, "write")
        item = parse_model(RegisterIn, await read_json(request, MAX_BODY))
        registered = await _registry(log, config).register(
            item.id, name=item.name, project=item.project, host=item.host, metadata=item.metadata
        )
        return JSONResponse({"instance": registered.to_dict(), "previous": None, "heartbeat_event": False}, 201)

    @router.get("/v1/instances")
    async def list_instances(
        request: Request,
        status: Literal["active", "stale", "closed"] | None = None,
        project: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Instances by id, optionally of one status or project (keyset paging with ``after``)."""
        log = await state.authorize(request, "read")
        found = await _registry(log, config).list(status=status, project=project, after=after, limit=limit)
        return {"instances": [i.to_dict() for i in found]}

    @router.get("/v1/instances/{instance_id}")
    async def get_instance(request: Request, instance_id: str) -> dict[str, Any]:
        """One instance's record."""
        log = await state.authorize(request, "read")
        return (await _registry(log, config).get(instance_id)).to_dict()

    @router.post("/v1/instances/{instance_id}/heartbeat")
    async def heartbeat(request: Request, instance_id: str) -> dict[str, Any]:
        """Record a heartbeat (``{"data": {...}}`` optional: what the instance is doing)."""
        log = await state.authorize(request, "write")
        item = await body(request, HeartbeatIn)
        registry = _registry(log, config)
        before = await log.store.get_instance(log.tenant, instance_id)
        current = await registry.heartbeat(instance_id, item.data)
        due = current.heartbeat_event_at is not None and (
            before is None or current.heartbeat_event_at != before.heartbeat_event_at
        )
        return _change(InstanceChange(before, current, heartbeat_event=due))

    @router.post("/v1/instances/{instance_id}/close")
    async def close(request: Request, instance_id: str) -> dict[str, Any]:
        """Close the instance (``{"reason": "..."}`` optional); writes ``instance_closed``."""
        log = await state.authorize(request, "write")
        item = await body(request, CloseIn)
        registry = _registry(log, config)
        before = await log.store.get_instance(log.tenant, instance_id)
        return _change(InstanceChange(before, await registry.close(instance_id, reason=item.reason)))

    @router.get("/v1/instances/{instance_id}/resume")
    async def resume(request: Request, instance_id: str) -> dict[str, Any]:
        """Where the instance's session stands and what to do next (from its stream ``instance:<id>``)."""
        log = await state.authorize(request, "read")
        registry = _registry(log, config)
        resumed = await registry.resume(instance_id)
        found = await log.store.get_instance(log.tenant, instance_id)
        return {**resumed.to_dict(), "instance": None if found is None else found.to_dict()}

    return router


# -- the stale detector -----------------------------------------------------------------------------------------
async def detect_stale_forever(state: ServerState, config: InstanceSettings) -> None:
    """Every ``check_every`` seconds, mark the silent instances of every tenant stale. Store failures are logged
    and the next round tries again."""
    while True:
        try:
            log = await state.open()
            marked = await _registry(log, config).detect_stale(all_tenants=True)
            for instance in marked:
                logger.info("meshlog: instance %s of tenant %s is stale", instance.id, instance.tenant)
        except StoreError as exc:
            logger.warning("meshlog: stale detection failed, retrying in %.0f s: %s", config.check_every, exc)
        except MeshlogError:
            logger.exception("meshlog: stale detection failed")
        await asyncio.sleep(config.check_every)


@asynccontextmanager
async def _detector(state: ServerState, config: InstanceSettings) -> AsyncIterator[None]:
    task = asyncio.create_task(detect_stale_forever(state, config), name="meshlog-stale-detector")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


# -- MCP over streamable HTTP -----------------------------------------------------------------------------------
def _allowed_hosts(config: InstanceSettings) -> list[str]:
    if config.mcp_allowed_hosts is not None:
        hosts = list(config.mcp_allowed_hosts)
    else:
        names = {*LOCAL_HOSTS, socket.gethostname(), socket.getfqdn()}
        hosts = [f"{name}:*" for name in sorted(names) if name] + sorted(names)
    extra = os.environ.get("MESHLOG_MCP_ALLOWED_HOSTS", "")
    hosts += [h.strip() for h in extra.split(",") if h.strip()]
    return hosts


def _mount_mcp(app: FastAPI, state: ServerState, config: InstanceSettings) -> None:
    try:
        from mcp.server.mcpserver import Context
        from mcp.server.mcpserver.exceptions import ToolError
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
        from mcp.server.transport_security import TransportSecuritySettings

        from meshlog.mcp.server import McpSettings, create_mcp_server
    except ImportError:
        logger.info("meshlog: /mcp is not served: pip install 'meshlog[mcp]' for it")
        return

    async def log_for(ctx: Context, scope: Literal["read", "write"]) -> AsyncEventLog:
        request = ctx.request_context.request
        if not isinstance(request, Request):
            return await state.open()
        try:
            return await state.authorize(request, scope)
        except Problem as exc:
            raise ToolError(f"{exc.status} {exc.code}: {exc.detail}") from exc

    server = create_mcp_server(
        log_for,
        McpSettings(
            require_registration=config.require_registration,
            heartbeat_event_every=config.heartbeat_event_every,
            stale_after=config.stale_after,
        ),
    )
    hosts = _allowed_hosts(config)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection="*" not in hosts,
        allowed_hosts=hosts,
        allowed_origins=[*config.mcp_allowed_origins, *(f"http://{h}" for h in hosts if h.endswith(":*"))],
    )
    managers: list[StreamableHTTPSessionManager] = []

    @asynccontextmanager
    async def run_sessions() -> AsyncIterator[None]:
        # A session manager runs once: each start of the app gets a new one.
        server.streamable_http_app(transport_security=security)
        manager = server.session_manager
        async with manager.run():
            managers.append(manager)
            try:
                yield
            finally:
                managers.remove(manager)

    state.lifespan_hooks.append(run_sessions)

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            await state.authorize(request, "read")
            if not managers:
                raise Problem(503, "store-unavailable", "the MCP endpoint is starting or stopping")
        except Problem as exc:
            await problem_response(exc)(scope, receive, send)
            return
        except MeshlogError as exc:
            await problem_response(from_meshlog_error(exc))(scope, receive, send)
            return
        await managers[-1].handle_request(scope, receive, send)

    app.router.routes.append(Route("/mcp", endpoint=_Asgi(serve), include_in_schema=False))


class _Asgi:
    """An ASGI callable as a route endpoint (Starlette passes scope, receive and send to objects, a Request to
    plain functions)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
