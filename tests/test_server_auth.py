"""API tokens over HTTP: a real server, real tokens in its store, tenants kept apart (on PostgreSQL also by the
database's row-level security, the server connecting as an ordinary role)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import meshlog
from meshlog.cli import main
from meshlog.server import create_app
from server_helpers import free_port, running_app


@dataclass
class Tokens:
    base_url: str
    store_url: str
    writer_a: str
    reader_a: str
    admin_a: str
    writer_b: str


@pytest.fixture(params=["sqlite", "postgres"])
def store_with_tokens(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'auth.db'}"
    request.applymarker(pytest.mark.postgres)
    url: str = request.getfixturevalue("pg_app_url")
    return url


@pytest.fixture
def tokens(store_with_tokens: str) -> Iterator[Tokens]:
    with meshlog.connect(store_with_tokens) as log:
        a, b = log.for_tenant("tenant-a"), log.for_tenant("tenant-b")
        writer_a, _ = a.create_token("write")
        reader_a, _ = a.create_token("read")
        admin_a, _ = a.create_token("admin")
        writer_b, _ = b.create_token("write")
    app = create_app(store_with_tokens, token_cache_ttl=0, dapr=True)
    with running_app(app) as base_url:
        yield Tokens(base_url, store_with_tokens, writer_a, reader_a, admin_a, writer_b)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:meshlog:problem:{code}"
    return body


def test_requests_need_a_valid_token(tokens: Tokens) -> None:
    with httpx.Client(base_url=tokens.base_url) as http:
        missing = http.get("/v1/events")
        _problem(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        _problem(http.get("/v1/events", headers=_auth("mlk_0000000000000000_" + "x" * 43)), 401, "unauthorized")
        _problem(http.get("/v1/events", headers=_auth(tokens.writer_a[:-2] + "zz")), 401, "unauthorized")
        _problem(http.get("/v1/events", headers={"Authorization": f"Basic {tokens.writer_a}"}), 401, "unauthorized")
        _problem(http.post("/v1/events", json={"type": "x", "data": {}}), 401, "unauthorized")
        # Process and readiness probes, and the API description, need no token.
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        assert http.get("/openapi.json").status_code == 200
    with meshlog.connect(tokens.store_url) as log:
        assert log.for_tenant("tenant-a").head_position() == 0  # nothing was written


def test_scopes(tokens: Tokens) -> None:
    with httpx.Client(base_url=tokens.base_url) as http:
        refused = http.post("/v1/events", json={"type": "x", "data": {}}, headers=_auth(tokens.reader_a))
        assert _problem(refused, 403, "forbidden")["scope"] == "write"
        assert 'scope="write"' in refused.headers["www-authenticate"]
        assert http.get("/v1/events", headers=_auth(tokens.reader_a)).status_code == 200
        written = http.post("/v1/events", json={"type": "x", "data": {}}, headers=_auth(tokens.writer_a))
        assert written.status_code == 201
        assert written.json()["event"]["tenant"] == "tenant-a"
        # /metrics tells about every tenant: admin only.
        _problem(http.get("/metrics", headers=_auth(tokens.writer_a)), 403, "forbidden")
        metrics = http.get("/metrics", headers=_auth(tokens.admin_a))
        assert metrics.status_code == 200 and "meshlog_events_written_total" in metrics.text
        assert http.post("/v1/events", json={"type": "y", "data": {}}, headers=_auth(tokens.admin_a)).status_code == 201
        # OTLP exporters send the token as a header too (OTEL_EXPORTER_OTLP_HEADERS).
        traces: dict[str, list[object]] = {"resourceSpans": []}
        _problem(http.post("/v1/traces", json=traces), 401, "unauthorized")
        _problem(http.post("/v1/traces", json=traces, headers=_auth(tokens.reader_a)), 403, "forbidden")
        assert http.post("/v1/traces", json=traces, headers=_auth(tokens.writer_a)).status_code == 200


def test_tenants_are_isolated_over_http(tokens: Tokens) -> None:
    with httpx.Client(base_url=tokens.base_url) as http:
        body = {"type": "secret.plan", "data": {"plan": "a"}, "stream": "shared", "idempotency_key": "k"}
        mine = http.post("/v1/events", json=body, headers=_auth(tokens.writer_a)).json()["event"]
        theirs = http.post("/v1/events", json={**body, "data": {"plan": "b"}}, headers=_auth(tokens.writer_b)).json()[
            "event"
        ]
        assert theirs["id"] != mine["id"] and theirs["stream_position"] == 1  # same key and stream, other tenant
        b = _auth(tokens.writer_b)
        _problem(http.get(f"/v1/events/{mine['id']}", headers=b), 404, "not-found")
        listed = http.get("/v1/events", headers=b).json()["events"]
        assert [e["data"] for e in listed] == [{"plan": "b"}]
        stream = http.get("/v1/streams/shared/events", headers=b).json()["events"]
        assert [e["id"] for e in stream] == [theirs["id"]]
        assert http.get("/v1/head", headers=b).json()["position"] == theirs["position"]
        child = {"type": "x", "data": {}, "parent_id": mine["id"]}
        _problem(http.post("/v1/events", json=child, headers=b), 422, "validation")
        _problem(http.get(f"/v1/events/{mine['id']}/graph", headers=b), 404, "not-found")
        # The live tail of tenant b starts with b's events only.
        with http.stream("GET", "/v1/subscribe", headers=b, timeout=10) as response:
            data = next(line for line in response.iter_lines() if line.startswith("data:"))
        assert theirs["id"] in data and mine["id"] not in data


def test_a_revoked_token_stops_working(tokens: Tokens) -> None:
    with httpx.Client(base_url=tokens.base_url) as http:
        assert http.get("/v1/events", headers=_auth(tokens.writer_b)).status_code == 200
        with meshlog.connect(tokens.store_url, tenant="tenant-b") as log:
            (record,) = log.tokens()
            log.revoke_token(record.id)
        _problem(http.get("/v1/events", headers=_auth(tokens.writer_b)), 401, "unauthorized")


def test_dapr_deliveries_carry_the_sidecar_token(tokens: Tokens) -> None:
    envelope = {
        "specversion": "1.0",
        "id": "delivery-1",
        "source": "orchestrator",
        "type": "com.dapr.event.sent",
        "datacontenttype": "application/json",
        "topic": "task-progress",
        "pubsubname": "pubsub",
        "data": {"taskId": "t1", "agentId": "coder", "status": "running", "progress": 10},
    }
    headers = {"Content-Type": "application/cloudevents+json"}
    with httpx.Client(base_url=tokens.base_url) as http:
        assert http.get("/dapr/subscribe").status_code == 200
        # Without the app token Dapr gets an error status, which makes it redeliver: nothing is lost.
        unauthorized = http.post("/dapr/events/task-progress", json=envelope, headers=headers)
        assert unauthorized.status_code == 401
        delivered = http.post(
            "/dapr/events/task-progress", json=envelope, headers={**headers, "dapr-api-token": tokens.writer_b}
        )
        assert delivered.status_code == 200 and delivered.json() == {"status": "SUCCESS"}
    with meshlog.connect(tokens.store_url, tenant="tenant-b") as log:
        assert [e.type for e in log.query()] == ["task.progress"]
    with meshlog.connect(tokens.store_url, tenant="tenant-a") as log:
        assert list(log.query()) == []


def test_the_first_token_makes_a_running_server_require_tokens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'open.db'}"
    with running_app(create_app(url, token_cache_ttl=0)) as base_url, httpx.Client(base_url=base_url) as http:
        assert http.post("/v1/events", json={"type": "x", "data": {}}).json()["event"]["tenant"] == "default"
        with meshlog.connect(url, tenant="team") as log:
            text, record = log.create_token("write")
        _problem(http.post("/v1/events", json={"type": "x", "data": {}}), 401, "unauthorized")
        assert http.post("/v1/events", json={"type": "x", "data": {}}, headers=_auth(text)).status_code == 201
        with meshlog.connect(url, tenant="team") as log:
            log.revoke_token(record.id)
        # Revoking the last token does not reopen the server.
        _problem(http.post("/v1/events", json={"type": "x", "data": {}}), 401, "unauthorized")


def test_serve_binds_beyond_loopback_only_with_tokens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bind.db'}"
    refused = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--url", url])
    assert refused.exit_code == 2 and "no API token" in refused.output
    created = CliRunner().invoke(main, ["--url", url, "token", "create", "--tenant", "ops", "--scope", "read"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "meshlog"), "serve", "--url", url, "--host", "0.0.0.0", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1/events", headers=_auth(token), timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert answer.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/v1/events", timeout=2).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_token_cli_round_trip(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    created = runner.invoke(
        main, ["--url", url, "token", "create", "--tenant", "t1", "--scope", "write", "--expires", "30d", "--json"]
    )
    assert created.exit_code == 0, created.output
    record = json.loads(created.stdout)
    assert record["token"].startswith("mlk_") and record["scopes"] == ["write"] and record["expires_at"]
    listed = runner.invoke(main, ["--url", url, "token", "list", "--tenant", "t1", "--json"])
    assert [t["id"] for t in json.loads(listed.stdout)] == [record["id"]]
    assert "token" not in json.loads(listed.stdout)[0]
    other = runner.invoke(main, ["--url", url, "token", "revoke", record["id"], "--tenant", "t2"])
    assert other.exit_code == 1 and "no active token" in other.output
    revoked = runner.invoke(main, ["--url", url, "token", "revoke", record["id"], "--tenant", "t1"])
    assert revoked.exit_code == 0, revoked.output
    bad = runner.invoke(main, ["--url", url, "token", "create", "--scope", "read", "--expires", "soon"])
    assert bad.exit_code == 2 and "--expires" in bad.output
    with meshlog.connect(url, tenant="t1") as log:
        assert len(log.tokens()) == 1 and not log.has_tokens()
