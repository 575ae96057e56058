"""The event explorer's API and page over HTTP: ``GET /v1/stats``, ``GET /v1/traces``,
``GET /v1/traces/{trace_id}/spans``, ``/`` and ``/ui/``, on a real server in front of SQLite and PostgreSQL (there as
an ordinary role, under row-level security)."""

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
TRACE_FIELDS = {"trace_id", "started", "last", "events", "agents", "llm_calls", "tokens", "failures"}


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


# -- traces ---------------------------------------------------------------------------------------------------------
def test_traces_are_what_was_written(store: str, served: str) -> None:
    traces = ["plan", "build", "plan", "build", "build", "deploy", "build", None, "plan"]
    with meshlog.connect(store) as log:
        events = [
            log.emit(kind, {"i": i}, agent_id=agent, trace_id=trace)
            for i, ((kind, agent), trace) in enumerate(zip(WRITTEN, traces, strict=True))
        ]
        log.for_tenant("elsewhere").emit("llm.error", agent_id="coder", trace_id="build")
    since = events[0].recorded_at - timedelta(seconds=30)
    until = events[-1].recorded_at + timedelta(seconds=30)
    window = {"since": since.isoformat(), "until": until.isoformat()}
    with httpx.Client(base_url=served) as http:
        answer = http.get("/v1/traces", params=window)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {"since", "until", "traces"}
        assert (_when(body["since"]), _when(body["until"])) == (since, until)
        assert all(set(t) == TRACE_FIELDS for t in body["traces"])
        # The last active first: plan (its last event is the last written), build, deploy.
        assert [t["trace_id"] for t in body["traces"]] == ["plan", "build", "deploy"]
        plan, build, _ = body["traces"]
        figures = [(t["events"], t["agents"], t["llm_calls"], t["failures"]) for t in body["traces"]]
        assert figures == [(3, ["coder", "tester"], 2, 0), (4, ["coder", "tester"], 0, 2), (1, [], 0, 1)]
        for summary in body["traces"]:
            mine = [e for e in events if e.trace_id == summary["trace_id"]]
            assert _when(summary["started"]) == min(e.recorded_at for e in mine)
            assert _when(summary["last"]) == max(e.recorded_at for e in mine)
        # An agent's traces, a limit, the default window and an old one.
        tester = http.get("/v1/traces", params={**window, "agent_id": "tester"}).json()
        assert tester["traces"] == [plan, build]
        assert http.get("/v1/traces", params={**window, "agent_id": "nobody"}).json()["traces"] == []
        assert http.get("/v1/traces", params={**window, "agent_id": ""}).json()["traces"] == body["traces"]
        assert http.get("/v1/traces", params={**window, "limit": "2"}).json()["traces"] == body["traces"][:2]
        default = http.get("/v1/traces").json()
        assert default["traces"] == body["traces"]
        assert _when(default["until"]) - _when(default["since"]) == timedelta(hours=1)
        old = http.get("/v1/traces", params={"since": "2020-01-01T00:00:00Z", "until": "2020-01-08T00:00:00Z"})
        assert old.json()["traces"] == []


def test_the_client_gets_the_same_traces(store: str, served: str) -> None:
    with meshlog.connect(store) as log:
        for i, (kind, agent) in enumerate(WRITTEN):
            log.emit(kind, agent_id=agent, trace_id=f"t-{i % 4}")
        direct = log.traces()
        assert len(direct) == 4
    with meshlog.connect(served) as remote:
        assert remote.traces() == direct
        assert remote.traces(agent_id="tester", limit=1) == [t for t in direct if "tester" in t.agents][:1]


def test_get_and_post_share_the_traces_path(tmp_path: Path) -> None:
    """GET /v1/traces lists traces; POST /v1/traces stays the OTLP receiver; the OpenAPI document has both."""
    url = f"sqlite:///{tmp_path / 'both.db'}"
    with running_app(create_app(url)) as base_url, httpx.Client(base_url=base_url) as http:
        received = http.post("/v1/traces", json={"resourceSpans": []})
        assert received.status_code == 200 and received.json() == {}
        assert http.get("/v1/traces").json()["traces"] == []
        operations = http.get("/openapi.json").json()["paths"]["/v1/traces"]
        assert set(operations) == {"get", "post"}
        assert "limit" in {p["name"] for p in operations["get"]["parameters"]}
    app = create_app(url, otlp=False)
    with running_app(app) as base_url, httpx.Client(base_url=base_url) as http:
        assert http.get("/v1/traces").status_code == 200
        _problem(http.post("/v1/traces", json={"resourceSpans": []}), 405, "method-not-allowed")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-01T00:00:00"}, "since"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-09T00:00:00Z"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"agent_id": "a\x00b"}, "agent_id"),
    ],
)
def test_bad_traces_parameters_are_422_problems(served: str, params: dict[str, str], field: str) -> None:
    with httpx.Client(base_url=served) as http:
        body = _problem(http.get("/v1/traces", params=params), 422, "validation")
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

        # The list of traces sums the run up as its waterfall does.
        (listed,) = http.get("/v1/traces").json()["traces"]
        assert (listed["trace_id"], listed["events"], listed["llm_calls"], listed["tokens"]) == (
            summary.trace_id,
            body["event_count"],
            len(llm),
            sum(s["total_tokens"] or 0 for s in llm),
        )
        assert listed["failures"] == 2 and listed["agents"] == sorted(summary.agents)


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
        _problem(http.get("/v1/traces"), 401, "unauthorized")
        _problem(http.get("/v1/traces", params={"limit": "0"}), 401, "unauthorized")
        _problem(http.get("/v1/stats", params={"bucket": "0"}), 401, "unauthorized")  # the token comes first
        _problem(http.get("/v1/traces/x/spans", params={"limit": "0"}), 401, "unauthorized")
        _problem(http.get("/v1/stats", headers=_auth(tokens.reader_a[:-2] + "zz")), 401, "unauthorized")
        mine = http.get("/v1/stats", headers=_auth(tokens.reader_a)).json()
        assert (mine["total"], mine["failures"]) == (2, 1)
        assert mine["by_agent"] == [{"agent_id": "secret-agent", "count": 2}]
        theirs = http.get("/v1/stats", headers=_auth(tokens.writer_b)).json()
        assert (theirs["total"], theirs["failures"], theirs["by_type"]) == (1, 0, [{"type": "y", "count": 1}])
        traces = http.get("/v1/traces", headers=_auth(tokens.reader_a)).json()["traces"]
        assert [(t["trace_id"], t["events"], t["agents"], t["failures"]) for t in traces] == [
            ("trace-a", 2, ["secret-agent"], 1)
        ]
        theirs_traces = http.get("/v1/traces", headers=_auth(tokens.writer_b)).json()["traces"]
        assert [(t["trace_id"], t["agents"]) for t in theirs_traces] == [("trace-b", ["mine"])]
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
