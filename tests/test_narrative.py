"""Narratives: what a run of agents did, as Markdown, with failures, retries, outcomes and user intent."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import meshlog
from meshlog.demo import write_demo
from meshlog.narrative import describe, format_duration, render_narrative

T0 = datetime(2026, 2, 3, 15, 20, tzinfo=UTC)
TRACE = "run-7"
TASK = "7-widget"
INTENT = {
    "problem_solved": "Track late payments",
    "pain_point": "Manually checking Stripe takes 30 min a day",
    "goal": "See failed payments automatically",
    "expected_outcome": "Dashboard shows failures within a minute",
}


@pytest.fixture
def log() -> Iterator[meshlog.EventLog]:
    log = meshlog.connect("memory://")
    yield log
    log.close()


class Run:
    """Emits events of one trace on a clock that starts at T0 (``occurred_at``)."""

    def __init__(self, log: meshlog.EventLog, trace_id: str | None = TRACE) -> None:
        self.log = log
        self.trace_id = trace_id

    def emit(
        self,
        type_: str,
        data: dict[str, Any],
        *,
        s: float,
        agent: str | None,
        task: str | None = None,
        parent: meshlog.RecordedEvent | None = None,
        **kwargs: Any,
    ) -> meshlog.RecordedEvent:
        return self.log.emit(
            type_,
            data,
            trace_id=self.trace_id,
            task_id=task,
            agent_id=agent,
            parent_id=parent.id if parent else None,
            occurred_at=T0 + timedelta(seconds=s),
            **kwargs,
        )


def write_widget_run(log: meshlog.EventLog) -> list[meshlog.RecordedEvent]:
    """A user asks for a widget; the builder's first LLM call times out, the task fails and is retried, the retry
    succeeds, and five minutes later the user records that it worked."""
    run = Run(log)
    request = run.emit(
        "user.request",
        {"request": "Show me failed Stripe payments", "user": "dana", "user_intent": INTENT},
        s=0,
        agent="orchestrator",
        metadata={"important": True},
    )
    provider = run.emit("provider.connected", {"provider": "stripe"}, s=0.5, agent="orchestrator", parent=request)
    dispatch = run.emit(
        "task.dispatched",
        {
            "assignee": "widget-builder",
            "title": "Build the failed-payments widget",
            "context": {"decision_context": "Stripe is the only provider connected", "related_events": [provider.id]},
        },
        s=1,
        agent="orchestrator",
        task=TASK,
        parent=request,
    )
    call = run.emit(
        "llm.call",
        {"model": "claude-sonnet", "purpose": "design the widget"},
        s=2,
        agent="widget-builder",
        task=TASK,
        parent=dispatch,
    )
    error = run.emit(
        "llm.error",
        {"model": "claude-sonnet", "error": "timeout", "message": "no response within 30 s", "duration_ms": 30_000},
        s=32,
        agent="widget-builder",
        task=TASK,
        parent=call,
    )
    failure = run.emit(
        "task.result.failure",
        {"status": "failed", "attempt": 1, "error": "llm.error: timeout"},
        s=32.1,
        agent="widget-builder",
        task=TASK,
        parent=error,
    )
    retry = run.emit(
        "task.retry",
        {"attempt": 2, "max_attempts": 3, "reason": "llm timeout", "backoff_ms": 2000},
        s=34.1,
        agent="orchestrator",
        task=TASK,
        parent=failure,
    )
    call2 = run.emit(
        "llm.call",
        {"model": "claude-sonnet", "purpose": "design the widget", "attempt": 2},
        s=34.3,
        agent="widget-builder",
        task=TASK,
        parent=retry,
    )
    run.emit(
        "llm.response",
        {
            "model": "claude-sonnet",
            "input_tokens": 1200,
            "output_tokens": 300,
            "duration_ms": 6000,
            "finish_reason": "stop",
        },
        s=40.3,
        agent="widget-builder",
        task=TASK,
        parent=call2,
    )
    widget = run.emit(
        "widget.created",
        {"widget_type": "stripe_failed_payments"},
        s=41,
        agent="widget-builder",
        task=TASK,
        parent=retry,
        metadata={"important": True},
    )
    run.emit(
        "task.result",
        {"status": "succeeded", "attempt": 2, "summary": "widget stripe_failed_payments created"},
        s=41.5,
        agent="widget-builder",
        task=TASK,
        parent=retry,
    )
    # An outcome, as meshlog records it: a later event, child of the event it is about, naming it in related.
    run.emit(
        "outcome.recorded",
        {"outcome": {"status": "success", "notes": "3 failed payments shown within 40 s"}},
        s=300,
        agent="dana",
        task=TASK,
        parent=widget,
        related=(widget.id,),
    )
    return list(log.query(trace_id=TRACE))


def test_a_run_with_a_failure_a_retry_an_outcome_and_user_intent(log: meshlog.EventLog) -> None:
    events = write_widget_run(log)
    text = render_narrative(events, now=T0 + timedelta(hours=1))
    lines = text.splitlines()

    assert lines[0] == "# Narrative of trace run-7"
    assert (
        "12 events by 3 agents (orchestrator, widget-builder, dana), from 2026-02-03 15:20:00 to 15:25:00 UTC "
        "(5 min 0 s); it ended 55 min ago."
    ) in lines
    assert 'Asked: "Show me failed Stripe payments" (dana).' in lines
    assert "2 LLM calls, 1,500 tokens; 1 failure (2 failed events), 1 recovered; 1 outcome recorded." in lines
    # who, when, what, why
    assert (
        '- `+0.0 s` 15:20:00 **orchestrator** `user.request` **important**: "Show me failed Stripe payments" (dana)'
    ) in lines
    why = (
        "Track late payments (pain point: Manually checking Stripe takes 30 min a day; goal: See failed payments "
        "automatically; expected: Dashboard shows failures within a minute)"
    )
    assert f"  - why: {why}" in lines
    assert f"Why: {why}." in lines
    # decision context and related events
    assert "  - decision: Stripe is the only provider connected" in lines
    assert "  - related: `provider.connected` (+0.5 s)" in lines
    # how long: a given duration_ms, and dispatch → result
    assert (
        "- `+40.3 s` 15:20:40 **widget-builder** `llm.response`: claude-sonnet, 1,500 tokens, stop; took 6.0 s"
    ) in lines
    assert lines[-1].startswith("1. ")
    # what failed, what followed, and what recovered
    failed_at = lines.index(
        "- `+32.0 s` 15:20:32 **widget-builder** `llm.error` **failed**: claude-sonnet: timeout: no response within "
        "30 s; took 30.0 s"
    )
    assert lines[failed_at + 1] == "  - then: `task.result.failure` (0.1 s later), `task.retry` (2.1 s later)"
    assert lines[failed_at + 2] == (
        "  - recovered 9.5 s later by widget-builder: `task.result` succeeded (attempt 2): widget "
        "stripe_failed_payments created"
    )
    assert "- `+34.1 s` 15:20:34 **orchestrator** `task.retry`: attempt 2 of 3, llm timeout, after 2.0 s" in lines
    # the outcome is folded into the event it is about, not told on its own
    created_at = lines.index(
        "- `+41.0 s` 15:20:41 **widget-builder** `widget.created` **important**: "
        '{"widget_type":"stripe_failed_payments"}'
    )
    assert lines[created_at + 1] == (
        "  - outcome: **success**: notes: 3 failed payments shown within 40 s (recorded 4 min 19 s later by dana)"
    )
    assert "`outcome.recorded`" not in text
    # the overview sections
    assert "| 7-widget | widget-builder | succeeded | 2 | 40.5 s | 2 |" in lines
    highlights = lines[lines.index("## Highlights") + 2 : lines.index("## Tasks") - 1]
    assert highlights == [
        '- `+0.0 s` **orchestrator** `user.request`: "Show me failed Stripe payments" (dana)',
        '- `+41.0 s` **widget-builder** `widget.created`: {"widget_type":"stripe_failed_payments"}',
    ]
    assert lines[lines.index("## Failures and what followed") + 2] == (
        f"1. `+32.0 s` **widget-builder** `llm.error` (#{events[4].position}): claude-sonnet: timeout: no response "
        "within 30 s; then `task.result.failure`, `task.retry`; recovered 9.5 s later by widget-builder: "
        "`task.result` succeeded (attempt 2): widget stripe_failed_payments created."
    )
    assert "## Still open" not in text
    assert text.endswith(".\n")


def test_the_order_of_the_input_does_not_matter(log: meshlog.EventLog) -> None:
    events = write_widget_run(log)
    assert render_narrative(list(reversed(events))) == render_narrative(events)
    assert render_narrative(events + events[:3]) == render_narrative(events)


def test_the_demo_run(log: meshlog.EventLog) -> None:
    summary = write_demo(log, run_id="abc123", started_at=T0)
    text = render_narrative(log.query(trace_id=summary.trace_id, limit=1000).events)
    lines = text.splitlines()

    assert lines[0] == "# Narrative of trace run-abc123"
    assert "6 LLM calls, 11,820 tokens; 1 failure (2 failed events), 1 recovered." in lines
    assert "| abc123-test | test-runner | succeeded | 2 | 1 min 7 s | 2 |" in lines
    assert "| abc123-deploy | deployer | succeeded | 1 | 2 min 14 s | 0 |" in lines
    assert (
        "- `+2 min 20 s` 15:22:19 **deployer** `deployment_completed`: api 1.42.0 to staging; took 1 min 3 s"
    ) in lines
    # The orchestrator works on three tasks, so its task events name the task.
    assert any(
        line.startswith("- `+6.2 s` 15:20:06 **orchestrator** (task abc123-test) `task.dispatched`") for line in lines
    )
    failures = lines[lines.index("## Failures and what followed") + 2 :]
    assert len(failures) == 1 and failures[0].startswith("1. `+50.6 s` **test-runner** `llm.error`")
    assert "recovered 23.0 s later by test-runner: `task.result` succeeded (attempt 2)" in failures[0]
    assert sum(1 for line in lines if line.startswith("- `")) == summary.events_written


def test_events_are_grouped_by_trace_then_by_stream(log: meshlog.EventLog) -> None:
    Run(log, "run-a").emit("task.progress", {"percent": 10, "message": "a"}, s=0, agent="x")
    Run(log, "run-b").emit("task.progress", {"percent": 20, "message": "b"}, s=1, agent="y")
    Run(log, None).emit("instance_heartbeat", {}, s=2, agent="z")
    Run(log, "run-a").emit("task.progress", {"percent": 30, "message": "c"}, s=3, agent="x")
    text = render_narrative(log.query().events)
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Timeline: trace run-a", "## Timeline: trace run-b", "## Timeline: stream agent:z"]
    section = text.split("## Timeline: trace run-a\n\n")[1].split("\n\n")[0].splitlines()
    assert section == [
        "- `+0.0 s` 15:20:00 **x** `task.progress`: 10% a",
        "- `+3.0 s` 15:20:03 **x** `task.progress`: 30% c",
    ]
    assert text.startswith("# Narrative of 4 events\n")


def test_a_failure_nobody_recovered_and_work_still_open(log: meshlog.EventLog) -> None:
    run = Run(log, "deploy-1")
    started = run.emit("deployment_started", {"service": "api", "version": "2.0.0"}, s=0, agent="deployer")
    run.emit("deployment_failed", {"service": "api", "error": "crash loop"}, s=90, agent="deployer", parent=started)
    run.emit("deployment_started", {"service": "web"}, s=100, agent="deployer")
    run.emit("llm.call", {"model": "gpt-4o", "purpose": "diagnose"}, s=110, agent="sre", task="t-9")
    run.emit("task.dispatched", {"assignee": "sre", "title": "Find the crash"}, s=111, agent="deployer", task="t-9")
    lines = render_narrative(log.query().events, now=T0 + timedelta(hours=2)).splitlines()

    assert (
        "- `+1 min 30 s` 15:21:30 **deployer** `deployment_failed` **failed**: api: crash loop; took 1 min 30 s"
    ) in lines
    assert "  - not recovered in this record" in lines
    still_open = lines[lines.index("## Still open") + 2 :]
    assert still_open == [
        "- `+1 min 40 s` **deployer** `deployment_started` (web) never finished, started 2 h ago.",
        "- `+1 min 50 s` **sre** `llm.call` (gpt-4o: diagnose) got no response, started 2 h ago.",
        "- `+1 min 51 s` **deployer** `task.dispatched` (to sre: Find the crash) has no result, started 2 h ago.",
    ]


def test_a_recovery_by_a_later_deployment_of_the_same_service(log: meshlog.EventLog) -> None:
    run = Run(log, "deploy-2")
    run.emit("deploy_start", {"service": "api"}, s=0, agent="deployer")
    run.emit("deploy_failed", {"service": "api", "error": "timeout"}, s=60, agent="deployer")
    run.emit("deploy_start", {"service": "web"}, s=70, agent="deployer")
    run.emit("deploy_complete", {"service": "web"}, s=80, agent="deployer")
    run.emit("deploy_start", {"service": "api"}, s=120, agent="deployer")
    run.emit("deploy_complete", {"service": "api", "duration_ms": 4500}, s=125, agent="deployer")
    lines = render_narrative(log.query().events).splitlines()
    assert "  - recovered 1 min 5 s later by deployer: `deploy_complete` api" in lines
    assert "- `+2 min 5 s` 15:22:05 **deployer** `deploy_complete`: api; took 4.5 s" in lines
    assert "- `+1 min 20 s` 15:21:20 **deployer** `deploy_complete`: web; took 10.0 s" in lines


def test_an_epic_session_without_agents_or_traces(log: meshlog.EventLog) -> None:
    stream = "instance:odin3-ps"
    steps: list[tuple[str, dict[str, Any]]] = [
        ("epic_started", {"epic_id": "epic-003", "feature_name": "authentication-oauth"}),
        ("test_passed", {"epic_id": "epic-003", "passed_count": 5, "test_count": 8, "coverage_percent": 87}),
        ("epic_completed", {"epic_id": "epic-003", "tests_passed": 45}),
        ("prd_updated", {"epic_id": "epic-003", "version": "1.4.0"}),
    ]
    for minutes, (type_, data) in enumerate(steps):
        log.emit(type_, data, stream=stream, occurred_at=T0 + timedelta(minutes=20 * minutes))
    lines = render_narrative(log.read_stream(stream), title="Session odin3-ps").splitlines()
    assert lines[0] == "# Session odin3-ps"
    assert lines[lines.index("## Timeline") + 2 :] == [
        "- `+0.0 s` 15:20:00 `epic_started`: epic-003: authentication-oauth",
        "- `+20 min 0 s` 15:40:00 `test_passed`: epic-003: 5 of 8 tests passed, coverage 87%",
        "- `+40 min 0 s` 16:00:00 `epic_completed`: epic-003: 45 tests passed; took 40 min 0 s",
        "- `+1 h 0 min` 16:20:00 `prd_updated`: epic-003 1.4.0",
    ]


def test_an_outcome_of_an_event_outside_the_narrative(log: meshlog.EventLog) -> None:
    original = log.emit("widget.created", {"widget_type": "jira"}, trace_id="old")
    log.emit(
        "outcome.recorded",
        {"outcome": {"status": "failure", "notes": "nobody used it"}},
        trace_id="new",
        parent_id=original.id,
        related=(original.id,),
        agent_id="dana",
    )
    lines = render_narrative(log.query(trace_id="new").events).splitlines()
    [line] = [line for line in lines if "`outcome.recorded`" in line]
    assert line.endswith("**dana** `outcome.recorded`: **failure**: notes: nobody used it")
    assert lines[lines.index(line) + 1] == f"  - about event {original.id}, not in this narrative"


def test_no_events() -> None:
    assert render_narrative([]) == "# Narrative\n\nNo events recorded.\n"
    assert render_narrative([], title="Run 9") == "# Run 9\n\nNo events recorded.\n"


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        render_narrative([], now=datetime(2026, 2, 3))


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0 ms"),
        (14, "14 ms"),
        (999.4, "999 ms"),
        (1000, "1.0 s"),
        (7300, "7.3 s"),
        (59_960, "1 min 0 s"),
        (281_000, "4 min 41 s"),
        (7_500_000, "2 h 5 min"),
        (50 * 3_600_000, "2 d 2 h"),
    ],
)
def test_format_duration(ms: float, text: str) -> None:
    assert format_duration(ms) == text


@pytest.mark.parametrize(
    ("type_", "data", "text"),
    [
        ("llm.call", {"model": "gpt-4o", "purpose": "plan", "attempt": 2}, "gpt-4o: plan (attempt 2)"),
        ("llm.call", {"attempt": 3}, "attempt 3"),
        (
            "llm.response",
            {"durationMs": 1500, "responseLength": 100, "finishReason": "stop", "usage": {"promptTokens": 10}},
            "10 tokens, stop",
        ),
        ("llm.error", {"model": "gpt-4o", "error": {"message": "rate limited"}}, "gpt-4o: rate limited"),
        ("tool.result", {"tool": "run_tests", "ok": False, "error": "exit 1"}, "run_tests: failed exit 1"),
        ("task.result.failure", {"success": False, "errorType": "timeout"}, "failed"),
        ("user_message", {"content": "implement   auth\nplease"}, '"implement auth please"'),
        ("commit", {"message": "feat: auth", "files_changed": 7, "hash": "a1b2c3d"}, 'a1b2c3d "feat: auth" (7 files)'),
        ("spawn", {"description": "Implement epic-003", "subagent": "haiku"}, "Implement epic-003 (haiku)"),
        ("deploy", {"service": "api", "port": 5100, "status": "success"}, "api: success"),
        ("validation_failed", {"epic_id": "epic-4"}, "epic-4: the tests failed"),
        ("checkpoint_created", {"checkpoint_id": "cp-7"}, "cp-7"),
        ("pr_created", {"title": "OAuth", "url": "https://example.test/pr/1"}, "OAuth https://example.test/pr/1"),
        ("custom.thing", {"a": 1, "user_intent": {"goal": "x"}}, '{"a":1}'),
        ("custom.thing", {}, ""),
        ("custom.thing", {"note": "x" * 200}, '{"note":"' + "x" * 150 + "…"),
    ],
)
def test_describe(log: meshlog.EventLog, type_: str, data: dict[str, Any], text: str) -> None:
    assert describe(log.emit(type_, data)) == text


def test_a_failed_llm_call_is_recovered_by_the_task_succeeding(log: meshlog.EventLog) -> None:
    run = Run(log, "run-8")
    call = run.emit("llm.call", {"model": "gpt-4o"}, s=0, agent="builder", task="8")
    error = run.emit("llm.error", {"model": "gpt-4o", "error": "timeout"}, s=30, agent="builder", task="8", parent=call)
    retry = run.emit("task.retry", {"attempt": 2}, s=32, agent="orchestrator", task="8", parent=error)
    run.emit("task.result", {"status": "succeeded", "attempt": 2}, s=40, agent="builder", task="8", parent=retry)
    lines = render_narrative(log.query().events).splitlines()
    assert "  - then: `task.retry` (2.0 s later)" in lines
    assert "  - recovered 10.0 s later by builder: `task.result` succeeded (attempt 2)" in lines


def test_outcomes_recorded_with_the_log_are_folded_in(log: meshlog.EventLog) -> None:
    deploy = log.emit("deployment_completed", {"service": "auth"}, trace_id="run-9", agent_id="deployer")
    log.record_outcome(deploy.id, {"status": "rolled_back", "reason": "token refresh fails"}, agent_id="sre")
    log.record_outcome(deploy.id, {"status": "healthy", "after": "hotfix 1.2.1"})
    lines = render_narrative(log.query(trace_id="run-9").events).splitlines()
    at = lines.index(next(line for line in lines if "`deployment_completed`" in line and line.startswith("- ")))
    assert lines[at + 1].startswith("  - outcome: **rolled_back**: reason: token refresh fails (recorded ")
    assert lines[at + 1].endswith(" later by sre)")
    assert lines[at + 2].startswith("  - outcome: **healthy**: after: hotfix 1.2.1 (recorded ")
    assert lines[at + 2].endswith(" later)")  # by the event's own agent: not repeated
    assert "2 outcomes recorded." in lines


def test_an_event_read_with_its_outcome(log: meshlog.EventLog) -> None:
    deploy = log.emit("deployment_completed", {"service": "auth"}, agent_id="deployer")
    log.record_outcome(deploy.id, {"status": "healthy"})
    lines = render_narrative([log.get(deploy.id, with_outcome=True)]).splitlines()
    assert lines[-1] == "  - outcome: **healthy**"


def test_the_narrative_shown_in_the_docs_is_what_the_example_renders() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "projections.md").read_text(encoding="utf-8")
    namespace: dict[str, Any] = {"__name__": "docs_projections"}
    for block in re.findall(r"^```python\n(.*?)^```", page, re.DOTALL | re.MULTILINE):
        exec(compile(block, "projections.md", "exec"), namespace)
        if "text" in namespace:
            break
    [shown] = re.findall(r"^`text` is:\n\n```markdown\n(.*?)^```", page, re.DOTALL | re.MULTILINE)
    assert namespace["text"] == shown
