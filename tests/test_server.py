"""The HTTP server against a real uvicorn (tests/server_helpers.py), over SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from meshlog.cli import main
from meshlog.server import create_app
from server_helpers import RunningServer, free_port, running_app, running_server

PROBLEM = "application/problem+json"


@pytest.fixture(params=["sqlite", "postgres"])
def server_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    request.applymarker(pytest.mark.postgres)
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def client(server_store: str) -> Iterator[httpx.Client]:
    with (
        running_server(server_store, types=["session"], max_batch=5) as base,
        httpx.Client(base_url=base, timeout=10) as http,
    ):
        yield http


def head(http: httpx.Client) -> int:
    position: int = http.get("/v1/head").json()["position"]
    return position


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:meshlog:problem:{code}" and body["status"] == status and body["title"]
    return body


def test_every_route(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    started = client.post(
        "/v1/events",
        json={
            "type": "task.started",
            "data": {"capability": "code"},
            "task_id": "42",
            "trace_id": "run-1",
            "occurred_at": "2026-01-31T09:30:00+00:00",
            "metadata": {"tag": "a"},
        },
    )
    assert started.status_code == 201, started.text
    first = started.json()["event"]
    assert (first["stream"], first["stream_position"], first["metadata"]) == ("task:42", 1, {"tag": "a"})
    batch = client.post(
        "/v1/events",
        json={
            "events": [
                {"type": "llm.call", "data": {"n": n}, "task_id": "42", "trace_id": "run-1", "parent_id": first["id"]}
                for n in (1, 2)
            ],
            "expected_version": 1,
        },
    )
    assert batch.status_code == 201, batch.text
    assert [e["stream_position"] for e in batch.json()["events"]] == [2, 3]
    outcome = client.post(f"/v1/events/{first['id']}/outcome", json={"outcome": {"status": "ok"}, "agent_id": "qa"})
    assert outcome.status_code == 201 and outcome.json()["event"]["type"] == "outcome.recorded"

    got = client.get(f"/v1/events/{first['id']}", params={"with_outcome": "true"}).json()["event"]
    assert got["outcome"] == {"status": "ok"}
    assert client.get(f"/v1/events/{first['id']}", params={"raw": "true"}).json()["event"]["id"] == first["id"]
    page = client.get("/v1/events", params={"task_id": "42", "limit": 2, "total_count": "true"}).json()
    assert len(page["events"]) == 2 and page["has_more"] and page["total_count"] == 4
    rest = client.get("/v1/events", params={"cursor": page["next_cursor"], "limit": 2}).json()
    assert [e["stream_position"] for e in rest["events"]] == [3, 4] and rest["next_cursor"] is None
    typed = client.get("/v1/events", params=[("type", "llm.call"), ("type", "task.started"), ("order", "desc")]).json()
    assert [e["type"] for e in typed["events"]] == ["llm.call", "llm.call", "task.started"]
    assert len(client.get("/v1/events", params={"text": "CODE"}).json()["events"]) == 1

    lineage = client.get(f"/v1/events/{first['id']}/lineage").json()
    assert lineage and json.dumps(lineage).count(first["id"]) >= 1
    graph = client.get(f"/v1/events/{first['id']}/graph", params={"max_depth": 1}).json()
    assert graph
    streams = client.get("/v1/streams", params={"prefix": "task:"}).json()["streams"]
    assert [(s["stream"], s["version"]) for s in streams] == [("task:42", 4)]
    events = client.get("/v1/streams/task:42/events", params={"backwards": "true", "limit": 2}).json()["events"]
    assert [e["stream_position"] for e in events] == [4, 3]
    assert client.get("/v1/streams/task:42/version").json() == {"stream": "task:42", "version": 4}
    state = client.get("/v1/streams/task:42/state", params={"to_version": 2}).json()
    assert (state["stream"], state["events_replayed"], state["last_version"]) == ("task:42", 2, 2)
    assert "state" in state and "duration_ms" in state
    assert client.get("/v1/streams/task:42/resume").json()["stream"] == "task:42"
    narrative = client.get("/v1/streams/task:42/narrative")
    assert narrative.headers["content-type"].startswith("text/markdown") and "task:42" in narrative.text
    assert "run-1" in client.get("/v1/traces/run-1/narrative").text
    types = client.get("/v1/event-types").json()["event_types"]
    assert any(t["type"].startswith("session") or t.get("category") for t in types)
    assert head(client) == outcome.json()["event"]["position"]

    assert client.get("/v1/checkpoints/watcher").json() == {"consumer": "watcher", "position": None}
    assert client.put("/v1/checkpoints/watcher", json={"position": 3}).json() == {"consumer": "watcher", "position": 3}
    assert client.get("/v1/checkpoints/watcher").json()["position"] == 3

    # streams whose names hold "/" are reached URL-encoded
    client.post("/v1/events", json={"type": "note", "stream": "repo/main:x"})
    assert client.get("/v1/streams/repo%2Fmain:x/version").json()["version"] == 1
    assert client.get("/openapi.json").json()["components"]["schemas"]["SingleEventIn"]


BAD_BODIES: list[tuple[str, bytes, int, str]] = [
    ("malformed JSON", b'{"type": "x",', 400, "bad-request"),
    ("invalid UTF-8", b'{"type": "\xff\xfe"}', 400, "bad-request"),
    ("not an object", b'["x"]', 400, "bad-request"),
    ("wrong type", b'{"type": 7}', 400, "bad-request"),
    ("string version", b'{"type": "x", "version": "2"}', 400, "bad-request"),
    ("non-object data", b'{"type": "x", "data": [1, 2]}', 400, "bad-request"),
    ("unknown field", b'{"type": "x", "colour": "red"}', 400, "bad-request"),
    ("unknown field in batch", b'{"events": [{"type": "x", "expected_version": 0}]}', 400, "bad-request"),
    ("NaN", b'{"type": "x", "data": {"v": NaN}}', 400, "bad-request"),
    ("bad occurred_at", b'{"type": "x", "occurred_at": "yesterday"}', 400, "bad-request"),
    ("bad expected_version", b'{"type": "x", "expected_version": "soon"}', 400, "bad-request"),
    ("NUL in data", b'{"type": "x", "data": {"t": "a\\u0000b"}}', 422, "validation"),
    ("NUL in type", b'{"type": "x\\u0000"}', 422, "validation"),
    ("empty type", b'{"type": ""}', 422, "validation"),
    ("batch too large", json.dumps({"events": [{"type": "x"}] * 6}).encode(), 422, "validation"),
    ("event too large", json.dumps({"type": "x", "data": {"t": "a" * 1_100_000}}).encode(), 413, "event-too-large"),
    ("body too large", json.dumps({"type": "x", "data": {"t": "a" * 2_200_000}}).encode(), 413, "body-too-large"),
]


def test_bad_input_is_a_problem_and_writes_nothing(client: httpx.Client) -> None:
    client.post("/v1/events", json={"type": "x"})
    before = head(client)
    for name, body, status, code in BAD_BODIES:
        response = client.post("/v1/events", content=body, headers={"content-type": "application/json"})
        problem = assert_problem(response, status, code)
        assert name and problem["detail"]
    problem = assert_problem(client.post("/v1/events", content=b'{"type": "x", "colour": 1}'), 400, "bad-request")
    assert problem["field"] == "colour"
    problem = assert_problem(
        client.post("/v1/events", content=b'{"type": "x", "data": {"t": "\\u0000"}}'), 422, "validation"
    )
    assert (problem["field"], problem["rule"]) == ("data.t", "no_nul")

    # a chunked body (no Content-Length) is measured while it streams
    def chunks() -> Iterator[bytes]:
        yield b'{"type": "x", "data": {"t": "'
        for _ in range(300):
            yield b"a" * 10_000
        yield b'"}}'

    assert_problem(client.post("/v1/events", content=chunks()), 413, "body-too-large")
    assert_problem(client.post("/v1/events/not-an-id/outcome", json={"outcome": {}}), 404, "not-found")
    assert_problem(client.post("/v1/events/not-an-id/outcome", json={"outcome": 3}), 400, "bad-request")
    assert_problem(client.put("/v1/checkpoints/c", json={"position": -1}), 400, "bad-request")
    assert_problem(client.put("/v1/checkpoints/c", json={"position": "1"}), 400, "bad-request")
    assert_problem(client.get("/v1/events", params={"cursor": "nonsense"}), 400, "invalid-cursor")
    assert_problem(client.get("/v1/events", params={"limit": "ten"}), 400, "bad-request")
    assert_problem(client.get("/v1/events", params={"limit": 5000}), 422, "validation")
    assert_problem(client.get("/v1/events", params={"stream": "a\x00b"}), 422, "validation")
    assert_problem(client.get("/v1/events", params={"since": "2026-01-01T00:00:00"}), 422, "validation")
    assert_problem(client.get("/v1/events/00000000-0000-7000-8000-000000000000"), 404, "not-found")
    assert_problem(client.get("/v1/no-such-route"), 404, "not-found")
    assert_problem(client.delete("/v1/events"), 405, "method-not-allowed")
    assert head(client) == before


def test_idempotent_retry_and_expected_version(client: httpx.Client) -> None:
    body = {"type": "llm.call", "data": {"model": "m"}, "task_id": "7", "idempotency_key": "call-1"}
    first = client.post("/v1/events", json=body).json()["event"]
    again = client.post("/v1/events", json=body)
    assert again.status_code == 201 and again.json()["event"] == first
    conflict = assert_problem(
        client.post("/v1/events", json={**body, "data": {"model": "other"}}), 409, "idempotency-conflict"
    )
    assert (conflict["key"], conflict["existing_id"]) == ("call-1", first["id"])

    ok = client.post("/v1/events", json={"type": "s", "stream": "instance:a", "expected_version": "no_stream"})
    assert ok.status_code == 201
    wrong = client.post("/v1/events", json={"type": "s", "stream": "instance:a", "expected_version": "no_stream"})
    problem = assert_problem(wrong, 409, "wrong-expected-version")
    assert (problem["stream"], problem["actual"], problem["expected"]) == ("instance:a", 1, "no_stream")
    wrong = client.post("/v1/events", json={"events": [{"type": "s", "stream": "instance:a"}], "expected_version": 5})
    assert assert_problem(wrong, 409, "wrong-expected-version")["actual"] == 1
    assert client.get("/v1/streams/instance:a/version").json()["version"] == 1


def read_sse(lines: Iterator[str], count: int) -> list[dict[str, str]]:
    """The next ``count`` SSE messages (comments skipped) from a response's ``iter_lines()``."""
    messages: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in lines:
        if not line:
            if current:
                messages.append(current)
                current = {}
                if len(messages) == count:
                    return messages
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        current[key] = value.removeprefix(" ")
    return messages


def test_subscribe_catches_up_follows_and_resumes(client: httpx.Client) -> None:
    for n in range(3):
        client.post("/v1/events", json={"type": "deploy.completed" if n != 1 else "other", "data": {"n": n}})
    with client.stream("GET", "/v1/subscribe", params={"type": "deploy.completed"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        caught_up = read_sse(lines, 2)
        assert [json.loads(m["data"])["data"]["n"] for m in caught_up] == [0, 2]
        assert caught_up[0]["event"] == "deploy.completed"
        live = client.post("/v1/events", json={"type": "deploy.completed", "data": {"n": 3}}).json()["event"]
        (message,) = read_sse(lines, 1)
        assert message["id"] == str(live["position"]) and json.loads(message["data"]) == live
    with client.stream(
        "GET", "/v1/subscribe", headers={"Last-Event-ID": caught_up[1]["id"]}, params={"after_position": 0}
    ) as response:
        (resumed,) = read_sse(response.iter_lines(), 1)
        assert resumed["id"] == str(live["position"])
    assert_problem(client.get("/v1/subscribe", headers={"Last-Event-ID": "x"}), 400, "bad-request")


def test_subscribe_takes_the_filters_of_a_query(client: httpx.Client) -> None:
    parent = client.post("/v1/events", json={"type": "task.started", "data": {"note": "build"}}).json()["event"]
    child = {"type": "task.progress", "parent_id": parent["id"]}
    client.post("/v1/events", json={**child, "data": {"note": "Compiling the parser"}})
    client.post("/v1/events", json={**child, "data": {"note": "linking"}})
    client.post("/v1/events", json={"type": "task.progress", "data": {"note": "compiling elsewhere"}})
    params = {"parent_id": parent["id"], "text": "COMPILING", "since": parent["recorded_at"]}
    with client.stream("GET", "/v1/subscribe", params=params) as response:
        lines = response.iter_lines()
        (first,) = read_sse(lines, 1)
        assert json.loads(first["data"])["data"]["note"] == "Compiling the parser"
        client.post("/v1/events", json={**child, "data": {"note": "nothing to see"}})
        live = client.post("/v1/events", json={**child, "data": {"note": "compiling tests"}}).json()["event"]
        (second,) = read_sse(lines, 1)
        assert second["id"] == str(live["position"])
    assert_problem(client.get("/v1/subscribe", params={"since": "2026-01-01T00:00:00"}), 422, "validation")


def test_metrics_move(client: httpx.Client) -> None:
    def value(text: str, prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    before = client.get("/metrics").text
    client.post("/v1/events", json={"type": "tick"})
    client.post("/v1/events", json={"type": ""})
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    assert value(after.text, 'meshlog_events_written_total{type="tick"}') == 1
    assert value(after.text, 'meshlog_events_rejected_total{code="validation"}') == 1 + value(
        before, 'meshlog_events_rejected_total{code="validation"}'
    )
    assert 'route="/v1/events"' in after.text and "meshlog_group_commit_queue_depth" in after.text
    assert "meshlog_store_errors_total" in after.text


def test_concurrent_writes_each_acknowledged(tmp_path: Path) -> None:
    with running_server(f"sqlite:///{tmp_path / 'c.db'}") as base:
        results: list[int] = []

        def write(n: int) -> None:
            with httpx.Client(base_url=base, timeout=10) as http:
                for i in range(5):
                    response = http.post("/v1/events", json={"type": "w", "stream": f"s{n}", "data": {"i": i}})
                    results.append(response.json()["event"]["position"])

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(results)) == 20
        assert httpx.get(f"{base}/v1/head").json()["position"] == max(results)


def test_memory_store_and_readyz_when_store_unreachable() -> None:
    with running_server("memory://") as base:
        assert httpx.get(f"{base}/readyz").status_code == 200
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    with running_server(closed, migrate=False) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        ready = httpx.get(f"{base}/readyz")
        assert_problem(ready, 503, "store-unavailable")
        problem = assert_problem(httpx.post(f"{base}/v1/events", json={"type": "x"}), 503, "store-unavailable")
        assert problem["detail"]
        assert "meshlog_store_errors_total 0.0" not in httpx.get(f"{base}/metrics").text


def test_shutdown_does_not_hang_on_open_subscription(tmp_path: Path) -> None:
    server = RunningServer(create_app(f"sqlite:///{tmp_path / 's.db'}", sse_ping=0.2))
    server.start()
    opened = threading.Event()
    lines: list[str] = []

    def tail() -> None:
        with httpx.stream("GET", f"{server.base_url}/v1/subscribe", timeout=10) as response:
            opened.set()
            lines.extend(response.iter_lines())

    reader = threading.Thread(target=tail)
    reader.start()
    assert opened.wait(5)
    time.sleep(0.5)
    started = time.monotonic()
    server.stop()
    reader.join(5)
    assert not reader.is_alive() and time.monotonic() - started < 5
    assert any(line.startswith(":") for line in lines)  # keep-alive comments


def test_serve_refuses_public_address_without_insecure() -> None:
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--url", "memory://"])
    assert result.exit_code == 2
    assert "--insecure" in result.output
    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    assert "Examples:" in help_text and "meshlog serve" in help_text


def test_serve_command_runs_a_server(tmp_path: Path) -> None:
    port = free_port()
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "meshlog"),
            "serve",
            "--url",
            url,
            "--port",
            str(port),
            "--types",
            "session",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "meshlog serve did not start"
            time.sleep(0.1)
        created = httpx.post(f"{base}/v1/events", json={"type": "task.started", "task_id": "1"})
        assert created.status_code == 201
        assert httpx.get(f"{base}/v1/head").json()["position"] == created.json()["event"]["position"]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=15)
    # uvicorn re-raises the signal after its graceful shutdown
    assert process.returncode in {0, -15}, output
    assert "Application shutdown complete" in output
    assert f"http://127.0.0.1:{port}" in output


def test_running_app_helper_serves_any_app(tmp_path: Path) -> None:
    with running_app(create_app(f"sqlite:///{tmp_path / 'h.db'}", tenant="acme")) as base:
        event = httpx.post(f"{base}/v1/events", json={"type": "x"}).json()["event"]
        assert event["tenant"] == "acme"
