"""The event explorer's API and page over HTTP: ``GET /v1/stats``, ``GET /v1/traces/{trace_id}/spans``, ``/`` and
``/ui/``, on a real server in front of SQLite and PostgreSQL (there as an ordinary role, under row-level
security)."""

from __future__ import annotations

import glob
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import meshlog
from meshlog.cli import main
from meshlog.demo import write_demo
from meshlog.server import create_app
from meshlog.server.explorer import UI_DIRECTORY
from server_helpers import running_app

ROOT = Path(__file__).resolve().parent.parent
PROBLEM = "application/problem+json"
STATS_FIELDS = {
    "since", "until", "bucket_seconds", "total", "timeline", "by_type", "by_agent", "failures", "failures_by_type"
}  # fmt: skip
SPANS_FIELDS = {"trace_id", "start", "end", "event_count", "truncated", "spans"}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'explorer.db'}"
    request.applymarker(pytest.mark.postgres)
    url: str = request.getfixturevalue("pg_app_url")
    return url


@pytest.fixture
def served(store: str) -> Iterator[str]:
    with running_app(create_app(store, token_cache_ttl=0)) as base_url:
        yield base_url


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:meshlog:problem:{code}" and body["status"] == status
    return body


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- stats ----------------------------------------------------------------------------------------------------------
WRITTEN = [
    ("llm.call", "coder"),
    ("llm.response", "coder"),
    ("llm.call", "tester"),
    ("llm.error", "tester"),
    ("task.result.failure", "tester"),
    ("deployment_failed", None),
    ("task.progress", "coder"),
    ("llm.call", None),
    ("tool.call", "coder"),
]


def test_stats_are_what_was_written(store: str, served: str) -> None:
    with meshlog.connect(store) as log:
        events = [log.emit(kind, {"i": i}, agent_id=agent) for i, (kind, agent) in enumerate(WRITTEN)]
        log.for_tenant("elsewhere").emit("llm.error", agent_id="coder")
    since = events[0].recorded_at - timedelta(seconds=30)
    until = events[-1].recorded_at + timedelta(seconds=30)
    with httpx.Client(base_url=served) as http:
        answer = http.get("/v1/stats", params={"since": since.isoformat(), "until": until.isoformat(), "bucket": "10"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == STATS_FIELDS
        assert (_when(body["since"]), _when(body["until"]), body["bucket_seconds"]) == (since, until, 10)
        assert body["total"] == len(WRITTEN)
        expected = [0] * len(body["timeline"])
        for e in events:
            expected[(e.recorded_at - since) // timedelta(seconds=10)] += 1
        assert [b["count"] for b in body["timeline"]] == expected
        assert [_when(b["start"]) for b in body["timeline"]] == [
            since + timedelta(seconds=10 * i) for i in range(len(expected))
        ]
        assert len(body["timeline"]) == 7  # 60 s and a bit: the last bucket is partial
        assert body["by_type"] == [
            {"type": "llm.call", "count": 3},
            {"type": "deployment_failed", "count": 1},
            {"type": "llm.error", "count": 1},
            {"type": "llm.response", "count": 1},
            {"type": "task.progress", "count": 1},
            {"type": "task.result.failure", "count": 1},
            {"type": "tool.call", "count": 1},
        ]
        assert body["by_agent"] == [
            {"agent_id": "coder", "count": 4},
            {"agent_id": "tester", "count": 3},
            {"agent_id": None, "count": 2},
        ]
        assert body["failures"] == 3
        assert body["failures_by_type"] == [
            {"type": "deployment_failed", "count": 1},
            {"type": "llm.error", "count": 1},
            {"type": "task.result.failure", "count": 1},
        ]
        # Without parameters: the hour up to now, by minute; units and a "Z" are understood.
        default = http.get("/v1/stats").json()
        assert default["total"] == len(WRITTEN) and default["bucket_seconds"] == 60 and len(default["timeline"]) == 60
        assert _when(default["until"]) - _when(default["since"]) == timedelta(hours=1)
        zulu = (until.astimezone(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        hourly = http.get("/v1/stats", params={"since": since.isoformat(), "until": zulu, "bucket": "1h"}).json()
        assert hourly["bucket_seconds"] == 3600 and [b["count"] for b in hourly["timeline"]] == [len(WRITTEN)]
        # Nothing in an old window: every bucket is there, with zero.
        old = http.get("/v1/stats", params={"since": "2020-01-01T00:00:00Z", "until": "2020-01-01T00:05:00Z"}).json()
        assert [b["count"] for b in old["timeline"]] == [0] * 5 and old["by_type"] == [] and old["total"] == 0


def test_the_client_gets_the_same_stats(store: str, served: str) -> None:
    with meshlog.connect(store) as log:
        for kind, agent in WRITTEN:
            log.emit(kind, agent_id=agent)
        direct = log.stats(bucket=timedelta(minutes=5))
    with meshlog.connect(served) as remote:
        over_http = remote.stats(since=direct.since, until=direct.until, bucket=timedelta(minutes=5))
    assert over_http == direct


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-01T00:00:00"}, "since"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-09T00:00:00Z"}, "since"),
        ({"bucket": "0"}, "bucket"),
        ({"bucket": "-60"}, "bucket"),
        ({"bucket": "1.5"}, "bucket"),
        ({"bucket": "5 minutes"}, "bucket"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T03:00:00Z", "bucket": "1s"}, "bucket"),
    ],
)
def test_bad_stats_parameters_are_422_problems(served: str, params: dict[str, str], field: str) -> None:
    with httpx.Client(base_url=served) as http:
        body = _problem(http.get("/v1/stats", params=params), 422, "validation")
        assert body["field"] == field


@pytest.mark.parametrize("limit", ["0", "5001", "-1", "many"])
def test_bad_span_limits_are_422_problems(served: str, limit: str) -> None:
    with httpx.Client(base_url=served) as http:
        body = _problem(http.get("/v1/traces/any/spans", params={"limit": limit}), 422, "validation")
        assert body["field"] == "limit"


# -- spans ----------------------------------------------------------------------------------------------------------
def test_spans_of_the_demo_run(store: str, served: str) -> None:
    with meshlog.connect(store) as log:
        summary = write_demo(log)
    with httpx.Client(base_url=served) as http:
        answer = http.get(f"/v1/traces/{summary.trace_id}/spans")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == SPANS_FIELDS
        assert (body["trace_id"], body["event_count"], body["truncated"]) == (
            summary.trace_id,
            summary.events_written,
            False,
        )
        spans = body["spans"]
        assert body["start"] == spans[0]["start"] and spans[0]["offset_ms"] == 0
        pairs = sum(1 for e in summary.events if e.type in ("llm.call", "tool.call"))
        assert len(spans) == summary.events_written - pairs
        llm = [s for s in spans if s["kind"] == "llm"]
        assert len(llm) == summary.llm_calls and sum(s["total_tokens"] or 0 for s in llm) == summary.llm_tokens
        assert [s["status"] for s in llm].count("error") == 1
        ids = {s["id"] for s in spans}
        assert all(s["parent_span_id"] in ids for s in spans if s["parent_span_id"] is not None)
        assert [(s["start"], s["position"]) for s in spans] == sorted((s["start"], s["position"]) for s in spans)

        first = http.get(f"/v1/traces/{summary.trace_id}/spans", params={"limit": "3"}).json()
        assert (first["event_count"], first["truncated"]) == (3, True)
        assert [s["id"] for s in first["spans"]] == [e.id for e in summary.events[:2]]
        assert first["spans"][1]["status"] == "ok"  # the plan's call and its response, then nothing more
        exact = http.get(f"/v1/traces/{summary.trace_id}/spans", params={"limit": str(summary.events_written)})
        assert exact.json()["truncated"] is False

        _problem(http.get("/v1/traces/no-such-trace/spans"), 404, "not-found")


def test_many_events_are_read_page_by_page_up_to_the_limit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'long.db'}?synchronous=normal"
    with meshlog.connect(url) as log:
        for _ in range(5):
            log.emit_batch([meshlog.NewEvent(type="task.progress", data={"i": i}, trace_id="long") for i in range(500)])
    with running_app(create_app(url)) as base_url, httpx.Client(base_url=base_url) as http:
        full = http.get("/v1/traces/long/spans").json()
        assert (full["event_count"], full["truncated"], len(full["spans"])) == (2500, False, 2500)
        assert [s["position"] for s in full["spans"]] == sorted(s["position"] for s in full["spans"])
        part = http.get("/v1/traces/long/spans", params={"limit": "1200"}).json()
        assert (part["event_count"], part["truncated"], len(part["spans"])) == (1200, True, 1200)


# -- auth -----------------------------------------------------------------------------------------------------------
@dataclass
class Tokens:
    base_url: str
    reader_a: str
    writer_b: str
    trace_a: str


@pytest.fixture
def tokens(store: str) -> Iterator[Tokens]:
    with meshlog.connect(store) as log:
        a, b = log.for_tenant("tenant-a"), log.for_tenant("tenant-b")
        reader_a, _ = a.create_token("read")
        writer_b, _ = b.create_token("write")
        a.emit("llm.error", agent_id="secret-agent", trace_id="trace-a")
        a.emit("x", agent_id="secret-agent", trace_id="trace-a")
        b.emit("y", agent_id="mine", trace_id="trace-b")
    with running_app(create_app(store, token_cache_ttl=0)) as base_url:
        yield Tokens(base_url, reader_a, writer_b, "trace-a")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_api_needs_a_token_and_stays_in_the_tenant(tokens: Tokens) -> None:
    with httpx.Client(base_url=tokens.base_url) as http:
        _problem(http.get("/v1/stats"), 401, "unauthorized")
        _problem(http.get(f"/v1/traces/{tokens.trace_a}/spans"), 401, "unauthorized")
        _problem(http.get("/v1/stats", params={"bucket": "0"}), 401, "unauthorized")  # the token comes first
        _problem(http.get("/v1/traces/x/spans", params={"limit": "0"}), 401, "unauthorized")
        _problem(http.get("/v1/stats", headers=_auth(tokens.reader_a[:-2] + "zz")), 401, "unauthorized")
        mine = http.get("/v1/stats", headers=_auth(tokens.reader_a)).json()
        assert (mine["total"], mine["failures"]) == (2, 1)
        assert mine["by_agent"] == [{"agent_id": "secret-agent", "count": 2}]
        theirs = http.get("/v1/stats", headers=_auth(tokens.writer_b)).json()
        assert (theirs["total"], theirs["failures"], theirs["by_type"]) == (1, 0, [{"type": "y", "count": 1}])
        spans = http.get(f"/v1/traces/{tokens.trace_a}/spans", headers=_auth(tokens.reader_a)).json()
        assert [s["type"] for s in spans["spans"]] == ["llm.error", "x"]
        _problem(http.get(f"/v1/traces/{tokens.trace_a}/spans", headers=_auth(tokens.writer_b)), 404, "not-found")
        # The explorer's page and files hold no data: no token needed.
        assert http.get("/").status_code == 200
        assert http.get("/ui/index.html").status_code == 200


# -- the UI ---------------------------------------------------------------------------------------------------------
def _csp(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'" and directives["connect-src"] == "'self'"
    assert directives["img-src"] == "'self' data:" and directives["object-src"] == "'none'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    return directives


def test_the_page_and_its_files_are_served_with_a_content_security_policy(served: str) -> None:
    with httpx.Client(base_url=served) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.text == (UI_DIRECTORY / "index.html").read_text(encoding="utf-8")
        _csp(page)
        assert http.head("/").status_code == 200
        for path in sorted(UI_DIRECTORY.rglob("*")):
            if path.is_file():
                served_file = http.get(f"/ui/{path.relative_to(UI_DIRECTORY).as_posix()}")
                assert served_file.status_code == 200 and served_file.content == path.read_bytes()
                _csp(served_file)
        _problem(http.get("/ui/no-such-file.js"), 404, "not-found")
        _problem(http.get("/ui/../explorer.py"), 404, "not-found")
        _problem(http.post("/", content=b"x"), 405, "method-not-allowed")


def test_without_the_ui_only_the_api_is_served(tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'api.db'}", ui=False)
    with running_app(app) as base_url, httpx.Client(base_url=base_url) as http:
        _problem(http.get("/"), 404, "not-found")
        _problem(http.get("/ui/index.html"), 404, "not-found")
        assert http.get("/v1/stats").status_code == 200


def test_serve_has_no_ui_option() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0 and "--no-ui" in result.output


@pytest.mark.slow
def test_the_wheel_ships_the_ui(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        timeout=600,
    )
    (wheel,) = glob.glob(str(tmp_path / "meshlog-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    files = [p for p in UI_DIRECTORY.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert f"meshlog/server/ui/{path.relative_to(UI_DIRECTORY).as_posix()}" in names
    assert "meshlog/server/explorer.py" in names
