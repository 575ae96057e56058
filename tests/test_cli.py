"""The ``meshlog`` command, run through click's CliRunner against real SQLite files (and once as a process)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner, Result

import meshlog
from meshlog.cli import main
from server_helpers import free_port

COMMANDS = (
    "migrate",
    "demo",
    "emit",
    "query",
    "replay",
    "streams",
    "tail",
    "types",
    "resume",
    "narrative",
    "spool",
    "token",
    "serve",
    "retention",
    "archive",
    "ingest",
    "instances",
    "mcp",
)
URL_VARIABLES = ("MESHLOG_URL", "DATABASE_URL", "PG_PRIMARY_URL", "MESHLOG_TENANT")
DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


@pytest.fixture(autouse=True)
def _no_store_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in URL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
def url(db: Path) -> str:
    return f"sqlite:///{db}"


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


def ok(*args: str, input: str | None = None) -> Result:
    result = run(*args, input=input)
    assert result.exit_code == 0, (result.exit_code, result.output)
    assert result.stderr == ""
    return result


def ok_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def read_all(url: str) -> list[meshlog.RecordedEvent]:
    with meshlog.connect(url) as log:
        return log.query(limit=1000).events


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def five(url: str) -> list[dict[str, Any]]:
    """Five events in two tasks, by two agents, written through the CLI."""
    events = []
    for i, (type_, task, agent) in enumerate(
        [
            ("task.dispatched", "1", "orchestrator"),
            ("llm.call", "1", "api-coder"),
            ("llm.response", "1", "api-coder"),
            ("task.dispatched", "2", "orchestrator"),
            ("task.result", "1", "api-coder"),
        ]
    ):
        data = json.dumps({"n": i, "note": "Timeout reached" if i == 2 else "fine"})
        events.append(
            ok_json("--url", url, "emit", type_, data, "--task-id", task, "--agent-id", agent, "--trace-id", "t-1")
        )
    return events


# -- the group ----------------------------------------------------------------------------------------------------
def test_version() -> None:
    assert ok("--version").stdout == f"meshlog {meshlog.__version__}\n"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_help_ends_with_an_example(command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    text = ok(*args).stdout
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    examples = lines.index("Examples:")
    assert examples > 0
    assert lines[examples + 1 :], text
    assert all("meshlog " in line for line in lines[examples + 1 :]), text
    if command is not None:
        assert any(line.startswith(f"meshlog {command}") or f" {command}" in line for line in lines[examples + 1 :])


def test_url_help_names_the_fallback_order() -> None:
    text = " ".join(ok("--help").stdout.split())
    assert "$MESHLOG_URL, else $DATABASE_URL, else $PG_PRIMARY_URL, else sqlite:///./meshlog.db" in text


def test_docs_show_every_commands_help() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for command in (None, *COMMANDS):
        args = ["--help"] if command is None else [command, "--help"]
        result = CliRunner().invoke(main, args, prog_name="meshlog", terminal_width=80, catch_exceptions=False)
        assert result.exit_code == 0
        assert result.stdout.strip() in docs, f"docs/cli.md lacks the help of {command or 'meshlog'}"


# -- migrate ------------------------------------------------------------------------------------------------------
def test_migrate_creates_the_store_and_can_run_again(url: str, db: Path) -> None:
    assert not db.exists()
    assert ok("--url", url, "migrate").stdout == f"{url} migrated\n"
    assert db.exists()
    assert ok("--url", url, "migrate").stdout == f"{url} migrated\n"
    with meshlog.connect(url, migrate=False) as log:
        assert log.head_position() == 0


def test_url_comes_from_meshlog_url(url: str, db: Path) -> None:
    result = run("migrate", env={"MESHLOG_URL": url})
    assert result.exit_code == 0
    assert result.stdout == f"{url} migrated\n"
    assert db.exists()


# -- emit ---------------------------------------------------------------------------------------------------------
def test_emit_prints_the_recorded_event(url: str) -> None:
    text = ok(
        "--url", url, "emit", "task.dispatched", '{"capability": "code"}', "--task-id", "42", "--agent-id", "orch"
    ).stdout
    (event,) = read_all(url)
    assert text.splitlines()[0] == "recorded task.dispatched at position 1"
    assert f"id        {event.id}" in text
    assert "stream    task:42 (version 1)" in text
    assert "agent     orch" in text
    assert 'data      {"capability":"code"}' in text
    assert event.data == {"capability": "code"}
    assert (event.stream, event.task_id, event.agent_id) == ("task:42", "42", "orch")


def test_emit_json_with_every_option(url: str) -> None:
    parent = ok_json("--url", url, "emit", "user.request", '{"request": "Add rate limiting"}', "--trace-id", "t-9")
    child = ok_json(
        "--url",
        url,
        "emit",
        "llm.call",
        '{"model": "gpt-4o", "tokens": 12}',
        "--stream",
        "custom:1",
        "--trace-id",
        "t-9",
        "--task-id",
        "7",
        "--agent-id",
        "api-coder",
        "--parent-id",
        parent["id"],
        "--idempotency-key",
        "call-1",
    )
    assert parent["stream"] == "trace:t-9"
    assert child["stream"] == "custom:1"
    assert child["data"] == {"model": "gpt-4o", "tokens": 12}
    assert (child["trace_id"], child["task_id"], child["agent_id"]) == ("t-9", "7", "api-coder")
    assert child["parent_id"] == parent["id"]
    assert child["root_id"] == parent["id"]
    assert child["depth"] == 1
    assert child["idempotency_key"] == "call-1"
    assert child["position"] == 2
    stored = {e.id: e.to_dict() for e in read_all(url)}
    assert stored[child["id"]] == child


def test_emit_idempotency_key_writes_once(url: str) -> None:
    args = ("--url", url, "emit", "llm.call", '{"model": "gpt-4o"}', "--task-id", "1", "--idempotency-key", "k1")
    first, again = ok_json(*args), ok_json(*args)
    assert first == again
    assert len(read_all(url)) == 1


def test_emit_data_defaults_to_empty_and_reads_stdin(url: str) -> None:
    assert ok_json("--url", url, "emit", "heartbeat")["data"] == {}
    result = ok("--url", url, "emit", "job.finished", "-", "--agent-id", "cron", "--json", input='{"exit_code": 0}')
    event = json.loads(result.stdout)
    assert event["data"] == {"exit_code": 0}
    assert event["stream"] == "agent:cron"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ("{bad json", "not valid JSON"),
        ('{"a": 1,}', "not valid JSON"),
        ('{"x": NaN}', "NaN is not a JSON number"),
        ("[1, 2]", 'must be a JSON object such as {"key": "value"}, got a JSON array'),
        ('"text"', "got a JSON string"),
        ("null", "got a JSON null"),
        ("", "not valid JSON"),
    ],
)
def test_emit_bad_json_is_a_clear_error_and_writes_nothing(url: str, db: Path, data: str, needle: str) -> None:
    assert_one_line_error(run("--url", url, "emit", "x.y", data), 2, needle)
    assert not db.exists()  # refused before the store was even opened
    ok("--url", url, "migrate")
    assert_one_line_error(run("--url", url, "emit", "x.y", data), 2, needle)
    assert read_all(url) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["bad type!", "{}"], "ValidationError: type must match"),
        (["ok.type", "{}", "--parent-id", "not-a-uuid"], "ValidationError: parent_id must be a UUID"),
        (["ok.type", '{"a": "nul\\u0000"}'], "ValidationError: data.a contains a NUL character"),
    ],
)
def test_emit_invalid_event_exits_2_and_writes_nothing(url: str, args: list[str], needle: str) -> None:
    ok("--url", url, "emit", "first", "{}")
    assert_one_line_error(run("--url", url, "emit", *args), 2, needle)
    assert [e.type for e in read_all(url)] == ["first"]


def test_emit_idempotency_conflict_exits_1(url: str) -> None:
    ok("--url", url, "emit", "llm.call", '{"model": "a"}', "--idempotency-key", "k")
    result = run("--url", url, "emit", "llm.call", '{"model": "b"}', "--idempotency-key", "k")
    assert_one_line_error(result, 1, "IdempotencyConflict: idempotency key 'k'")
    assert len(read_all(url)) == 1


@pytest.mark.parametrize(
    ("store", "needle"),
    [
        ("foo://x", "ConfigurationError: unknown store scheme 'foo'"),
        ("sqlite:///", "ConfigurationError: SQLite URLs look like"),
        ("sqlite:////no/such/dir/events.db", "StoreUnavailable: cannot open SQLite database"),
    ],
)
def test_store_errors_exit_1_with_one_line(store: str, needle: str) -> None:
    assert_one_line_error(run("--url", store, "emit", "x", "{}"), 1, needle)
    assert_one_line_error(run("--url", store, "streams"), 1, needle)


def test_usage_errors_exit_2() -> None:
    result = run("query", "--order", "sideways")
    assert result.exit_code == 2
    assert "Invalid value for '--order'" in result.stderr
    result = run("query", "--since", "yesterday")
    assert result.exit_code == 2
    assert "neither an ISO 8601 timestamp" in result.stderr


def test_tenants_are_separate(url: str) -> None:
    ok("--url", url, "--tenant", "acme", "emit", "x", '{"who": "acme"}')
    assert ok_json("--url", url, "--tenant", "other", "query")["events"] == []
    (event,) = ok_json("--url", url, "--tenant", "acme", "query")["events"]
    assert (event["tenant"], event["data"]) == ("acme", {"who": "acme"})
    result = run("query", "--json", env={"MESHLOG_URL": url, "MESHLOG_TENANT": "acme"})
    assert [e["tenant"] for e in json.loads(result.stdout)["events"]] == ["acme"]


# -- query --------------------------------------------------------------------------------------------------------
def test_query_desc_limit_3_returns_the_last_3(url: str, five: list[dict[str, Any]]) -> None:
    page = ok_json("--url", url, "query", "--order", "desc", "--limit", "3")
    assert [e["position"] for e in page["events"]] == [5, 4, 3]
    assert [e["id"] for e in page["events"]] == [e["id"] for e in reversed(five[2:])]
    assert page["has_more"] is True
    rest = ok_json("--url", url, "query", "--cursor", page["next_cursor"])
    assert [e["position"] for e in rest["events"]] == [2, 1]
    assert rest["has_more"] is False
    assert rest["next_cursor"] is None


def test_query_table(url: str, five: list[dict[str, Any]]) -> None:
    lines = ok("--url", url, "query", "--order", "desc", "--limit", "3").stdout.splitlines()
    assert lines[0].split() == ["position", "recorded_at", "stream", "type", "agent", "data"]
    assert set(lines[1]) == {"-", " "}
    rows = [line.split() for line in lines[2:5]]
    assert [row[0] for row in rows] == ["5", "4", "3"]
    assert [row[2:5] for row in rows] == [
        ["task:1", "task.result", "api-coder"],
        ["task:2", "task.dispatched", "orchestrator"],
        ["task:1", "llm.response", "api-coder"],
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rows[0][1])
    assert rows[0][5] == '{"n":4,"note":"fine"}'
    cursor = ok_json("--url", url, "query", "--order", "desc", "--limit", "3")["next_cursor"]
    assert lines[5] == f"3 events; more match, next page: --cursor {cursor}"
    assert ok("--url", url, "query", "--task-id", "nope").stdout == "no events match\n"


def test_query_filters(url: str, five: list[dict[str, Any]]) -> None:
    def positions(*args: str) -> list[int]:
        return [e["position"] for e in ok_json("--url", url, "query", *args)["events"]]

    assert positions() == [1, 2, 3, 4, 5]
    assert positions("--type", "task.dispatched") == [1, 4]
    assert positions("--type", "task.dispatched", "--type", "task.result") == [1, 4, 5]
    assert positions("--task-id", "2") == [4]
    assert positions("--stream", "task:1") == [1, 2, 3, 5]
    assert positions("--agent-id", "api-coder") == [2, 3, 5]
    assert positions("--trace-id", "t-1", "--agent-id", "orchestrator") == [1, 4]
    assert positions("--trace-id", "t-2") == []
    assert positions("--text", "timeout") == [3]
    assert positions("--since", "1h") == [1, 2, 3, 4, 5]
    assert positions("--since", "2999-01-01") == []
    assert positions("--until", "2000-01-01T00:00:00+02:00") == []
    assert positions("--until", "2999-01-01T00:00:00Z") == [1, 2, 3, 4, 5]
    recorded = five[2]["recorded_at"]
    assert positions("--since", recorded) == [3, 4, 5]
    assert positions("--until", recorded) == [1, 2]


def test_query_bad_cursor_exits_2(url: str) -> None:
    assert_one_line_error(run("--url", url, "query", "--cursor", "garbage"), 2, "InvalidCursor")


# -- replay -------------------------------------------------------------------------------------------------------
def test_replay_counts_events_by_type(url: str, five: list[dict[str, Any]]) -> None:
    result = ok_json("--url", url, "replay", "task:1")
    assert result["stream"] == "task:1"
    assert result["state"] == {"task.dispatched": 1, "llm.call": 1, "llm.response": 1, "task.result": 1}
    assert list(result["state"]) == ["task.dispatched", "llm.call", "llm.response", "task.result"]
    assert (result["events_replayed"], result["last_version"]) == (4, 4)
    assert result["duration_ms"] >= 0

    partial = ok_json("--url", url, "replay", "task:1", "--to-version", "2")
    assert partial["state"] == {"task.dispatched": 1, "llm.call": 1}
    assert (partial["events_replayed"], partial["last_version"]) == (2, 2)

    text = ok("--url", url, "replay", "task:1").stdout
    assert "events_replayed  4" in text
    assert "last_version     4" in text
    assert re.search(r"duration_ms      \d+\.\d\d", text)
    counts = dict(line.split() for line in text.splitlines()[-4:])
    assert counts == {"task.dispatched": "1", "llm.call": "1", "llm.response": "1", "task.result": "1"}


def test_replay_of_an_unknown_stream(url: str) -> None:
    assert ok_json("--url", url, "replay", "task:none")["events_replayed"] == 0
    assert "stream 'task:none' has no events" in ok("--url", url, "replay", "task:none").stdout


# -- streams ------------------------------------------------------------------------------------------------------
def test_streams(url: str, five: list[dict[str, Any]]) -> None:
    ok("--url", url, "emit", "note", "{}", "--agent-id", "solo")
    listed = ok_json("--url", url, "streams")
    assert [(s["stream"], s["version"], s["last_position"]) for s in listed] == [
        ("agent:solo", 1, 6),
        ("task:1", 4, 5),
        ("task:2", 1, 4),
    ]
    assert [s["stream"] for s in ok_json("--url", url, "streams", "--prefix", "task:")] == ["task:1", "task:2"]
    assert [s["stream"] for s in ok_json("--url", url, "streams", "--after", "task:1")] == ["task:2"]

    lines = ok("--url", url, "streams", "--limit", "2").stdout.splitlines()
    assert lines[0].split() == ["stream", "version", "last_position", "updated_at"]
    assert [line.split()[:3] for line in lines[2:4]] == [["agent:solo", "1", "6"], ["task:1", "4", "5"]]
    assert lines[4] == "2 streams; more may exist, next page: --after task:1"


# -- demo ---------------------------------------------------------------------------------------------------------
def test_demo_writes_a_run_and_shows_it(url: str) -> None:
    text = ok("demo", "--no-serve", "--url", url).stdout
    events = read_all(url)
    assert len(events) == 40
    trace = events[0].trace_id
    assert trace is not None
    assert {e.trace_id for e in events} == {trace}
    for heading in (
        'meshlog demo: "Add rate limiting to the API"',
        "The last 10 events of test-runner",
        f"Every failure in trace {trace}",
        f"Replay of task:{trace.removeprefix('run-')}-test",
        "The run's streams",
        "Totals",
    ):
        assert heading in text
    assert "events in trace  40" in text
    assert "LLM tokens       11,820" in text
    assert "status      succeeded" in text
    assert "attempts    2" in text
    failure_lines = [line for line in text.splitlines() if "timeout" in line and "test-runner" in line]
    assert len(failure_lines) == 2


def test_demo_twice_writes_two_runs(url: str) -> None:
    ok("demo", "--no-serve", "--url", url)
    ok("--url", url, "demo", "--no-serve")  # the group's --url counts too
    events = read_all(url)
    assert len(events) == 80
    assert len({e.trace_id for e in events}) == 2
    assert len(ok_json("--url", url, "query", "--type", "task.retry")["events"]) == 2


def test_demo_default_store_ignores_meshlog_url(
    tmp_path: Path, url: str, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = run("demo", "--no-serve", env={"MESHLOG_URL": url})
    assert result.exit_code == 0, result.output
    assert "store    sqlite:///meshlog-demo.db" in result.stdout
    assert len(read_all("sqlite:///meshlog-demo.db")) == 40
    assert (cwd / "meshlog-demo.db").exists()
    assert not db.exists()


# -- the installed console script ---------------------------------------------------------------------------------
@pytest.fixture
def script() -> Path:
    path = Path(sys.executable).parent / ("meshlog.exe" if os.name == "nt" else "meshlog")
    if not path.exists():
        pytest.fail(f"the meshlog console script is not installed next to {sys.executable}")
    return path


def test_console_script_runs_demo_twice_like_make_demo(script: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in URL_VARIABLES}
    for _ in range(2):
        done = subprocess.run(
            [script, "demo", "--no-serve", "--url", "sqlite:///meshlog-demo.db"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        assert "Replay of task:" in done.stdout
    assert (tmp_path / "meshlog-demo.db").exists()
    done = subprocess.run(
        [script, "--url", "sqlite:///meshlog-demo.db", "query", "--type", "task.retry", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    retries = json.loads(done.stdout)["events"]
    assert [e["data"]["attempt"] for e in retries] == [2, 2]
    bad = subprocess.run(
        [script, "--url", "sqlite:///meshlog-demo.db", "emit", "x", "{nope"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("Error: JSON argument is not valid JSON")
    assert "Traceback" not in bad.stderr


def test_cli_module_has_no_hidden_click_commands() -> None:
    assert isinstance(main, click.Group)
    assert sorted(main.commands) == sorted(COMMANDS)


def test_demo_then_serves_the_store_it_wrote(script: Path, tmp_path: Path) -> None:
    """``make demo``: write the sample run, show it, then serve it and say where."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in URL_VARIABLES} | {"PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [script, "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line)
            if "serving the demo store at" in line:
                break
        assert f"http://127.0.0.1:{port}" in lines[-1], "".join(lines)
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1/events", params={"limit": 100}, timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "the demo server did not start"
                time.sleep(0.1)
        assert answer.status_code == 200 and len(answer.json()["events"]) == 40
    finally:
        process.terminate()
        process.wait(timeout=20)
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
