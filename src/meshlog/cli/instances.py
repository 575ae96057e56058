"""``meshlog instances`` (the instance registry) and ``meshlog mcp`` (the MCP server over stdio).

Thin commands over :mod:`meshlog.instances` and :mod:`meshlog.mcp`; registered on the ``meshlog`` group when
:mod:`meshlog.cli` is imported.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

import meshlog
from meshlog.cli import Console, _examples, _open, _parse_object, _print_json, _Settings, main
from meshlog.registry import STATUSES, Instance

__all__ = ["instances", "mcp"]


def _table(found: list[Instance]) -> None:
    console = Console()
    if not found:
        console.print("no instances")
        return
    console.table(
        ["id", "status", "project", "host", "last_heartbeat", "registered_at"],
        [(i.id, i.status, i.project or "-", i.host or "-", i.last_heartbeat, i.registered_at) for i in found],
        indent=0,
    )
    console.print(f"{len(found)} instance{'' if len(found) == 1 else 's'}")


def _object(text: str | None) -> dict[str, Any] | None:
    return None if text is None else _parse_object(text)


@main.group(
    invoke_without_command=True,
    short_help="List, register and beat instances (agent sessions).",
    epilog=_examples(
        "meshlog instances",
        "meshlog instances --status stale --json",
        "meshlog instances register odin3-ps --project shop",
        'meshlog instances heartbeat odin3-ps --data \'{"current_epic": "epic-003"}\'',
    ),
)
@click.option("--status", type=click.Choice(STATUSES), help="Only instances with this status.")
@click.option("--project", metavar="NAME", help="Only instances of this project.")
@click.option(
    "--limit", type=click.IntRange(1, 1000), metavar="N", default=100, show_default=True, help="Instances to list."
)
@click.option("--json", "as_json", is_flag=True, help="Print the instances as JSON.")
@click.pass_context
def instances(ctx: click.Context, status: str | None, project: str | None, limit: int, as_json: bool) -> None:
    """List the registered instances (running agent sessions) with their status: active, stale (silent past the
    server's threshold) or closed. Subcommands register them, record heartbeats and close them.

    Each instance's events are the stream instance:ID (`meshlog resume ID` tells where it stands).
    """
    if ctx.invoked_subcommand is not None:
        return
    found = _open(ctx).instances.list(status=status, project=project, limit=limit)
    if as_json:
        _print_json([i.to_dict() for i in found])
        return
    _table(found)


@instances.command(
    "register",
    short_help="Register an instance.",
    epilog=_examples(
        "meshlog instances register odin3-ps --project shop --host odin3",
        'meshlog instances register ci-7 --metadata \'{"model": "m-1"}\' --json',
    ),
)
@click.argument("instance_id")
@click.option("--name", metavar="TEXT", help="A readable name.")
@click.option("--project", metavar="NAME", help="The project it works on.")
@click.option("--host", metavar="NAME", help="The machine it runs on.")
@click.option("--metadata", metavar="JSON", help="A JSON object kept with it.")
@click.option("--json", "as_json", is_flag=True, help="Print the instance as JSON.")
@click.pass_context
def register(
    ctx: click.Context,
    instance_id: str,
    name: str | None,
    project: str | None,
    host: str | None,
    metadata: str | None,
    as_json: bool,
) -> None:
    """Register INSTANCE_ID (again: a new registration) and write instance_registered."""
    found = _open(ctx).instances.register(
        instance_id, name=name, project=project, host=host, metadata=_object(metadata)
    )
    if as_json:
        _print_json(found.to_dict())
    else:
        click.echo(f"registered {found.id} ({found.stream})")


@instances.command(
    "heartbeat",
    short_help="Record a heartbeat.",
    epilog=_examples(
        "meshlog instances heartbeat odin3-ps",
        "meshlog instances heartbeat odin3-ps --data '{\"context_percent\": 40}'",
    ),
)
@click.argument("instance_id")
@click.option("--data", metavar="JSON", help="What it is doing (a JSON object: status, current_epic …).")
@click.option("--json", "as_json", is_flag=True, help="Print the instance as JSON.")
@click.pass_context
def heartbeat(ctx: click.Context, instance_id: str, data: str | None, as_json: bool) -> None:
    """Record that INSTANCE_ID is alive (a stale instance becomes active again)."""
    found = _open(ctx).instances.heartbeat(instance_id, _object(data))
    if as_json:
        _print_json(found.to_dict())
    else:
        click.echo(f"{found.id} is {found.status}")


@instances.command(
    "close",
    short_help="Close an instance.",
    epilog=_examples(
        "meshlog instances close odin3-ps",
        "meshlog instances close odin3-ps --reason done --json",
    ),
)
@click.argument("instance_id")
@click.option("--reason", metavar="TEXT", help="Why it ended.")
@click.option("--json", "as_json", is_flag=True, help="Print the instance as JSON.")
@click.pass_context
def close(ctx: click.Context, instance_id: str, reason: str | None, as_json: bool) -> None:
    """Close INSTANCE_ID and write instance_closed (register it again to reopen it)."""
    found = _open(ctx).instances.close(instance_id, reason=reason)
    if as_json:
        _print_json(found.to_dict())
    else:
        click.echo(f"{found.id} is {found.status}")


@main.command(
    short_help="Serve meshlog's MCP tools over stdio.",
    epilog=_examples(
        "meshlog mcp",
        "meshlog --url sqlite:////home/me/.meshlog/events.db mcp --allow-unregistered",
        "meshlog mcp --url http://meshlog.internal:8080",
    ),
)
@click.option("--url", "mcp_url", metavar="URL", help="Store URL (default: the group's --url and its fallbacks).")
@click.option("--tenant", "mcp_tenant", metavar="NAME", help="Tenant (default: the group's --tenant).")
@click.option(
    "--allow-unregistered",
    is_flag=True,
    help="Let emit_event write session event types for instances that never registered.",
)
@click.pass_context
def mcp(ctx: click.Context, mcp_url: str | None, mcp_tenant: str | None, allow_unregistered: bool) -> None:
    """Run meshlog's MCP server on stdin and stdout, for agent clients that start it as a command.

    Tools: emit_event, query_events, replay_events, list_event_types, register_instance, heartbeat,
    resume_instance, event_lineage and narrative (docs/mcp.md). An http:// URL makes the tools work through a
    meshlog server ($MESHLOG_TOKEN is its API token). Needs the mcp extra.
    """
    from meshlog.mcp import McpSettings, create_mcp_server

    settings = ctx.find_object(_Settings) or _Settings(None, False, None)

    async def serve() -> None:
        log = await meshlog.connect_async(
            mcp_url or settings.url, tenant=mcp_tenant or settings.tenant, types=["session"]
        )
        try:
            server = create_mcp_server(log, McpSettings(require_registration=not allow_unregistered))
            await server.run_stdio_async()
        finally:
            await log.close()

    asyncio.run(serve())
