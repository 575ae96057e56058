"""SessionState: the session projection, its final_state, its aliases and its snapshots."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshlog
from meshlog.session import (
    MAX_ERRORS,
    SessionState,
    SessionStatus,
    canonical_type,
    failure_message,
    is_failure,
)

T0 = datetime(2026, 2, 3, 12, 0, tzinfo=UTC)
STREAM = "instance:odin3-ps"
Step = tuple[str, dict[str, Any]]

# An epic's whole life: what a resume suggestion needs to say "epic-003 is complete" with its numbers.
EPIC_LIFE: list[Step] = [
    ("epic_started", {"epic_id": "epic-003", "feature_name": "authentication-oauth", "estimated_hours": 60}),
    ("test_passed", {"epic_id": "epic-003", "test_type": "unit", "passed_count": 5, "test_count": 8}),
    ("epic_completed", {"epic_id": "epic-003", "duration_hours": 58.5, "files_changed": 23}),
    ("prd_updated", {"epic_id": "epic-003", "version": "1.4.0"}),
]


@pytest.fixture
def log() -> Iterator[meshlog.EventLog]:
    log = meshlog.connect("memory://")
    yield log
    log.close()


def write(log: meshlog.EventLog, steps: Sequence[Step], *, minutes: int = 10, stream: str = STREAM) -> None:
    """Emit the steps into ``stream``, one every ``minutes`` from T0 (by ``occurred_at``)."""
    for i, (type_, data) in enumerate(steps):
        log.emit(type_, data, stream=stream, occurred_at=T0 + timedelta(minutes=minutes * i))


def replay(log: meshlog.EventLog, to_version: int | None = None) -> SessionStatus:
    return log.replay(STREAM, SessionState(), to_version=to_version).state


def test_an_epic_s_life_gives_the_final_state(log: meshlog.EventLog) -> None:
    write(log, EPIC_LIFE)
    result = log.replay(STREAM, SessionState())
    final = result.state.to_final_state()

    assert {k: final[k] for k in ("last_epic", "last_event_type", "latest_timestamp", "total_events_replayed")} == {
        "last_epic": "epic-003",
        "last_event_type": "prd_updated",
        "latest_timestamp": "2026-02-03T12:30:00+00:00",
        "total_events_replayed": 4,
    }
    assert final["checkpoint_state"] is None
    assert final["epics"]["started"] == ["epic-003"]
    assert final["epics"]["completed"] == ["epic-003"]
    assert final["epics"]["open"] is None
    assert final["tests"] == {
        "runs": 1,
        "runs_failed": 0,
        "passed": 5,
        "failed": 0,
        "last_run": final["tests"]["last_run"],
    }
    assert (final["tests"]["last_run"]["passed"], final["tests"]["last_run"]["total"]) == (5, 8)
    assert final["prd_updated"] is True
    assert final["counts"] == {"epic_started": 1, "test_passed": 1, "epic_completed": 1, "prd_updated": 1}
    epic = result.state.epics["epic-003"]
    assert (epic.status, epic.feature, epic.prd_updated) == ("completed", "authentication-oauth", True)
    assert epic.finished_at == T0 + timedelta(minutes=20)
    assert json.loads(json.dumps(final)) == final


def test_partial_replay_stops_at_the_version(log: meshlog.EventLog) -> None:
    write(log, EPIC_LIFE)
    state = replay(log, to_version=2)

    final = state.to_final_state()
    assert (final["last_event_type"], final["total_events_replayed"]) == ("test_passed", 2)
    assert final["latest_timestamp"] == "2026-02-03T12:10:00+00:00"
    assert final["epics"]["open"] == "epic-003"
    assert final["epics"]["completed"] == []
    assert state.open_epic is not None and state.open_epic.last_test_run is not None
    assert state.open_epic.last_test_run.describe() == "5 of 8 tests passed"
    assert state.prd_updated is False


def test_the_short_type_names(log: meshlog.EventLog) -> None:
    write(
        log,
        [
            ("spawn", {"description": "Implement epic-003", "subagent": "haiku"}),
            ("epic_start", {"epic_id": "epic-003", "feature": "auth"}),
            ("commit", {"message": "feat: auth", "files_changed": 7, "hash": "a1b2c3d"}),
            ("deploy_start", {"service": "api", "port": 5100}),
            ("deploy_complete", {"service": "api", "duration_ms": 4500}),
            ("deploy", {"service": "web", "port": 5200, "status": "success", "duration_ms": 3000}),
            ("epic_completed", {"epic_id": "epic-003", "status": "passed"}),
        ],
    )
    state = replay(log)

    assert state.counts["spawn"] == 1 and state.counts["epic_start"] == 1
    assert state.epics_started == ["epic-003"] and state.epics_completed == ["epic-003"]
    assert state.epics["epic-003"].feature == "auth"
    assert state.last_commit is not None
    assert (state.last_commit.hash, state.last_commit.message, state.last_commit.files_changed) == (
        "a1b2c3d",
        "feat: auth",
        7,
    )
    api, web = state.deployments["api"], state.deployments["web"]
    assert (api.status, api.started_at, api.finished_at) == (
        "succeeded",
        T0 + timedelta(minutes=30),
        T0 + timedelta(minutes=40),
    )
    assert (web.status, web.duration_ms) == ("succeeded", 3000)
    assert state.open_deployments == []
    assert [d.service for d in state.finished_deployments] == ["api", "web"]
    assert state.error_count == 0


@pytest.mark.parametrize(
    ("recorded", "canonical"),
    [
        ("epic_start", "epic_started"),
        ("epic.started", "epic_started"),
        ("Epic-Completed", "epic_completed"),
        ("deploy_start", "deployment_started"),
        ("deploy.completed", "deployment_completed"),
        ("deployment_done", "deployment_completed"),
        ("deploy_complete", "deployment_completed"),
        ("commit", "commit_created"),
        ("spawn", "task_spawned"),
        ("llm.error", "llm_error"),
        ("task.result.failure", "task_result_failure"),
        ("something:else/entirely", "something_else_entirely"),
    ],
)
def test_canonical_types(recorded: str, canonical: str) -> None:
    assert canonical_type(recorded) == canonical


def test_deployments_open_finished_and_failed(log: meshlog.EventLog) -> None:
    write(
        log,
        [
            ("deployment_started", {"service": "api", "environment": "staging", "version": "1.42.0"}),
            ("deployment_started", {"service": "web"}),
            ("deployment_failed", {"service": "web", "error": "health check failed"}),
        ],
    )
    state = replay(log)

    [api] = state.open_deployments
    assert (api.service, api.environment, api.version, api.started_at) == ("api", "staging", "1.42.0", T0)
    assert api.duration_ms is None
    [web] = state.finished_deployments
    assert (web.status, web.error, web.duration_ms) == ("failed", "health check failed", 10 * 60 * 1000)
    assert [e.type for e in state.errors] == ["deployment_failed"]
    final = state.to_final_state()["deployments"]
    assert [d["service"] for d in final["open"]] == ["api"]
    assert [(d["service"], d["status"]) for d in final["finished"]] == [("web", "failed")]


def test_a_failed_deployment_is_replaced_by_the_next_one(log: meshlog.EventLog) -> None:
    write(
        log,
        [
            ("deployment_started", {"service": "api"}),
            ("deployment_completed", {"service": "api", "status": "failed", "message": "crash loop"}),
            ("deployment_started", {"service": "api"}),
            ("deployment_completed", {"service": "api", "health_status": "healthy"}),
        ],
    )
    state = replay(log)
    api = state.deployments["api"]
    assert (api.status, api.error, api.started_at) == ("succeeded", None, T0 + timedelta(minutes=20))
    assert state.error_count == 1 and state.errors[0].message == "crash loop"


def test_errors_come_from_failure_events_but_not_from_test_results(log: meshlog.EventLog) -> None:
    write(
        log,
        [
            ("llm.error", {"model": "gpt-4o", "error": "timeout", "message": "no response within 30 s"}),
            ("task.result.failure", {"status": "failed", "error": "llm.error: timeout"}),
            ("error", {"error_type": "test_failure", "message": "pytest exited with 1"}),
            ("test_failed", {"passed_count": 3, "failed_count": 5}),
            ("task.result", {"status": "succeeded"}),
        ],
    )
    state = replay(log)
    assert state.error_count == 3
    assert [(e.type, e.message) for e in state.errors] == [
        ("llm.error", "timeout: no response within 30 s"),
        ("task.result.failure", "llm.error: timeout"),
        ("error", "test_failure: pytest exited with 1"),
    ]
    assert state.test_runs_failed == 1


def test_only_the_most_recent_errors_are_kept(log: meshlog.EventLog) -> None:
    write(log, [("error", {"message": f"boom {i}"}) for i in range(MAX_ERRORS + 5)], minutes=1)
    state = replay(log)
    assert state.error_count == MAX_ERRORS + 5
    assert len(state.errors) == MAX_ERRORS
    assert state.errors[0].message == "boom 5" and state.errors[-1].message == f"boom {MAX_ERRORS + 4}"


def test_test_totals_and_the_last_run(log: meshlog.EventLog) -> None:
    write(
        log,
        [
            ("epic_started", {"epic_id": "epic-004"}),
            ("test_passed", {"passed_count": 45, "failed_count": 0, "coverage_percent": 87}),
            ("test_failed", {"epic_id": "epic-004", "passed_count": 3, "failed_count": 5}),
            ("validation_failed", {"epic_id": "epic-004", "reason": "schema mismatch"}),
        ],
    )
    state = replay(log)
    assert (state.test_runs, state.test_runs_failed, state.tests_passed, state.tests_failed) == (3, 2, 48, 5)
    first_run = state.to_final_state()["tests"]["last_run"]
    assert first_run["type"] == "validation_failed"
    run = state.last_test_run
    assert run is not None and not run.ok and run.describe() == "the tests failed"
    epic = state.epics["epic-004"]
    assert epic.last_test_run == run
    # A test event without an epic id belongs to the epic in progress.
    assert epic.status == "in_progress"


def test_a_run_that_says_passed_but_counts_failures_is_not_ok(log: meshlog.EventLog) -> None:
    write(log, [("test_passed", {"passed_count": 7, "failed_count": 1})])
    run = replay(log).last_test_run
    assert run is not None and not run.ok
    assert (run.total, run.describe()) == (8, "7 of 8 tests passed, 1 failed")


def test_an_epic_that_fails_and_restarts(log: meshlog.EventLog) -> None:
    write(
        log,
        [
            ("epic_started", {"epic_id": "epic-004"}),
            ("epic_failed", {"epic_id": "epic-004", "error": "cors_headers"}),
        ],
    )
    failed = replay(log)
    assert failed.epics_failed == ["epic-004"] and failed.open_epic is None
    assert failed.epics["epic-004"].error == "cors_headers"

    log.emit("epic_started", {"epic_id": "epic-004"}, stream=STREAM, occurred_at=T0 + timedelta(hours=1))
    again = replay(log)
    epic = again.epics["epic-004"]
    assert (epic.status, epic.attempts, epic.error, epic.finished_at) == ("in_progress", 2, None, None)
    assert again.open_epic is epic and again.epics_failed == []


def test_the_open_epic_is_the_last_unfinished_one(log: meshlog.EventLog) -> None:
    write(
        log,
        [
            ("epic_started", {"epic_id": "epic-003"}),
            ("epic_started", {"epic_id": "epic-004"}),
            ("epic_completed", {"epic_id": "epic-004", "tests_passed": 12}),
        ],
    )
    state = replay(log)
    assert state.current_epic is not None and state.current_epic.epic_id == "epic-004"
    assert state.open_epic is not None and state.open_epic.epic_id == "epic-003"
    assert state.epics["epic-004"].tests_passed == 12


def test_checkpoints(log: meshlog.EventLog) -> None:
    write(
        log,
        [
            ("epic_started", {"epic_id": "epic-004"}),
            ("checkpoint_created", {"checkpoint_id": "cp-7", "epic_id": "epic-004", "context_percent": 81}),
            ("instance_heartbeat", {}),
        ],
    )
    state = replay(log)
    assert state.checkpoint_state == {"checkpoint_id": "cp-7", "epic_id": "epic-004", "context_percent": 81}
    assert state.checkpoint is not None
    assert (state.checkpoint.checkpoint_id, state.checkpoint.loaded, state.checkpoint.events_after) == (
        "cp-7",
        False,
        0,
    )

    write(log, [("checkpoint_loaded", {"checkpoint_id": "cp-7"}), ("test_passed", {"passed_count": 4})])
    state = replay(log)
    assert state.to_final_state()["checkpoint_state"] == {"checkpoint_id": "cp-7"}
    assert state.checkpoint is not None and state.checkpoint.loaded and state.checkpoint.events_after == 1


def test_pull_requests_context_and_spawns(log: meshlog.EventLog) -> None:
    url = "https://github.com/project/pull/123"
    write(
        log,
        [
            ("assistant_start", {"epic": "epic-003", "context_percent": 42}),
            ("pr_created", {"url": url, "title": "OAuth login", "number": 123}),
            ("pr_merged", {"url": url}),
            ("context_window_updated", {"context_percent": 67.5}),
        ],
    )
    state = replay(log)
    pr = state.pull_requests[url]
    assert (pr.status, pr.title, pr.number, pr.merged_at) == ("merged", "OAuth login", 123, T0 + timedelta(minutes=20))
    assert state.context_percent == 67.5
    assert state.last_epic == "epic-003"


def test_occurred_at_is_preferred_and_the_latest_time_wins(log: meshlog.EventLog) -> None:
    log.emit("commit", {"hash": "b"}, stream=STREAM, occurred_at=T0 + timedelta(hours=2))
    log.emit("commit", {"hash": "a"}, stream=STREAM, occurred_at=T0)  # written late, happened earlier
    log.emit("instance_heartbeat", {}, stream=STREAM)  # no occurred_at: recorded_at
    state = replay(log)
    assert state.latest_timestamp is not None and state.latest_timestamp > T0 + timedelta(hours=2)
    assert state.last_commit is not None and state.last_commit.hash == "a"


@pytest.mark.parametrize(
    ("type_", "data", "failed"),
    [
        ("llm.error", {}, True),
        ("task.result.failure", {}, True),
        ("epic_failed", {}, True),
        ("error", {}, True),
        ("error.occurred", {}, True),
        ("task.result", {"status": "failed"}, True),
        ("tool.result", {"ok": False}, True),
        ("deployment_completed", {"healthy": False}, True),
        ("task.result", {"status": "succeeded"}, False),
        ("tool.result", {"ok": True}, False),
        ("llm.response", {}, False),
    ],
)
def test_is_failure(log: meshlog.EventLog, type_: str, data: dict[str, Any], failed: bool) -> None:
    assert is_failure(log.emit(type_, data)) is failed


def test_failure_message() -> None:
    assert failure_message({"error": {"message": "rate limited"}}) == "rate limited"
    assert failure_message({"error_type": "test_failure", "message": "3 failed"}) == "test_failure: 3 failed"
    assert failure_message({"status": "failed"}) is None


# -- snapshots -----------------------------------------------------------------------------------------------------
RICH: list[Step] = [
    ("instance_registered", {"host": "odin3"}),
    ("epic_start", {"epic_id": "epic-003", "feature": "auth"}),
    ("test_failed", {"epic_id": "epic-003", "passed_count": 3, "failed_count": 5, "coverage": 61.5}),
    ("commit", {"hash": "a1b2c3d", "message": "fix: tokens", "files_changed": 3}),
    ("test_passed", {"epic_id": "epic-003", "passed_count": 8, "test_count": 8}),
    ("pr_created", {"number": 12, "title": "auth"}),
    ("deploy_start", {"service": "api", "environment": "staging"}),
    ("llm.error", {"model": "gpt-4o", "error": "timeout"}),
    ("deployment_failed", {"service": "api", "error": "crash loop"}),
    ("checkpoint_created", {"checkpoint_id": "cp-1", "nested": {"files": ["a.py", "b.py"]}}),
    ("epic_completed", {"epic_id": "epic-003", "tests_passed": 8, "pr_url": "https://example.test/pr/12"}),
    ("prd_updated", {"epic_id": "epic-003"}),
    ("context_window_updated", {"context_percent": 55}),
    ("epic_started", {"epic_id": "epic-004"}),
]


def test_projection_identifies_its_snapshots() -> None:
    projection = SessionState()
    assert (projection.name, projection.version) == ("session-state", 1)


def test_a_snapshot_round_trip_gives_the_same_state(log: meshlog.EventLog) -> None:
    write(log, RICH)
    projection = SessionState()
    state = replay(log)
    snapshot = json.loads(json.dumps(projection.to_snapshot(state)))
    assert projection.from_snapshot(snapshot) == state
    assert projection.from_snapshot(snapshot).to_final_state() == state.to_final_state()


@pytest.mark.parametrize("split", range(len(RICH) + 1))
def test_replay_continued_from_a_snapshot_equals_a_full_replay(log: meshlog.EventLog, split: int) -> None:
    write(log, RICH)
    projection = SessionState()
    events = list(log.read_stream(STREAM))
    head = projection.initial()
    for event in events[:split]:
        head = projection.apply(head, event)
    state = projection.from_snapshot(json.loads(json.dumps(projection.to_snapshot(head))))
    for event in events[split:]:
        state = projection.apply(state, event)
    assert state == replay(log)


@pytest.mark.parametrize(
    "snapshot",
    [{}, {"total_events_replayed": 1}, {**SessionState().to_snapshot(SessionStatus()), "epics": [{"epic_id": "x"}]}],
)
def test_from_snapshot_rejects_what_it_did_not_write(snapshot: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not a session-state v1 snapshot"):
        SessionState().from_snapshot(snapshot)


TYPES = [
    "epic_started",
    "epic_start",
    "epic_completed",
    "epic_failed",
    "test_passed",
    "test_failed",
    "validation_failed",
    "deploy_start",
    "deployment_completed",
    "deployment_failed",
    "deploy",
    "commit",
    "pr_created",
    "pr_merged",
    "checkpoint_created",
    "checkpoint_loaded",
    "prd_updated",
    "llm.error",
    "error",
    "instance_heartbeat",
    "context_window_updated",
]
PAYLOADS = st.fixed_dictionaries(
    {},
    optional={
        "epic_id": st.sampled_from(["epic-1", "epic-2"]),
        "service": st.sampled_from(["api", "web"]),
        "passed_count": st.integers(0, 50),
        "failed_count": st.integers(0, 5),
        "test_count": st.integers(0, 60),
        "status": st.sampled_from(["success", "failed"]),
        "url": st.sampled_from(["https://example.test/pr/1", "https://example.test/pr/2"]),
        "context_percent": st.floats(0, 100),
        "duration_ms": st.integers(0, 10_000),
        "message": st.text(max_size=10),
    },
)


def _event(position: int, type_: str, data: dict[str, Any], minutes: int) -> meshlog.RecordedEvent:
    return meshlog.RecordedEvent(
        id=f"00000000-0000-7000-8000-{position:012d}",
        position=position,
        stream=STREAM,
        stream_position=position,
        type=type_,
        version=1,
        data=data,
        metadata={},
        trace_id=None,
        task_id=None,
        agent_id="ps",
        parent_id=None,
        root_id=f"00000000-0000-7000-8000-{position:012d}",
        depth=0,
        related=(),
        idempotency_key=None,
        tenant="default",
        occurred_at=T0 + timedelta(minutes=minutes),
        recorded_at=T0 + timedelta(minutes=minutes, seconds=1),
    )


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.tuples(st.sampled_from(TYPES), PAYLOADS, st.integers(0, 600)), max_size=25),
    split=st.integers(0, 25),
)
def test_any_sequence_survives_a_snapshot_anywhere(steps: list[tuple[str, dict[str, Any], int]], split: int) -> None:
    projection = SessionState()
    events = [_event(i, t, d, m) for i, (t, d, m) in enumerate(steps, start=1)]
    full = projection.initial()
    for event in events:
        full = projection.apply(full, event)
    resumed = projection.initial()
    for event in events[:split]:
        resumed = projection.apply(resumed, event)
    resumed = projection.from_snapshot(json.loads(json.dumps(projection.to_snapshot(resumed))))
    for event in events[split:]:
        resumed = projection.apply(resumed, event)
    assert resumed == full
    assert full.total_events_replayed == len(events)
    assert json.loads(json.dumps(full.to_final_state())) == full.to_final_state()


def test_the_log_replays_from_a_saved_snapshot(log: meshlog.EventLog) -> None:
    write(log, RICH[:8])
    first = log.replay(STREAM, SessionState(), snapshot_every=4)
    assert first.snapshot_version is None and first.events_replayed == 8
    write(log, RICH[8:])
    second = log.replay(STREAM, SessionState(), snapshot_every=4)
    assert (second.snapshot_version, second.events_replayed) == (8, len(RICH) - 8)
    assert second.state == log.replay(STREAM, SessionState()).state
    assert second.state.total_events_replayed == len(RICH)
