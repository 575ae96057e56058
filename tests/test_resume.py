"""Resume suggestions: each built-in rule, their order, user rules, humanized times."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import meshlog
from meshlog.resume import (
    USER_PRIORITY,
    ResumeRules,
    Suggestion,
    ago,
    humanize,
    suggest,
)
from meshlog.session import SessionState, SessionStatus

T0 = datetime(2026, 2, 3, 12, 0, tzinfo=UTC)
STREAM = "instance:odin3-ps"
Step = tuple[str, dict[str, Any]]


@pytest.fixture
def log() -> Iterator[meshlog.EventLog]:
    log = meshlog.connect("memory://")
    yield log
    log.close()


def session(log: meshlog.EventLog, steps: Sequence[Step], *, minutes: int = 10) -> SessionStatus:
    """Emit the steps one every ``minutes`` from T0 and replay the stream."""
    for i, (type_, data) in enumerate(steps):
        log.emit(type_, data, stream=STREAM, occurred_at=T0 + timedelta(minutes=minutes * i))
    return log.replay(STREAM, SessionState()).state


def at(hours: float = 0, minutes: float = 0) -> datetime:
    return T0 + timedelta(hours=hours, minutes=minutes)


def test_a_completed_epic_with_its_tests_and_prd(log: meshlog.EventLog) -> None:
    state = session(
        log,
        [
            ("epic_started", {"epic_id": "epic-003"}),
            ("test_passed", {"epic_id": "epic-003", "passed_count": 5, "test_count": 8}),
            ("epic_completed", {"epic_id": "epic-003"}),
            ("prd_updated", {"epic_id": "epic-003", "version": "1.4.0"}),
        ],
    )
    found = suggest(state, now=at(hours=3))
    assert found.text == "epic-003 is complete: 5 of 8 tests passed, PRD updated. Ready for the next epic."
    assert (found.rule, found.priority) == ("epic_completed", 40)
    assert found.details["epic"]["epic_id"] == "epic-003"


def test_a_partial_replay_says_continue(log: meshlog.EventLog) -> None:
    session(
        log,
        [
            ("epic_started", {"epic_id": "epic-003"}),
            ("test_passed", {"epic_id": "epic-003", "passed_count": 5, "test_count": 8}),
            ("epic_completed", {"epic_id": "epic-003"}),
        ],
    )
    state = log.replay(STREAM, SessionState(), to_version=2).state
    found = suggest(state, now=at(hours=2))
    assert found.text == "epic-003 is in progress (started 2 h ago): 5 of 8 tests passed at the last run; continue it."
    assert found.rule == "epic_in_progress"


def test_an_epic_in_progress_reports_the_last_run(log: meshlog.EventLog) -> None:
    state = session(
        log,
        [
            ("epic_completed", {"epic_id": "epic-003", "tests_passed": 45}),
            ("epic_started", {"epic_id": "epic-004", "feature_name": "billing"}),
            ("test_passed", {"epic_id": "epic-004", "passed_count": 3, "test_count": 8}),
        ],
        minutes=30,
    )
    found = suggest(state, now=at(hours=2, minutes=30))
    assert found.text == "epic-004 is in progress (started 2 h ago): 3 of 8 tests passed at the last run; continue it."


def test_an_epic_in_progress_without_tests(log: meshlog.EventLog) -> None:
    state = session(log, [("epic_start", {"epic_id": "epic-004"})])
    assert suggest(state, now=at(minutes=5)).text == (
        "epic-004 is in progress (started 5 min ago), with no test run yet: continue it."
    )


def test_a_completed_epic_with_the_completion_numbers(log: meshlog.EventLog) -> None:
    state = session(
        log,
        [
            ("epic_started", {"epic_id": "epic-003"}),
            ("test_passed", {"epic_id": "epic-003", "passed_count": 40}),
            ("epic_completed", {"epic_id": "epic-003", "tests_passed": 45, "files_changed": 23}),
        ],
    )
    assert suggest(state, now=at(hours=1)).text == "epic-003 is complete: 45 tests passed. Ready for the next epic."


def test_an_unfinished_deployment_comes_first(log: meshlog.EventLog) -> None:
    state = session(
        log,
        [
            ("epic_started", {"epic_id": "epic-004"}),
            ("deployment_started", {"service": "api"}),
            ("test_failed", {"epic_id": "epic-004", "passed_count": 3, "failed_count": 5}),
        ],
    )
    found = suggest(state, now=at(hours=2, minutes=10))
    assert found.text == "The deployment of api started 2 h ago and never finished: check it."
    assert (found.rule, found.priority) == ("deployment_unfinished", 90)
    assert [d["service"] for d in found.details["deployments"]] == ["api"]


def test_a_deployment_that_just_started_is_still_running(log: meshlog.EventLog) -> None:
    state = session(log, [("deploy_start", {"service": "api", "version": "1.42.0", "environment": "staging"})])
    assert suggest(state, now=at(minutes=3)).text == (
        "The deployment of api 1.42.0 to staging started 3 min ago and has not finished yet: "
        "wait for it, then check its health."
    )


def test_several_unfinished_deployments(log: meshlog.EventLog) -> None:
    state = session(log, [("deploy_start", {"service": "web"}), ("deploy_start", {"service": "api"})], minutes=60)
    assert suggest(state, now=at(hours=3)).text == (
        "The deployments of web (started 3 h ago) and api (started 2 h ago) have not finished: check them."
    )


def test_a_failed_deployment(log: meshlog.EventLog) -> None:
    state = session(
        log,
        [
            ("deployment_started", {"service": "api"}),
            ("deployment_failed", {"service": "api", "error": "health check failed"}),
        ],
    )
    found = suggest(state, now=at(minutes=20))
    assert found.text == "The deployment of api failed 10 min ago (health check failed): fix it and deploy again."
    assert found.rule == "deployment_failed"


def test_a_failed_epic(log: meshlog.EventLog) -> None:
    state = session(
        log,
        [("epic_started", {"epic_id": "epic-004"}), ("epic_failed", {"epic_id": "epic-004", "error": "cors_headers"})],
    )
    found = suggest(state, now=at(minutes=30))
    assert found.text == "epic-004 failed 20 min ago (cors_headers): find the cause, fix it and restart the epic."
    assert found.rule == "epic_failed"


def test_the_last_event_is_an_error(log: meshlog.EventLog) -> None:
    log.emit("epic_started", {"epic_id": "epic-004"}, stream=STREAM, occurred_at=T0)
    log.emit(
        "llm.error",
        {"model": "gpt-4o", "error": "timeout", "message": "no response within 30 s"},
        stream=STREAM,
        agent_id="test-runner",
        occurred_at=at(minutes=57),
    )
    state = log.replay(STREAM, SessionState()).state
    found = suggest(state, now=at(hours=1))
    assert found.text == (
        "The last event, llm.error by test-runner 3 min ago, reported an error (timeout: no response within 30 s): "
        "look into it before going on."
    )
    assert found.rule == "last_event_error"


def test_failed_tests(log: meshlog.EventLog) -> None:
    state = session(
        log,
        [
            ("epic_started", {"epic_id": "epic-004"}),
            ("test_failed", {"epic_id": "epic-004", "passed_count": 3, "failed_count": 5}),
            ("commit", {"hash": "a1b2c3d"}),
        ],
    )
    found = suggest(state, now=at(minutes=40))
    assert found.text == (
        "The last test run of epic-004 failed 30 min ago: 3 of 8 tests passed, 5 failed. "
        "Fix the failures and run it again."
    )
    assert found.rule == "tests_failed"


def test_a_failed_validation_without_counts(log: meshlog.EventLog) -> None:
    state = session(log, [("validation_failed", {"reason": "schema"}), ("commit", {})])
    assert suggest(state, now=at(hours=1)).text == (
        "The last validation failed 1 h ago: the tests failed. Fix the failures and run it again."
    )


def test_failed_tests_do_not_matter_once_the_epic_completed(log: meshlog.EventLog) -> None:
    state = session(
        log,
        [
            ("epic_started", {"epic_id": "epic-004"}),
            ("test_failed", {"epic_id": "epic-004", "passed_count": 7, "failed_count": 1}),
            ("epic_completed", {"epic_id": "epic-004"}),
        ],
    )
    found = suggest(state, now=at(hours=1))
    assert found.rule == "epic_completed"
    assert found.text == "epic-004 is complete: 7 of 8 tests passed, 1 failed. Ready for the next epic."


def test_a_checkpoint_to_load(log: meshlog.EventLog) -> None:
    state = session(
        log,
        [
            ("epic_started", {"epic_id": "epic-004"}),
            ("checkpoint_created", {"checkpoint_id": "cp-7", "context_percent": 85}),
            ("instance_heartbeat", {}),
        ],
        minutes=20,
    )
    found = suggest(state, now=at(hours=1))
    assert found.text == (
        "Checkpoint cp-7 was created 40 min ago and not loaded since: load it to restore the work state, "
        "then continue epic-004."
    )
    assert (found.rule, found.details["checkpoint"]["state"]["checkpoint_id"]) == ("checkpoint_to_load", "cp-7")


def test_a_checkpoint_followed_by_work_is_not_suggested(log: meshlog.EventLog) -> None:
    state = session(
        log,
        [
            ("epic_started", {"epic_id": "epic-004"}),
            ("checkpoint_created", {}),
            ("test_passed", {"epic_id": "epic-004", "passed_count": 2, "test_count": 8}),
        ],
    )
    assert suggest(state, now=at(hours=1)).rule == "epic_in_progress"


def test_a_loaded_checkpoint_is_not_suggested(log: meshlog.EventLog) -> None:
    state = session(log, [("checkpoint_created", {"id": "cp-1"}), ("checkpoint_loaded", {"id": "cp-1"})])
    assert suggest(state, now=at(hours=1)).rule == "last_activity"


def test_nothing_recorded() -> None:
    found = suggest(SessionStatus(), now=T0)
    assert found.text == "Nothing recorded yet: there is no session to resume. Start new work."
    assert (found.rule, found.priority) == ("nothing_recorded", 0)


def test_nothing_open(log: meshlog.EventLog) -> None:
    state = session(
        log,
        [
            ("commit", {"epic_id": "epic-003", "hash": "a1b2c3d", "message": "docs"}),
            ("spawn", {"description": "review the docs", "subagent": "haiku"}),
        ],
    )
    assert suggest(state, now=at(minutes=15)).text == (
        "Nothing is open: the last event was spawn 5 min ago (about epic-003). Pick the next piece of work."
    )


def test_every_matching_rule_in_order(log: meshlog.EventLog) -> None:
    state = session(
        log,
        [
            ("epic_started", {"epic_id": "epic-004"}),
            ("deployment_started", {"service": "api"}),
            ("test_failed", {"epic_id": "epic-004", "failed_count": 2}),
        ],
    )
    found = ResumeRules().evaluate(state, at(hours=1))
    assert [s.rule for s in found] == ["deployment_unfinished", "tests_failed", "epic_in_progress", "last_activity"]
    assert [s.priority for s in found] == [90, 70, 50, 10]


# -- rules --------------------------------------------------------------------------------------------------------
def test_the_built_in_rules_and_their_order() -> None:
    rules = ResumeRules()
    assert rules.names() == [
        "deployment_unfinished",
        "deployment_failed",
        "epic_failed",
        "last_event_error",
        "tests_failed",
        "checkpoint_to_load",
        "epic_in_progress",
        "epic_completed",
        "last_activity",
        "nothing_recorded",
    ]
    assert all(rule.description for rule in rules)
    assert len(ResumeRules(builtin=False)) == 0


def test_a_user_rule_added_with_the_decorator_comes_first(log: meshlog.EventLog) -> None:
    state = session(log, [("deployment_started", {"service": "api"}), ("error", {"message": "disk full"})])
    rules = ResumeRules()

    @rules.rule
    def disk_full(state: SessionStatus, now: datetime) -> Suggestion | None:
        """A full disk explains everything else: free space first."""
        if any(e.message == "disk full" for e in state.errors):
            return Suggestion("Free disk space on the runner first.", details={"errors": state.error_count})
        return None

    found = suggest(state, now=at(hours=1), rules=rules)
    assert found == Suggestion("Free disk space on the runner first.", "disk_full", USER_PRIORITY, {"errors": 1})
    assert rules.names()[0] == "disk_full"
    # The decorator returns the function unchanged, and the default rules are not affected.
    assert disk_full(state, T0) is not None
    assert suggest(state, now=at(hours=1)).rule == "deployment_unfinished"


def test_user_rules_take_their_priority(log: meshlog.EventLog) -> None:
    state = session(log, [("epic_started", {"epic_id": "epic-004"}), ("checkpoint_created", {})])
    rules = ResumeRules()

    def always(state: SessionStatus, now: datetime) -> Suggestion:
        return Suggestion("Read the runbook.")

    rules.add(always, priority=55, name="runbook")
    assert suggest(state, now=at(hours=1), rules=rules).rule == "checkpoint_to_load"  # 60 beats 55
    rules.remove("checkpoint_to_load")
    assert suggest(state, now=at(hours=1), rules=rules) == Suggestion("Read the runbook.", "runbook", 55)

    @rules.rule(priority=55, name="second")
    def also(state: SessionStatus, now: datetime) -> Suggestion:
        return Suggestion("Never reached: same priority, added later.")

    assert rules.names()[rules.names().index("runbook") + 1] == "second"


def test_rule_names_are_unique() -> None:
    rules = ResumeRules()
    with pytest.raises(ValueError, match="epic_completed"):
        rules.add(lambda state, now: None, name="epic_completed")
    with pytest.raises(KeyError):
        rules.remove("no such rule")
    assert "epic_completed" in rules


def test_no_rule_applies() -> None:
    found = suggest(SessionStatus(), now=T0, rules=ResumeRules(builtin=False))
    assert (found.rule, found.priority, found.text) == ("none", 0, "No resume rule applies to this session.")


def test_suggestions_are_deterministic_and_json_ready(log: meshlog.EventLog) -> None:
    state = session(
        log,
        [
            ("epic_started", {"epic_id": "epic-004"}),
            ("deployment_started", {"service": "api"}),
            ("checkpoint_created", {"checkpoint_id": "cp-1"}),
        ],
    )
    for found in ResumeRules().evaluate(state, at(hours=5)):
        assert json.loads(json.dumps(found.details)) == found.details
    assert suggest(state, now=at(hours=5)) == suggest(state, now=at(hours=5))
    assert suggest(state, now=at(hours=5)).text != suggest(state, now=at(hours=9)).text


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        suggest(SessionStatus(), now=datetime(2026, 2, 3, 12, 0))


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=0), "0 s"),
        (timedelta(seconds=45), "45 s"),
        (timedelta(seconds=59, milliseconds=900), "59 s"),
        (timedelta(seconds=60), "1 min"),
        (timedelta(minutes=5, seconds=20), "5 min"),
        (timedelta(minutes=59, seconds=40), "1 h"),
        (timedelta(hours=2, minutes=10), "2 h"),
        (timedelta(hours=1, minutes=50), "2 h"),
        (timedelta(hours=47), "47 h"),
        (timedelta(hours=50), "2 d"),
        (timedelta(days=9, hours=13), "10 d"),
        (timedelta(seconds=-30), "0 s"),
    ],
)
def test_humanize(delta: timedelta, text: str) -> None:
    assert humanize(delta) == text


def test_ago() -> None:
    assert ago(T0, T0 + timedelta(hours=2)) == "2 h ago"
    assert ago(T0, T0 + timedelta(milliseconds=300)) == "just now"
    assert ago(T0 + timedelta(minutes=1), T0) == "just now"


def test_a_failed_epic_comes_before_an_older_open_one(log: meshlog.EventLog) -> None:
    state = session(
        log,
        [
            ("epic_started", {"epic_id": "epic-003"}),
            ("epic_started", {"epic_id": "epic-004"}),
            ("epic_failed", {"epic_id": "epic-004", "reason": "quota exceeded"}),
        ],
    )
    assert [s.rule for s in ResumeRules().evaluate(state, at(hours=1))] == [
        "epic_failed",
        "last_event_error",
        "epic_in_progress",
        "last_activity",
    ]
    assert suggest(state, now=at(hours=1)).text == (
        "epic-004 failed 40 min ago (quota exceeded): find the cause, fix it and restart the epic."
    )
