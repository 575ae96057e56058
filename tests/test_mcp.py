"""meshlog's MCP server through the MCP SDK's own client: in-process, over stdio (``meshlog mcp`` as a subprocess)
and over streamable HTTP (``/mcp`` of a running meshlog server)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
import pytest_asyncio
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

import meshlog
from meshlog import AsyncEventLog
from meshlog.instances_async import AsyncInstances
from meshlog.mcp import McpSettings, create_mcp_server
from meshlog.server import create_app
from server_helpers import running_app

TOOLS = {
    "emit_event",
    "query_events",
    "replay_events",
    "list_event_types",
    "register_instance",
    "heartbeat",
    "resume_instance",
    "event_lineage",
    "narrative",
}


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """The structured result of a successful call (the test fails on an error result)."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, _text(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    """The message of an error result (the test fails when the call succeeds)."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    return _text(result)


def _text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


@pytest_asyncio.fixture
async def log(store_url: str) -> AsyncIterator[AsyncEventLog]:
    opened = await meshlog.connect_async(store_url, types=["session"])
    yield opened
    await opened.close()


async def lifecycle(client: Client) -> None:
    """Register → emit → query → replay → resume, and the other tools, through one client."""
    tools = await client.list_tools()
    assert {t.name for t in tools.tools} == TOOLS
    for tool in tools.tools:
        assert tool.input_schema["type"] == "object" and tool.output_schema is not None, tool.name

    registered = await call(client, "register_instance", instance_id="odin3-ps", project="shop", host="odin3")
    assert registered["status"] == "active" and registered["stream"] == "instance:odin3-ps"
    started = await call(
        client,
        "emit_event",
        instance_id="odin3-ps",
        event_type="epic_started",
        event_data={"epic_id": "epic-003", "feature_name": "auth"},
        metadata={"source": "test"},
    )
    assert started["success"] is True and started["sequence_num"] == 2  # after instance_registered
    passed = await call(
        client,
        "emit_event",
        instance_id="odin3-ps",
        event_type="test_passed",
        event_data={"epic_id": "epic-003", "passed_count": 5, "failed_count": 3},
        parent_id=started["event_id"],
    )
    await call(
        client,
        "emit_event",
        instance_id="odin3-ps",
        event_type="epic_completed",
        event_data={"epic_id": "epic-003", "files_changed": 23},
    )
    assert passed["sequence_num"] == 3
    beat = await call(client, "heartbeat", instance_id="odin3-ps", data={"context_percent": 40})
    assert beat["status"] == "active"

    everything = await call(client, "query_events", instance_id="odin3-ps")
    assert [e["event_type"] for e in everything["events"]] == [
        "instance_heartbeat",
        "epic_completed",
        "test_passed",
        "epic_started",
        "instance_registered",
    ]  # newest first
    assert everything["total_count"] == 5 and everything["has_more"] is False
    first_two = await call(client, "query_events", instance_id="odin3-ps", order="asc", limit=2, offset=1)
    assert [e["sequence_num"] for e in first_two["events"]] == [2, 3] and first_two["has_more"] is True
    epics = await call(
        client, "query_events", instance_id="odin3-ps", filters={"event_type": ["epic_started", "epic_completed"]}
    )
    assert [e["event_type"] for e in epics["events"]] == ["epic_completed", "epic_started"]
    assert epics["total_count"] == 2
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    ranged = await call(
        client,
        "query_events",
        instance_id="odin3-ps",
        filters={"event_type": "test_passed", "start_date": hour_ago, "end_date": "2999-01-01T00:00:00Z"},
    )
    assert [e["event_data"]["passed_count"] for e in ranged["events"]] == [5]
    future = await call(
        client, "query_events", instance_id="odin3-ps", filters={"start_date": "2999-01-01T00:00:00+00:00"}
    )
    assert future == {"events": [], "total_count": 0, "has_more": False}
    found = await call(client, "query_events", instance_id="odin3-ps", filters={"keyword": "AUTH"})
    assert [e["event_type"] for e in found["events"]] == ["epic_started"]
    assert found["events"][0]["metadata"] == {"source": "test"}

    replayed = await call(client, "replay_events", instance_id="odin3-ps")
    assert replayed["success"] is True and replayed["events_replayed"] == 5
    assert replayed["final_state"]["last_epic"] == "epic-003"
    assert replayed["final_state"]["epics"]["completed"] == ["epic-003"]
    partial = await call(client, "replay_events", instance_id="odin3-ps", to_sequence_num=2)
    assert partial["events_replayed"] == 2 and partial["final_state"]["epics"]["open"] == "epic-003"

    resumed = await call(client, "resume_instance", instance_id="odin3-ps")
    assert "epic-003" in resumed["suggestion"] and resumed["last_sequence_num"] == 5
    assert resumed["instance"]["project"] == "shop"

    lineage = await call(client, "event_lineage", event_id=passed["event_id"])
    assert lineage["event"]["event_type"] == "test_passed"
    assert [e["event_id"] for e in lineage["ancestors"]] == [started["event_id"]]
    told = await call(client, "narrative", instance_id="odin3-ps")
    assert told["markdown"].startswith("# Instance odin3-ps") and "epic_completed" in told["markdown"]
    kinds = await call(client, "list_event_types", category="instance")
    assert {t["type"] for t in kinds["event_types"]} == {
        "instance_registered",
        "instance_heartbeat",
        "instance_stale",
        "instance_recovered",
        "instance_closed",
    }
    everything_known = await call(client, "list_event_types")
    started_type = next(t for t in everything_known["event_types"] if t["type"] == "epic_started")
    assert started_type["category"] == "epic" and started_type["required_fields"] == ["epic_id"]
    assert "feature_name" in started_type["optional_fields"]


# -- in process -------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_whole_lifecycle_in_process(log: AsyncEventLog) -> None:
    async with Client(create_mcp_server(log)) as client:
        await lifecycle(client)
    assert await log.stream_version("instance:odin3-ps") == 5


@pytest.mark.asyncio
async def test_concurrent_instances_keep_separate_gapless_sequences(log: AsyncEventLog) -> None:
    async with Client(create_mcp_server(log)) as client:
        names = [f"agent-{n}" for n in range(4)]
        for name in names:
            await call(client, "register_instance", instance_id=name)
        results = await asyncio.gather(
            *(
                call(
                    client,
                    "emit_event",
                    instance_id=name,
                    event_type="checkpoint_created",
                    event_data={"checkpoint_id": f"c{i}"},
                )
                for i in range(15)
                for name in names
            )
        )
        for name in names:
            page = await call(client, "query_events", instance_id=name, order="asc", limit=1000)
            assert [e["sequence_num"] for e in page["events"]] == list(range(1, 17))
        assert len({r["event_id"] for r in results}) == 60


@pytest.mark.asyncio
async def test_bad_arguments_are_error_results_and_the_server_carries_on(log: AsyncEventLog) -> None:
    async with Client(create_mcp_server(log)) as client:
        assert "not registered" in await refused(
            client, "emit_event", instance_id="ghost", event_type="epic_started", event_data={"epic_id": "e"}
        )
        await call(client, "register_instance", instance_id="ok-1")
        cases: list[tuple[str, dict[str, Any], str]] = [
            ("emit_event", {"instance_id": "ok-1", "event_type": "epic_started", "event_data": {}}, "epic_id"),
            ("emit_event", {"instance_id": "ok-1", "event_type": "x", "event_data": [1]}, "event_data"),
            ("emit_event", {"instance_id": "ok-1", "event_data": {}}, "event_type"),
            ("emit_event", {"instance_id": "bad id", "event_type": "x", "event_data": {}}, "instance_id"),
            ("emit_event", {"instance_id": "ok-1", "event_type": "", "event_data": {}}, "type"),
            ("query_events", {"instance_id": "ok-1", "limit": 1001}, "limit"),
            ("query_events", {"instance_id": "ok-1", "limit": 0}, "limit"),
            ("query_events", {"instance_id": "ok-1", "offset": -1}, "offset"),
            ("query_events", {"instance_id": "ok-1", "filters": {"colour": "red"}}, "colour"),
            ("query_events", {"instance_id": "ok-1", "filters": {"start_date": "yesterday"}}, "start_date"),
            ("query_events", {"instance_id": "ok-1", "filters": {"end_date": "2026-01-01T00:00:00"}}, "time zone"),
            ("query_events", {"instance_id": "ok-1", "filters": {"event_type": []}}, "event_type"),
            ("replay_events", {"instance_id": "ok-1", "to_sequence_num": -1}, "to_sequence_num"),
            ("heartbeat", {"instance_id": "ghost"}, "register it first"),
            ("event_lineage", {"event_id": "not-a-uuid"}, "NotFound"),
            ("narrative", {}, "exactly one"),
            ("register_instance", {"instance_id": "x" * 201}, "instance_id"),
            ("no_such_tool", {}, "no_such_tool"),
        ]
        for tool, arguments, message in cases:
            assert message in await refused(client, tool, **arguments), (tool, arguments)
        assert await log.stream_version("instance:ok-1") == 1  # nothing written by the refused calls
        emitted = await call(client, "emit_event", instance_id="ok-1", event_type="custom.note", event_data={})
        assert emitted["sequence_num"] == 2  # still serving; types outside the session catalogue need no registration


@pytest.mark.asyncio
async def test_registration_can_be_optional(log: AsyncEventLog) -> None:
    async with Client(create_mcp_server(log, McpSettings(require_registration=False))) as client:
        result = await call(
            client, "emit_event", instance_id="free", event_type="epic_started", event_data={"epic_id": "e"}
        )
        assert result["sequence_num"] == 1


@pytest.mark.asyncio
async def test_stale_and_recovered_with_a_controllable_clock(log: AsyncEventLog) -> None:
    clock = [datetime(2026, 3, 1, 9, 0, tzinfo=UTC)]
    registry = AsyncInstances(log, stale_after=300, clock=lambda: clock[0])
    async with Client(create_mcp_server(log)) as client:
        await registry.register("odin3-ps")
        clock[0] += timedelta(seconds=299)
        assert await registry.detect_stale() == []
        clock[0] += timedelta(seconds=2)
        assert [i.id for i in await registry.detect_stale()] == ["odin3-ps"]
        assert await registry.detect_stale() == []  # once per lapse
        resumed = await call(client, "resume_instance", instance_id="odin3-ps")
        assert resumed["instance"]["status"] == "stale"
        assert (await call(client, "heartbeat", instance_id="odin3-ps"))["status"] == "active"
        page = await call(client, "query_events", instance_id="odin3-ps", order="asc")
        assert [e["event_type"] for e in page["events"]] == [
            "instance_registered",
            "instance_stale",
            "instance_recovered",
            "instance_heartbeat",
        ]


# -- stdio --------------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_whole_lifecycle_over_stdio(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    params = StdioServerParameters(command=sys.executable, args=["-m", "meshlog.cli", "--url", url, "mcp"])
    async with Client(params) as client:
        await lifecycle(client)
    log = await meshlog.connect_async(url)
    try:
        assert await log.stream_version("instance:odin3-ps") == 5
        assert (await log.instances.get("odin3-ps")).project == "shop"
    finally:
        await log.close()


# -- streamable HTTP ----------------------------------------------------------------------------------------------
@asynccontextmanager
async def _http(base_url: str, token: str | None = None) -> AsyncIterator[Client]:
    """A client of ``/mcp`` that sends ``token`` (the HTTP client is the test's, so the test closes it)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(f"{base_url}/mcp", http_client=http)) as client,
    ):
        yield client


@pytest.mark.asyncio
async def test_the_whole_lifecycle_over_streamable_http(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"
    with running_app(create_app(url)) as base_url:
        async with Client(f"{base_url}/mcp") as client:
            await lifecycle(client)
        async with Client(f"{base_url}/mcp") as again:  # a second session of the same server
            assert (await call(again, "resume_instance", instance_id="odin3-ps"))["last_sequence_num"] == 5


@pytest.mark.asyncio
async def test_over_http_tokens_decide_tenant_and_scope(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"
    admin = await meshlog.connect_async(url)
    writer, _ = await admin.for_tenant("team-a").create_token("write")
    reader, _ = await admin.for_tenant("team-a").create_token("read")
    with running_app(create_app(url, token_cache_ttl=0)) as base_url:
        with pytest.raises(Exception):  # noqa: B017, PT011 - the SDK's error for a 401 answer varies by version
            async with _http(base_url) as client:
                await client.list_tools()
        async with _http(base_url, writer) as client:
            await call(client, "register_instance", instance_id="odin3-ps")
            emitted = await call(
                client, "emit_event", instance_id="odin3-ps", event_type="epic_started", event_data={"epic_id": "e"}
            )
            assert emitted["sequence_num"] == 2
        async with _http(base_url, reader) as client:
            page = await call(client, "query_events", instance_id="odin3-ps")
            assert page["total_count"] == 2
            assert "403" in await refused(client, "emit_event", instance_id="odin3-ps", event_type="x.y", event_data={})
    assert await admin.for_tenant("team-a").stream_version("instance:odin3-ps") == 2
    assert await admin.stream_version("instance:odin3-ps") == 0  # the server's own tenant saw nothing
    await admin.close()


@pytest.mark.asyncio
async def test_requests_from_unknown_hosts_are_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"
    with running_app(create_app(url)) as base_url:
        async with httpx2.AsyncClient() as http:
            body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            answer = await http.post(
                f"{base_url}/mcp",
                json=body,
                headers={"Host": "evil.example:80", "Accept": "application/json, text/event-stream"},
            )
            assert answer.status_code == 421
