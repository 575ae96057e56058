"""meshlog as an MCP server: tools for agents to record, query, replay and resume their sessions.

Needs the ``mcp`` extra (``pip install 'meshlog[mcp]'``). Run it over stdio with ``meshlog mcp`` (the form agent
clients start as a command) or over streamable HTTP at ``/mcp`` of ``meshlog serve``; see docs/mcp.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshlog.errors import ConfigurationError

if TYPE_CHECKING:
    from meshlog.mcp.server import LogFor, McpSettings, create_mcp_server

__all__ = ["LogFor", "McpSettings", "create_mcp_server"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        try:
            from meshlog.mcp import server
        except ImportError as exc:
            if getattr(exc, "name", None) in {"mcp", "mcp.server", "mcp.server.mcpserver"}:
                raise ConfigurationError("meshlog's MCP server needs the MCP SDK: pip install 'meshlog[mcp]'") from exc
            raise
        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
