"""``POST /v1/events`` is served before FastAPI sees the request (``MeshlogApp.events_fast_path``): its answers,
metrics and OpenAPI description must be exactly those of the route it stands for. Two servers on fresh SQLite files get
the same requests, one with the fast path and one without, and must answer alike."""

from __future__ import annotations

import asyncio
import gc
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import meshlog.server.app
from meshlog.server import app_from_options, create_app
from meshlog.server.app import MeshlogApp
from meshlog.server.runner import GC_THRESHOLD, settled_heap
from server_helpers import running_app

MAX_BODY = 2_000
MAX_BATCH = 5
JSON = {"content-type": "application/json"}

REQUESTS: list[tuple[str, bytes]] = [
    ("single", json.dumps({"type": "a", "data": {"x": 1.5}, "stream": "s", "idempotency_key": "k1"}).encode()),
    (
        "idempotent retry",
        json.dumps({"type": "a", "data": {"x": 1.5}, "stream": "s", "idempotency_key": "k1"}).encode(),
    ),
    (
        "idempotency conflict",
        json.dumps({"type": "a", "data": {"x": 2}, "stream": "s", "idempotency_key": "k1"}).encode(),
    ),
    ("batch", json.dumps({"events": [{"type": "b", "task_id": "t"}, {"type": "c", "related": []}]}).encode()),
    ("batch over max_batch", json.dumps({"events": [{"type": "b"}] * (MAX_BATCH + 1)}).encode()),
    ("no_stream", json.dumps({"type": "s", "stream": "v", "expected_version": "no_stream"}).encode()),
    ("no_stream again", json.dumps({"type": "s", "stream": "v", "expected_version": "no_stream"}).encode()),
    ("unknown field", b'{"type": "x", "colour": 1}'),
    ("wrong type", b'{"type": "x", "version": "2"}'),
    ("bad timestamp", b'{"type": "x", "occurred_at": "yesterday"}'),
    ("not JSON", b"{not json"),
    ("NaN", b'{"type": "x", "data": {"n": NaN}}'),
    ("invalid UTF-8", b'{"type": "\xff"}'),
    ("not an object", b"[1, 2]"),
    ("empty type", b'{"type": ""}'),
    ("NUL in data", b'{"type": "x", "data": {"t": "\\u0000"}}'),
    ("too large", json.dumps({"type": "big", "data": {"s": "x" * MAX_BODY}}).encode()),
    ("empty body", b""),
]


def _app(url: str, *, fast: bool) -> FastAPI:
    app = create_app(url, max_body_bytes=MAX_BODY, max_batch=MAX_BATCH)
    assert isinstance(app, MeshlogApp) and app.events_fast_path is not None
    if not fast:
        app.events_fast_path = None
    return app


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with (
        running_app(_app(f"sqlite:///{tmp_path / 'fast.db'}", fast=True)) as fast,
        running_app(_app(f"sqlite:///{tmp_path / 'routed.db'}", fast=False)) as routed,
        httpx.Client(base_url=fast, timeout=10) as fast_client,
        httpx.Client(base_url=routed, timeout=10) as routed_client,
    ):
        yield fast_client, routed_client


def _comparable(response: httpx.Response) -> dict[str, Any]:
    """Status, headers and body, without what differs between two stores (ids, times, the Date header)."""
    headers = {k: v for k, v in response.headers.items() if k not in {"date", "content-length"}}
    body: Any = response.json()
    for event in [body.get("event")] if "event" in body else body.get("events", []):
        if isinstance(event, dict):
            for key in ("id", "root_id", "recorded_at"):
                event.pop(key, None)
    if "existing_id" in body:
        body["existing_id"] = "..."
    if "detail" in body:
        body["detail"] = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<id>", body["detail"])
    return {"status": response.status_code, "headers": headers, "body": body}


def _series(metrics: str, name: str) -> list[str]:
    return sorted(line for line in metrics.splitlines() if line.startswith(name) and "_created" not in line)


def test_answers_as_the_route_does(servers: tuple[httpx.Client, httpx.Client]) -> None:
    fast, routed = servers
    statuses = set()
    for label, content in REQUESTS:
        answers = [client.post("/v1/events", content=content, headers=JSON) for client in (fast, routed)]
        assert _comparable(answers[0]) == _comparable(answers[1]), label
        statuses.add(answers[0].status_code)
    assert statuses == {201, 400, 409, 413, 422}
    # Not the fast path's: other methods and paths still reach the router.
    for client in servers:
        assert client.get("/v1/events").json()["events"][0]["type"] == "a"
        assert client.delete("/v1/events").status_code == 405
        assert client.post("/v1/events/", content=b"{}", headers=JSON).status_code in {307, 404}
    written = [_series(client.get("/metrics").text, "meshlog_events_written_total") for client in servers]
    rejected = [_series(client.get("/metrics").text, "meshlog_events_rejected_total") for client in servers]
    assert written[0] == written[1] and any('type="a"' in line for line in written[0])
    assert rejected[0] == rejected[1] and any('code="bad-request"' in line for line in rejected[0])
    counted = [
        _series(client.get("/metrics").text, 'meshlog_http_request_duration_seconds_count{method="POST"')
        for client in servers
    ]
    assert counted[0] == counted[1]
    assert any('route="/v1/events"' in line and line.endswith(f" {float(len(REQUESTS))}") for line in counted[0])


def test_an_unexpected_error_is_answered_as_the_route_does(
    servers: tuple[httpx.Client, httpx.Client], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(meshlog.server.app, "append_events", broken)
    answers = [client.post("/v1/events", json={"type": "x"}) for client in servers]
    assert [a.status_code for a in answers] == [500, 500]
    assert _comparable(answers[0]) == _comparable(answers[1])
    assert answers[0].json()["type"].endswith(":internal")
    assert sum("a bug" in (r.exc_text or "") for r in caplog.records) >= 2  # logged by both


def test_middleware_added_to_the_app_sees_every_request(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'events.db'}")

    class Gateway:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            async def stamped(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), (b"x-gateway", b"seen")]
                await send(message)

            await self.app(scope, receive, stamped)

    app.add_middleware(Gateway)
    with running_app(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        written = client.post("/v1/events", json={"type": "x"})
        assert written.status_code == 201 and written.headers["x-gateway"] == "seen"
        assert client.get("/v1/events").headers["x-gateway"] == "seen"


def test_openapi_still_describes_the_route(servers: tuple[httpx.Client, httpx.Client]) -> None:
    fast, routed = servers
    documents = [client.get("/openapi.json").json() for client in (fast, routed)]
    assert documents[0] == documents[1]
    post = documents[0]["paths"]["/v1/events"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/EventsBody"}


def test_served_when_mounted_under_a_prefix(tmp_path: Path) -> None:
    outer = FastAPI()
    outer.add_api_route("/healthz", lambda: {"status": "ok"})
    outer.mount("/api", create_app(f"sqlite:///{tmp_path / 'events.db'}"))
    with running_app(outer) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.post("/api/v1/events", json={"type": "x"}).status_code == 201
        assert client.get("/api/v1/events").json()["events"][0]["type"] == "x"
        assert client.post("/v1/events", json={"type": "x"}).status_code == 404


def test_settled_heap_freezes_the_startup_heap_and_restores() -> None:
    threshold = gc.get_threshold()

    async def inside() -> tuple[int, tuple[int, int, int]]:
        async with settled_heap():
            return gc.get_freeze_count(), gc.get_threshold()

    frozen, tuned = asyncio.run(inside())
    assert frozen > 1000 and tuned == GC_THRESHOLD
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == threshold


def test_server_processes_settle_their_heap(tmp_path: Path) -> None:
    app = app_from_options({"url": f"sqlite:///{tmp_path / 'events.db'}"})
    assert settled_heap in app.state.meshlog.lifespan_hooks
    assert settled_heap not in create_app(f"sqlite:///{tmp_path / 'other.db'}").state.meshlog.lifespan_hooks
