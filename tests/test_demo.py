"""The sample run of ``meshlog demo``: what it writes, and that query and replay read it back consistently."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import meshlog
from meshlog.cli import Console
from meshlog.demo import (
    REQUEST,
    DemoReport,
    DemoSummary,
    TaskStatus,
    TaskStatusProjection,
    show_demo,
    write_demo,
)

TASK_EVENTS = {
    "implement": [
        "task.dispatched",
        "llm.call", "llm.response", "tool.call", "tool.result", "tool.call", "tool.result",
        "task.progress",
        "llm.call", "llm.response", "tool.call", "tool.result",
        "task.result",
    ],
    "test": [
        "task.dispatched",
        "llm.call", "llm.error", "task.result.failure",
        "task.retry",
        "llm.call", "llm.response", "tool.call", "tool.result", "tool.call", "tool.result",
        "task.progress",
        "task.result",
    ],
    "deploy": [
        "task.dispatched",
        "llm.call", "llm.response",
        "deployment_started", "tool.call", "tool.result", "task.progress", "deployment_completed",
        "task.result",
    ],
}  # fmt: skip
TRACE_EVENTS = ["user.request", "llm.call", "llm.response", "plan.created", "epic_completed"]
AGENTS = {"implement": "api-coder", "test": "test-runner", "deploy": "deployer"}


@pytest.fixture
def log(tmp_path: Path) -> Iterator[meshlog.EventLog]:
    with meshlog.connect(f"sqlite:///{tmp_path / 'demo.db'}") as log:
        yield log


@pytest.fixture
def summary(log: meshlog.EventLog) -> DemoSummary:
    return write_demo(log, run_id="abc123")


def test_the_run_writes_the_expected_events(log: meshlog.EventLog, summary: DemoSummary) -> None:
    assert summary.trace_id == "run-abc123"
    assert [t.task_id for t in summary.tasks] == ["abc123-implement", "abc123-test", "abc123-deploy"]
    stored = log.query(limit=1000).events
    assert [e.id for e in stored] == [e.id for e in summary.events]
    assert summary.events_written == 40 == sum(map(len, TASK_EVENTS.values())) + len(TRACE_EVENTS)

    for task in summary.tasks:
        events = list(log.read_stream(task.stream))
        assert [e.type for e in events] == TASK_EVENTS[task.key]
        assert {e.task_id for e in events} == {task.task_id}
        own = {e.agent_id for e in events if e.type not in ("task.dispatched", "task.retry")}
        assert own == {AGENTS[task.key]}
        assert {e.agent_id for e in events if e.type in ("task.dispatched", "task.retry")} <= {"orchestrator"}
    trace_stream = list(log.read_stream("trace:run-abc123"))
    assert [e.type for e in trace_stream] == TRACE_EVENTS
    assert {e.agent_id for e in trace_stream} == {"orchestrator"}
    assert trace_stream[0].data["request"] == REQUEST == summary.request
    assert summary.streams == ("trace:run-abc123", *(t.stream for t in summary.tasks))
    assert summary.agents == ("orchestrator", "api-coder", "test-runner", "deployer")
    assert {e.trace_id for e in stored} == {"run-abc123"}


def test_the_dispatches_are_one_batch(summary: DemoSummary) -> None:
    batch = [e for e in summary.events if e.type in ("plan.created", "task.dispatched")]
    assert [e.position for e in batch] == list(range(batch[0].position, batch[0].position + 4))
    assert len({e.recorded_at for e in batch}) == 1
    plan = batch[0]
    assert all(e.parent_id == plan.id for e in batch[1:])
    assert [e.data["depends_on"] for e in batch[1:]] == [[], ["implement"], ["test"]]


def test_causal_links(summary: DemoSummary) -> None:
    by_id = {e.id: e for e in summary.events}
    request = summary.events[0]
    assert request.type == "user.request"
    assert request.parent_id is None
    for event in summary.events[1:]:
        assert event.root_id == request.id
        assert event.parent_id in by_id, event.type
        assert event.depth == by_id[event.parent_id].depth + 1
    for event in summary.events:
        parent = by_id.get(event.parent_id or "")
        if event.type in ("llm.response", "llm.error"):
            assert parent is not None
            assert parent.type == "llm.call"
            assert parent.task_id == event.task_id
            assert parent.data["model"] == event.data["model"]
        if event.type == "tool.result":
            assert parent is not None
            assert (parent.type, parent.data["tool"]) == ("tool.call", event.data["tool"])
    first_calls = {}
    for event in summary.events:
        if event.type == "llm.call" and event.task_id not in first_calls:
            first_calls[event.task_id] = event
    for task in summary.tasks:
        parent = by_id[first_calls[task.task_id].parent_id or ""]
        assert (parent.type, parent.task_id) == ("task.dispatched", task.task_id)


def test_llm_events_carry_model_tokens_and_idempotency_keys(log: meshlog.EventLog, summary: DemoSummary) -> None:
    llm = [e for e in summary.events if e.type.startswith("llm.")]
    keys = [e.idempotency_key for e in llm]
    assert all(keys)
    assert len(set(keys)) == len(keys) == 12
    assert all(str(k).startswith("run-abc123:llm-") for k in keys)
    responses = [e for e in llm if e.type == "llm.response"]
    assert len(responses) == 5
    for r in responses:
        assert r.data["total_tokens"] == r.data["input_tokens"] + r.data["output_tokens"] > 0
        assert r.data["duration_ms"] > 0
        assert r.data["finish_reason"] in ("stop", "tool_calls")
        assert r.data["model"].startswith("gpt-4o")
    assert summary.llm_calls == 6
    assert summary.llm_tokens == sum(r.data["total_tokens"] for r in responses) == 11_820
    epic = summary.events[-1]
    assert epic.type == "epic_completed"
    assert (epic.data["llm_calls"], epic.data["llm_tokens"]) == (6, 11_820)
    # an agent resending a call after a network error gets the recorded event back, and nothing is written
    call = llm[0]
    head = log.head_position()
    again = log.emit(
        call.type,
        call.data,
        trace_id=call.trace_id,
        agent_id=call.agent_id,
        parent_id=call.parent_id,
        idempotency_key=call.idempotency_key,
    )
    assert again.id == call.id
    assert log.head_position() == head


def test_the_failure_and_the_retry(log: meshlog.EventLog, summary: DemoSummary) -> None:
    failures = log.query(trace_id=summary.trace_id, types=["llm.error", "task.result.failure"]).events
    assert [e.type for e in failures] == ["llm.error", "task.result.failure"]
    error, failure = failures
    test = summary.retried_task
    assert {error.task_id, failure.task_id} == {test.task_id}
    assert error.data["error"] == "timeout"
    assert error.data["retryable"] is True
    assert failure.parent_id == error.id
    assert (failure.data["status"], failure.data["attempt"]) == ("failed", 1)
    (retry,) = log.query(trace_id=summary.trace_id, types=["task.retry"]).events
    assert retry.parent_id == failure.id
    assert retry.position > failure.position
    assert (retry.agent_id, retry.task_id, retry.data["attempt"]) == ("orchestrator", test.task_id, 2)
    results = log.query(task_id=test.task_id, types=["task.result"]).events
    assert [(e.data["status"], e.data["attempt"]) for e in results] == [("succeeded", 2)]
    assert results[0].position > retry.position
    second_call = log.query(task_id=test.task_id, types=["llm.call"], order="desc", limit=1).events[0]
    assert (second_call.parent_id, second_call.data["attempt"]) == (retry.id, 2)


def test_deployment_and_epic(summary: DemoSummary) -> None:
    types = [e.type for e in summary.events]
    started = summary.events[types.index("deployment_started")]
    completed = summary.events[types.index("deployment_completed")]
    assert completed.parent_id == started.id
    assert started.data["environment"] == completed.data["environment"] == "staging"
    assert completed.data["healthy"] is True
    assert started.occurred_at is not None
    assert completed.occurred_at is not None
    assert completed.data["duration_ms"] == (completed.occurred_at - started.occurred_at) / timedelta(milliseconds=1)
    assert types[-1] == "epic_completed"
    assert summary.events[-1].data["succeeded"] == 3
    assert summary.events[-1].data["retries"] == types.count("task.retry") == 1


def test_occurred_at_follows_the_order_and_ends_before_now(summary: DemoSummary) -> None:
    times = [e.occurred_at for e in summary.events]
    assert all(t is not None for t in times)
    stamps = [t for t in times if t is not None]
    assert stamps == sorted(stamps)
    assert stamps[-1] <= datetime.now(UTC)
    assert all(t <= e.recorded_at for t, e in zip(stamps, summary.events, strict=True))


def test_runs_differ_only_in_ids_and_timestamps(log: meshlog.EventLog, summary: DemoSummary) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    other = write_demo(log, run_id="def456", started_at=start)
    assert other.events[0].occurred_at == start
    assert [e.type for e in other.events] == [e.type for e in summary.events]
    assert [e.data for e in other.events] == [e.data for e in summary.events]
    assert [e.agent_id for e in other.events] == [e.agent_id for e in summary.events]
    assert _timeline(other) == _timeline(summary)
    assert log.query(trace_id="run-abc123", total_count=True, limit=1).total_count == 40
    assert log.query(trace_id="run-def456", total_count=True, limit=1).total_count == 40


def _timeline(summary: DemoSummary) -> list[timedelta]:
    times = [e.occurred_at for e in summary.events]
    start = times[0]
    assert start is not None
    assert None not in times
    return [t - start for t in times if t is not None]


def test_a_run_id_cannot_be_written_twice(log: meshlog.EventLog, summary: DemoSummary) -> None:
    head = log.head_position()
    with pytest.raises(meshlog.WrongExpectedVersion):
        write_demo(log, run_id="abc123")
    assert log.head_position() == head


def test_default_run_ids_are_fresh(log: meshlog.EventLog) -> None:
    first, second = write_demo(log), write_demo(log)
    assert first.run_id != second.run_id
    assert len(first.run_id) == 6
    assert log.head_position() == 80


# -- the projection and show_demo ---------------------------------------------------------------------------------
def test_replay_is_consistent_with_the_events(log: meshlog.EventLog, summary: DemoSummary) -> None:
    test = summary.retried_task
    result = log.replay(test.stream, TaskStatusProjection())
    events = list(log.read_stream(test.stream))
    state = result.state
    assert result.events_replayed == len(events) == log.stream_version(test.stream) == 13
    assert result.last_version == 13
    assert state.status == "succeeded"
    assert state.attempts == 2
    assert state.llm_calls == sum(1 for e in events if e.type == "llm.call") == 2
    assert state.tokens == sum(e.data["total_tokens"] for e in events if e.type == "llm.response") == 3740
    assert state.llm_ms == sum(
        e.data["duration_ms"] for e in events if e.type.startswith("llm.") and "duration_ms" in e.data
    )
    assert state.llm_ms == 30_000 + 11_800
    assert state.tool_calls == 2
    assert state.errors == ["llm.error: timeout"]
    first, last = events[0].occurred_at, events[-1].occurred_at
    assert first is not None
    assert last is not None
    assert state.duration_ms == (last - first) / timedelta(milliseconds=1)

    # replaying up to the failure shows the task failed after its first attempt
    failure = next(e for e in events if e.type == "task.result.failure")
    partial = log.replay(test.stream, TaskStatusProjection(), to_version=failure.stream_position)
    assert (partial.state.status, partial.state.attempts, partial.state.tokens) == ("failed", 1, 0)
    assert partial.last_version == 4


def test_projection_of_other_tasks(log: meshlog.EventLog, summary: DemoSummary) -> None:
    implement = log.replay(summary.task("implement").stream, TaskStatusProjection()).state
    deploy = log.replay(summary.task("deploy").stream, TaskStatusProjection()).state
    assert (implement.status, implement.attempts, implement.llm_calls, implement.tokens) == ("succeeded", 1, 2, 5830)
    assert (deploy.status, deploy.attempts, deploy.llm_calls, deploy.tokens) == ("succeeded", 1, 1, 950)
    assert implement.errors == deploy.errors == []
    assert TaskStatus().duration_ms is None


def show(log: meshlog.EventLog, summary: DemoSummary) -> tuple[DemoReport, str]:
    out = io.StringIO()
    report = show_demo(log, summary, Console(out, color=False, width=120))
    return report, out.getvalue()


def test_show_demo_reports_what_the_store_holds(log: meshlog.EventLog, summary: DemoSummary) -> None:
    report, text = show(log, summary)
    test = summary.retried_task

    assert report.agent_id == "test-runner"
    assert len(report.agent_events) == 10
    assert report.agent_events.has_more is True
    positions = [e.position for e in report.agent_events]
    assert positions == sorted(positions, reverse=True)
    mine = [e for e in summary.events if e.agent_id == "test-runner"]
    assert [e.id for e in report.agent_events] == [e.id for e in reversed(mine)][:10]

    assert [e.type for e in report.failures] == ["llm.error", "task.result.failure"]
    assert report.replayed_stream == test.stream
    assert (report.replay.state.status, report.replay.state.attempts) == ("succeeded", 2)
    assert [(s.stream, s.version) for s in report.streams] == [
        ("trace:run-abc123", 5),
        ("task:abc123-implement", 13),
        ("task:abc123-test", 13),
        ("task:abc123-deploy", 9),
    ]
    assert sum(s.version for s in report.streams) == report.total_events == summary.events_written == 40
    assert report.streams[0].last_position == summary.events[-1].position
    assert report.llm_tokens == summary.llm_tokens == 11_820

    assert 'meshlog demo: "Add rate limiting to the API"' in text
    assert "trace    run-abc123" in text
    assert 'log.query(agent_id="test-runner", trace_id="run-abc123", order="desc", limit=10)' in text
    assert 'log.query(trace_id="run-abc123", types=["llm.error", "task.result.failure"])' in text
    assert "gpt-4o: timeout after 30000 ms" in text
    assert "failed (attempt 1): llm.error: timeout" in text
    assert "status      succeeded" in text
    assert "attempts    2" in text
    assert "tokens      3,740" in text
    assert "errors      llm.error: timeout" in text
    assert "replayed 13 events up to version 13" in text
    assert "events in trace  40" in text
    assert "LLM tokens       11,820" in text
    assert "replay task:abc123-test" in text
    stream_rows = [line.split()[:3] for line in text.splitlines() if line.strip().startswith(("trace:", "task:"))]
    assert stream_rows == [
        ["trace:run-abc123", "5", str(summary.events[-1].position)],
        ["task:abc123-implement", "13", str(report.streams[1].last_position)],
        ["task:abc123-test", "13", str(report.streams[2].last_position)],
        ["task:abc123-deploy", "9", str(report.streams[3].last_position)],
    ]
    assert "\x1b[" not in text


def test_show_demo_reads_only_its_own_run(log: meshlog.EventLog, summary: DemoSummary) -> None:
    write_demo(log, run_id="zzz999")
    report, _ = show(log, summary)
    assert report.total_events == 40
    assert {e.trace_id for e in report.failures} == {"run-abc123"}
    assert [s.stream for s in report.streams] == ["trace:run-abc123", *(t.stream for t in summary.tasks)]
    assert report.llm_tokens == 11_820
    assert {e.trace_id for e in report.agent_events} == {"run-abc123"}
    assert Counter(e.type for e in report.agent_events) == Counter(
        e.type for e in summary.events[::-1] if e.agent_id == "test-runner"
    ) - Counter({"llm.call": 1})


def test_show_demo_explore_hints_name_the_store_and_tenant(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tenant.db'}"
    with meshlog.connect(url, tenant="acme") as log:
        _, text = show(log, write_demo(log, run_id="aaa111"))
    assert f"meshlog --url {url} --tenant acme replay task:aaa111-test" in text
    with meshlog.connect("memory://") as log:
        _, text = show(log, write_demo(log, run_id="bbb222"))
    assert "a memory:// store keeps nothing" in text
    assert "meshlog --url memory://" not in text
