"""The instance registry over HTTP (``/v1/instances``), the server's stale detector and the CLI commands
(``meshlog instances``, ``meshlog resume INSTANCE``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

import meshlog
from meshlog.cli import main
from meshlog.server import create_app
from meshlog.server.instances import InstanceSettings
from server_helpers import running_app


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


def test_routes_register_beat_list_close_and_resume(url: str) -> None:
    with running_app(create_app(url, instances=InstanceSettings(heartbeat_event_every=3600))) as base:
        created = httpx.post(f"{base}/v1/instances", json={"id": "odin3-ps", "project": "shop", "host": "odin3"})
        assert created.status_code == 201
        assert created.json()["instance"]["status"] == "active"
        beat = httpx.post(f"{base}/v1/instances/odin3-ps/heartbeat", json={"data": {"current_epic": "epic-3"}})
        assert beat.status_code == 200 and beat.json()["heartbeat_event"] is True
        again = httpx.post(f"{base}/v1/instances/odin3-ps/heartbeat")  # no body: allowed
        assert again.status_code == 200 and again.json()["heartbeat_event"] is False  # coalesced
        httpx.post(f"{base}/v1/events", json={"type": "epic_started", "stream": "instance:odin3-ps", "data": {}})
        listed = httpx.get(f"{base}/v1/instances", params={"project": "shop"}).json()["instances"]
        assert [i["id"] for i in listed] == ["odin3-ps"]
        assert httpx.get(f"{base}/v1/instances/odin3-ps").json()["host"] == "odin3"
        resumed = httpx.get(f"{base}/v1/instances/odin3-ps/resume").json()
        assert resumed["stream"] == "instance:odin3-ps" and resumed["instance"]["id"] == "odin3-ps"
        assert resumed["last_version"] == 3
        closed = httpx.post(f"{base}/v1/instances/odin3-ps/close", json={"reason": "done"})
        assert closed.json()["instance"]["status"] == "closed"
        assert closed.json()["previous"]["status"] == "active"
        refused = httpx.post(f"{base}/v1/instances/odin3-ps/heartbeat")
        assert refused.status_code == 422 and "closed" in refused.json()["detail"]
        for method, path, body, status in [
            ("GET", "/v1/instances/ghost", None, 404),
            ("POST", "/v1/instances/ghost/heartbeat", {}, 404),
            ("POST", "/v1/instances/ghost/close", {}, 404),
            ("POST", "/v1/instances", {"id": "bad id"}, 422),
            ("POST", "/v1/instances", {"id": "x", "colour": "red"}, 400),
            ("POST", "/v1/instances", [1], 400),
            ("POST", "/v1/instances/x/heartbeat", {"data": [1]}, 400),
            ("GET", "/v1/instances?status=sleeping", None, 400),
            ("GET", "/v1/instances?limit=0", None, 422),
        ]:
            answer = httpx.request(method, f"{base}{path}", json=body)
            assert answer.status_code == status, (path, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
    log = meshlog.connect(url)
    assert [e.type for e in log.read_stream("instance:odin3-ps")] == [
        "instance_registered",
        "instance_heartbeat",
        "epic_started",
        "instance_closed",
    ]
    assert [i.id for i in log.instances.list()] == ["odin3-ps"]  # "bad id" and "x" were never written
    log.close()


def test_the_server_detects_stale_instances_in_every_tenant(url: str) -> None:
    admin = meshlog.connect(url)
    admin.for_tenant("team-a").instances.register("quiet")
    admin.instances.register("also-quiet")
    settings = InstanceSettings(stale_after=0.2, check_every=0.05)
    with running_app(create_app(url, instances=settings)):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            statuses = {
                admin.for_tenant(t).instances.get(i).status for t, i in (("team-a", "quiet"), ("default", "also-quiet"))
            }
            if statuses == {"stale"}:
                break
            time.sleep(0.05)
        assert statuses == {"stale"}
    assert [e.type for e in admin.for_tenant("team-a").read_stream("instance:quiet")] == [
        "instance_registered",
        "instance_stale",
    ]
    admin.close()


def test_without_the_registry_there_are_no_routes(url: str) -> None:
    with running_app(create_app(url, instances=False)) as base:
        assert httpx.get(f"{base}/v1/instances").status_code == 404
        assert httpx.post(f"{base}/mcp", json={}).status_code in {404, 405}


# -- the CLI ---------------------------------------------------------------------------------------------------
def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), prog_name="meshlog", catch_exceptions=False)


def test_instances_commands(url: str) -> None:
    assert cli("--url", url, "instances").stdout.strip() == "no instances"
    made = cli("--url", url, "instances", "register", "odin3-ps", "--project", "shop", "--metadata", '{"m": 1}')
    assert made.exit_code == 0 and made.stdout == "registered odin3-ps (instance:odin3-ps)\n"
    beat = cli("--url", url, "instances", "heartbeat", "odin3-ps", "--data", '{"context_percent": 40}', "--json")
    assert json.loads(beat.stdout)["status"] == "active"
    table = cli("--url", url, "instances").stdout
    assert "odin3-ps" in table and "active" in table and "shop" in table and "1 instance" in table
    listed = json.loads(cli("--url", url, "instances", "--status", "active", "--json").stdout)
    assert [(i["id"], i["metadata"]) for i in listed] == [("odin3-ps", {"m": 1})]
    assert cli("--url", url, "instances", "close", "odin3-ps").stdout == "odin3-ps is closed\n"
    refused = cli("--url", url, "instances", "heartbeat", "odin3-ps")
    assert refused.exit_code == 2 and "closed" in refused.stderr
    missing = cli("--url", url, "instances", "heartbeat", "ghost")
    assert missing.exit_code == 1 and "register it first" in missing.stderr
    bad = cli("--url", url, "instances", "register", "x", "--metadata", "[1]")
    assert bad.exit_code == 2
    assert json.loads(cli("--url", url, "instances", "--json").stdout)[0]["status"] == "closed"


def test_resume_takes_an_instance_id(url: str) -> None:
    log = meshlog.connect(url)
    log.instances.register("odin3-ps")
    log.emit("epic_started", {"epic_id": "epic-003"}, stream="instance:odin3-ps")
    log.emit("other", {}, stream="plain")
    log.close()
    by_id = json.loads(cli("--url", url, "resume", "odin3-ps", "--json").stdout)
    assert by_id["stream"] == "instance:odin3-ps" and by_id["state"]["last_epic"] == "epic-003"
    assert json.loads(cli("--url", url, "resume", "plain", "--json").stdout)["stream"] == "plain"
    assert json.loads(cli("--url", url, "resume", "nothing", "--json").stdout)["stream"] == "nothing"
