"""The live and meaning commands of ``meshlog`` (tail, types, resume, narrative), ``emit --never-fail`` and the
spool commands: click's CliRunner over real SQLite files, a real meshlog server (uvicorn) for the http:// cases,
and real processes where a command must run until it is interrupted."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import meshlog
from meshlog.cli import main
from meshlog.spool import Spool
from server_helpers import free_port, running_server

URL_VARIABLES = ("MESHLOG_URL", "DATABASE_URL", "PG_PRIMARY_URL", "MESHLOG_TENANT", "MESHLOG_SPOOL")
DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
SUBCOMMANDS = (
    ("spool", "status"),
    ("spool", "flush"),
    ("token", "create"),
    ("token", "list"),
    ("token", "revoke"),
    ("instances", "register"),
    ("instances", "heartbeat"),
    ("instances", "close"),
)


@pytest.fixture(autouse=True)
def _no_store_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in URL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "spool" / "spool.db"


@pytest.fixture
def down() -> str:
    """The URL of a meshlog server that is not running (nothing listens on the port; no retries)."""
    return f"http://127.0.0.1:{free_port()}?retries=0"


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, (result.exit_code, result.output)
    assert result.stderr == ""
    return result


def ok_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for needle in needles:
        assert needle in lines[0]


def emit(url: str, n: int, *, type: str = "step", **fields: Any) -> meshlog.RecordedEvent:
    with meshlog.connect(url) as log:
        return log.emit(type, {"n": n}, **fields)


@pytest.fixture
def twelve(url: str) -> list[meshlog.RecordedEvent]:
    """Twelve events: even ones by agent a in task 1 (type step), odd ones by agent b in task 2 (type other)."""
    return [
        emit(
            url,
            i,
            type="step" if i % 2 == 0 else "other",
            task_id="1" if i % 2 == 0 else "2",
            agent_id="a" if i % 2 == 0 else "b",
            trace_id="t-1",
        )
        for i in range(12)
    ]


# -- help and docs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("words", SUBCOMMANDS, ids=" ".join)
def test_subcommand_help_is_in_the_docs_and_ends_with_examples(words: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*words, "--help"], prog_name="meshlog", terminal_width=80)
    assert result.exit_code == 0
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    examples = lines[lines.index("Examples:") + 1 :]
    assert examples
    assert all(line.startswith("meshlog " + " ".join(words)) for line in examples)
    assert result.stdout.strip() in DOCS.read_text(encoding="utf-8")


def test_docs_show_a_tail_never_fail_and_spool_session() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for needle in ("$ meshlog tail -f", "--never-fail", "$ meshlog spool status", "$ meshlog spool flush"):
        assert needle in docs


# -- tail ----------------------------------------------------------------------------------------------------------
def test_tail_prints_the_last_10_oldest_first(url: str, twelve: list[meshlog.RecordedEvent]) -> None:
    lines = ok("--url", url, "tail").stdout.splitlines()
    assert [int(line.split()[0]) for line in lines] == [e.position for e in twelve[2:]]
    first = lines[0].strip().split("  ")
    assert first == [
        str(twelve[2].position),
        meshlog.cli.format_time(twelve[2].recorded_at),
        "task:1",
        "step",
        "a",
        '{"n":2}',
    ]


def test_tail_lines_and_filters(url: str, twelve: list[meshlog.RecordedEvent]) -> None:
    def positions(*args: str) -> list[int]:
        return [e["position"] for e in json_lines(ok("--url", url, "tail", "--json", *args).stdout)]

    assert positions("-n", "3") == [10, 11, 12]
    assert positions("--lines", "3", "--type", "step") == [7, 9, 11]
    assert positions("-n", "2", "--agent-id", "b") == [10, 12]
    assert positions("-n", "2", "--task-id", "1") == [9, 11]
    assert positions("-n", "1", "--stream", "task:2") == [12]
    assert positions("--trace-id", "t-2") == []
    assert positions("-n", "0") == []
    assert positions("-n", "100") == list(range(1, 13))
    assert positions("--after-position", "9") == [10, 11, 12]
    assert positions("--after-position", "3", "--type", "other") == [4, 6, 8, 10, 12]
    assert positions("--after-position", "12") == []


def test_tail_json_lines_are_whole_events(url: str, twelve: list[meshlog.RecordedEvent]) -> None:
    events = json_lines(ok("--url", url, "tail", "-n", "2", "--json").stdout)
    assert events == [e.to_dict() for e in twelve[-2:]]


def test_tail_rejects_lines_with_after_position(url: str) -> None:
    assert_one_line_error(run("--url", url, "tail", "-n", "3", "--after-position", "1"), 2, "not both")
    assert run("--url", url, "tail", "-n", "1001").exit_code == 2


class Lines:
    """The lines of a process's stdout, read by a thread so that waiting for one can time out."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self._stream = process.stdout
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._stream:
            self._queue.put(line)
        self._queue.put("")  # end of output

    def next(self, timeout: float = 30.0) -> str:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no line from meshlog tail -f within {timeout} s") from None

    def rest(self) -> str:
        lines = []
        while (line := self.next()) != "":
            lines.append(line)
        return "".join(lines)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_tail_follow_in_a_process_shows_new_events_and_exits_0_on_ctrl_c(
    url: str, twelve: list[meshlog.RecordedEvent], as_json: bool
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in URL_VARIABLES}
    args = [sys.executable, "-m", "meshlog.cli", "--url", url, "tail", "-f", "-n", "1", "--type", "step"]
    with subprocess.Popen(
        [*args, *(["--json"] if as_json else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        lines = Lines(process)
        try:
            first = lines.next()
            emit(url, 100, type="other")  # filtered out
            written = emit(url, 101, type="step", agent_id="late")
            second = lines.next()
            if as_json:
                assert json.loads(first)["position"] == twelve[-2].position
                assert json.loads(second) == written.to_dict()
            else:
                assert first.split()[0] == str(twelve[-2].position)
                assert second.split()[:5:4] == [str(written.position), "late"]
                assert second.rstrip("\n").endswith('{"n":101}')
            process.send_signal(signal.SIGINT)  # Ctrl-C
            process.wait(timeout=30)
            out = lines.rest()
            assert process.stderr is not None
            err = process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, err
    assert out == ""  # the filtered-out event never showed up
    assert "Traceback" not in err
    assert err == ""


def test_main_module_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "meshlog.cli", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0
    assert done.stdout == f"meshlog {meshlog.__version__}\n"


# -- types ---------------------------------------------------------------------------------------------------------
def test_types_json_lists_every_builtin_catalogue() -> None:
    listed = ok_json("types")
    names = {t["type"] for t in listed}
    assert {"llm.call", "task.dispatched", "epic_completed", "deployment_started", "outcome.recorded"} <= names
    registry = meshlog.types.default_registry()
    assert len(listed) == len(registry.types()) + 1  # and meshlog's own outcome.recorded
    llm_call = next(t for t in listed if t["type"] == "llm.call")
    assert llm_call == registry.get("llm.call").to_dict()  # type: ignore[union-attr]
    assert set(llm_call) == {
        "type",
        "description",
        "category",
        "required_fields",
        "optional_fields",
        "version",
        "important",
    }


def test_types_catalogue_and_category_filter() -> None:
    session = {t["type"] for t in ok_json("types", "--catalogue", "session")}
    mesh = {t["type"] for t in ok_json("types", "--catalogue", "agent-mesh")}
    both = {t["type"] for t in ok_json("types", "--catalogue", "session", "--catalogue", "agent-mesh")}
    assert session != mesh
    assert both == session | mesh
    deployment = ok_json("types", "--category", "deployment")
    assert deployment
    assert {t["category"] for t in deployment} == {"deployment"}
    assert ok_json("types", "--category", "no-such-category") == []


def test_types_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    lines = ok("types", "--catalogue", "agent-mesh", "--category", "llm").stdout.splitlines()
    assert lines[0].split() == ["type", "category", "version", "required", "optional", "description"]
    rows = {line.split()[0]: line for line in lines[1:-1] if not line.startswith(" ")}  # not continuation lines
    assert "llm.call" in rows
    assert rows["llm.call"].split()[1:4] == ["llm", "1", "model"]
    assert lines[-1].startswith(f"{len(rows)} types")
    assert all(line == line.rstrip() for line in lines)
    assert ok("types", "--category", "none").stdout == "no event types of category 'none'\n"


def test_types_unknown_catalogue_exits_2(tmp_path: Path) -> None:
    assert_one_line_error(run("types", "--catalogue", "no-such"), 2, "ConfigurationError")
    assert not list(tmp_path.iterdir())


# -- resume and narrative ------------------------------------------------------------------------------------------
SESSION = "session:s-1"


@pytest.fixture
def session(url: str) -> None:
    with meshlog.connect(url) as log:
        log.emit("epic_started", {"epic_id": "epic-003"}, stream=SESSION, trace_id="t-9")
        log.emit("tests_run", {"passed": 5, "failed": 3}, stream=SESSION, trace_id="t-9")
        log.emit("prd_updated", {"epic_id": "epic-003"}, stream=SESSION, trace_id="t-9")
        log.emit("epic_completed", {"epic_id": "epic-003", "tests_passed": 5}, stream=SESSION, trace_id="t-9")


def test_resume_json_is_the_librarys(url: str, session: None) -> None:
    shown = ok_json("--url", url, "resume", SESSION)
    with meshlog.connect(url) as log:
        expected = log.resume(SESSION).to_dict()
    assert shown["suggestion"] == expected["suggestion"]
    assert shown["suggestion"]["rule"] == "epic_completed"
    assert "epic-003 is complete" in shown["suggestion"]["text"]
    assert shown["stream"] == SESSION
    assert shown["last_version"] == 4
    assert shown["state"]["epics"]["completed"] == ["epic-003"]


def test_resume_text(url: str, session: None) -> None:
    lines = ok("--url", url, "resume", SESSION).stdout.splitlines()
    assert lines[0].startswith("epic-003 is complete")
    text = "\n".join(lines)
    assert f"stream       {SESSION} (version 4)" in text
    assert "rule         epic_completed (priority 40)" in text
    assert "events       4" in text
    assert "epics        1 completed, 0 failed, open: -" in text


def test_resume_of_an_empty_stream(url: str) -> None:
    result = ok_json("--url", url, "resume", "session:none")
    assert result["last_version"] == 0
    assert result["suggestion"]["text"]


def test_narrative_prints_the_librarys_markdown(url: str, session: None) -> None:
    with meshlog.connect(url) as log:
        by_stream = log.narrative(stream=SESSION)
        by_trace = log.narrative(trace_id="t-9")
    assert ok("--url", url, "narrative", "--stream", SESSION).stdout == by_stream.rstrip("\n") + "\n"
    # the library's narrative says "N min ago": both calls ran within the same minute, or compare the heads
    shown = ok("--url", url, "narrative", "--trace-id", "t-9").stdout
    assert shown.startswith("# Trace t-9")
    assert shown.splitlines()[:3] == by_trace.splitlines()[:3]
    as_json = ok_json("--url", url, "narrative", "--stream", SESSION)
    assert (as_json["stream"], as_json["trace_id"]) == (SESSION, None)
    assert as_json["markdown"].startswith(f"# Stream {SESSION}")


@pytest.mark.parametrize("args", [[], ["--stream", "s", "--trace-id", "t"]], ids=["neither", "both"])
def test_narrative_needs_exactly_one_of_trace_and_stream(url: str, tmp_path: Path, args: list[str]) -> None:
    assert_one_line_error(run("--url", url, "narrative", *args), 2, "exactly one of --trace-id and --stream")
    assert not (tmp_path / "events.db").exists()


# -- emit --never-fail -----------------------------------------------------------------------------------------------
def test_never_fail_on_a_working_store_is_a_plain_emit(url: str) -> None:
    event = ok_json("--url", url, "emit", "x", '{"a": 1}', "--never-fail")
    assert event["data"] == {"a": 1}
    with meshlog.connect(url) as log:
        assert [e.id for e in log.query()] == [event["id"]]


@pytest.mark.parametrize(
    ("store", "needle"),
    [
        ("sqlite:////no/such/dir/events.db", "StoreUnavailable"),
        ("foo://x", "ConfigurationError: unknown store scheme"),
    ],
)
def test_never_fail_on_a_broken_local_store_warns_and_exits_0(store: str, needle: str, spool_path: Path) -> None:
    result = run("--url", store, "emit", "x", "{}", "--never-fail", "--spool", str(spool_path))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("Warning: ") and needle in line and "not recorded" in line
    assert not spool_path.exists()  # only http(s):// stores spool
    assert run("--url", store, "emit", "x", "{}").exit_code == 1  # without it, the usual error


@pytest.mark.parametrize(
    ("data", "code", "needle"),
    [("{nope", 2, "not valid JSON"), ('{"a": "nul\\u0000"}', 2, "ValidationError")],
)
def test_never_fail_still_rejects_invalid_input(url: str, down: str, data: str, code: int, needle: str) -> None:
    for store in (url, down):
        assert_one_line_error(run("--url", store, "emit", "x", data, "--never-fail"), code, needle)


def test_spool_needs_never_fail(url: str, spool_path: Path) -> None:
    result = run("--url", url, "emit", "x", "{}", "--spool", str(spool_path))
    assert_one_line_error(result, 2, "--spool is only used with --never-fail")


def test_never_fail_spools_while_the_server_is_down_and_flush_delivers(
    tmp_path: Path, spool_path: Path, down: str
) -> None:
    for i in range(3):
        result = run("--url", down, "emit", "step", json.dumps({"n": i}), "--task-id", "7", "--never-fail",
                     "--spool", str(spool_path))  # fmt: skip
        assert result.exit_code == 0, result.output
        assert result.stdout == ""
        (warning,) = result.stderr.splitlines()
        assert warning.startswith("Warning: ") and str(spool_path) in warning and "meshlog spool flush" in warning
    status = ok_json("spool", "status", "--spool", str(spool_path))
    assert (status["pending"], status["pending_events"], status["delivered"]) == (3, 3, 0)
    assert status["path"] == str(spool_path)
    text = ok("spool", "status", "--spool", str(spool_path)).stdout
    assert "pending    3 requests, 3 events" in text

    # still down: nothing is delivered, exit code 1, the entries stay
    result = run("spool", "flush", "--url", down, "--spool", str(spool_path))
    assert_one_line_error(result, 1, "3 requests remain in the spool", "StoreUnavailable")
    assert result.stdout == "delivered 0, rejected 0, remaining 3\n"

    server_db = f"sqlite:///{tmp_path / 'server.db'}"
    with running_server(server_db) as base_url:
        report = ok_json("spool", "flush", "--url", base_url, "--spool", str(spool_path))
        assert (report["delivered"], report["rejected"], report["remaining"], report["error"]) == (3, 0, 0, None)
        again = ok("spool", "flush", "--url", base_url, "--spool", str(spool_path)).stdout
        assert again == "delivered 0, rejected 0, remaining 0\n"
        event = ok_json("--url", base_url, "emit", "after", "{}", "--never-fail", "--spool", str(spool_path))
    with meshlog.connect(server_db) as log:
        stored = list(log.query())
    assert [(e.type, e.data) for e in stored] == [
        ("step", {"n": 0}),
        ("step", {"n": 1}),
        ("step", {"n": 2}),
        ("after", {}),
    ]
    assert stored[-1].id == event["id"]
    assert {e.task_id for e in stored[:3]} == {"7"}
    assert ok_json("spool", "status", "--spool", str(spool_path))["delivered"] == 3


def test_never_fail_spool_defaults_to_meshlog_spool(tmp_path: Path, spool_path: Path, down: str) -> None:
    env = {"MESHLOG_SPOOL": str(spool_path)}
    assert run("--url", down, "emit", "x", "{}", "--never-fail", env=env).exit_code == 0
    assert run("spool", "status", "--json", env=env).exit_code == 0
    with Spool(spool_path) as spool:
        assert spool.status().pending == 1


def test_never_fail_spool_defaults_to_the_user_cache(tmp_path: Path, down: str) -> None:
    home = tmp_path / "home"
    result = run("--url", down, "emit", "x", "{}", "--never-fail", env={"HOME": str(home)})
    assert result.exit_code == 0, result.output
    assert (home / ".cache" / "meshlog" / "spool.db").exists()


def test_never_fail_with_an_unopenable_spool_warns_and_exits_0(tmp_path: Path, down: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run("--url", down, "emit", "x", "{}", "--never-fail", "--spool", str(blocker / "spool.db"))
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("Warning: ConfigurationError: cannot open the spool")


# -- spool status and flush ------------------------------------------------------------------------------------------
def test_spool_status_of_a_missing_file_is_empty_and_creates_nothing(spool_path: Path) -> None:
    status = ok_json("spool", "status", "--spool", str(spool_path))
    assert (status["pending"], status["rejected"], status["rejected_entries"]) == (0, 0, [])
    assert not spool_path.exists()
    report = ok_json("spool", "flush", "--url", "http://127.0.0.1:1", "--spool", str(spool_path))
    assert (report["delivered"], report["remaining"]) == (0, 0)
    assert not spool_path.exists()


def test_spool_flush_needs_an_http_url(url: str, spool_path: Path) -> None:
    assert_one_line_error(run("--url", url, "spool", "flush", "--spool", str(spool_path)), 2, "http(s)://")
    assert_one_line_error(run("spool", "flush", "--url", url), 2, "http(s)://")


def test_spool_flush_moves_refused_entries_aside(tmp_path: Path, spool_path: Path) -> None:
    with Spool(spool_path) as spool:
        spool.put({"type": "ok", "data": {}, "stream": "s", "idempotency_key": "k-1"})
        spool.put({"type": "bad type!", "data": {}, "stream": "s", "idempotency_key": "k-2"})
    with running_server(f"sqlite:///{tmp_path / 'server.db'}") as base_url:
        result = run("spool", "flush", "--url", base_url, "--spool", str(spool_path))
    assert result.exit_code == 0, result.output
    assert result.stdout == "delivered 1, rejected 1, remaining 0\n"
    assert result.stderr.startswith("Warning: the server refused 1 spooled request")
    status = ok_json("spool", "status", "--spool", str(spool_path))
    assert (status["pending"], status["rejected"]) == (0, 1)
    (entry,) = status["rejected_entries"]
    assert "ValidationError" in entry["reason"]
    text = ok("spool", "status", "--spool", str(spool_path)).stdout
    assert "rejected   1" in text
    assert "ValidationError" in text


# -- --json everywhere -----------------------------------------------------------------------------------------------
def test_migrate_and_demo_json(url: str) -> None:
    assert ok_json("--url", url, "migrate") == {"url": url, "migrated": True, "granted": []}
    summary = ok_json("demo", "--url", url)
    assert summary["store"] == url
    assert summary["events_written"] == 40
    assert summary["llm_tokens"] == 11820
    with meshlog.connect(url) as log:
        assert {e.trace_id for e in log.query(limit=1000)} == {summary["trace_id"]}


def test_no_progress_bar_when_stdout_is_not_a_terminal(url: str, spool_path: Path, down: str) -> None:
    text = ok("demo", "--no-serve", "--url", url).stdout
    assert "writing the sample run" not in text
    assert "\x1b[" not in text
    run("--url", down, "emit", "x", "{}", "--never-fail", "--spool", str(spool_path))
    result = run("spool", "flush", "--url", down, "--spool", str(spool_path))
    assert "delivering the spool" not in result.output
