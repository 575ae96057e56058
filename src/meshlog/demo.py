"""A sample multi-agent run written into an event log, and a tour of what query and replay show of it.

``meshlog demo`` (and ``make demo``) run::

    log = meshlog.connect("sqlite:///meshlog-demo.db")
    summary = write_demo(log)
    show_demo(log, summary)

The run: a user asks the orchestrator to "Add rate limiting to the API". The orchestrator plans with an LLM and
dispatches three tasks in one atomic batch: api-coder implements the middleware, test-runner tests it, deployer
ships it to staging. Every agent calls an LLM (``llm.call``, then ``llm.response`` or ``llm.error``) and tools
(``tool.call``, ``tool.result``), reports ``task.progress`` and ends its task with ``task.result``.
test-runner's first LLM call times out, so its first attempt ends in ``task.result.failure``; the orchestrator
emits ``task.retry`` and the second attempt succeeds. deployer emits ``deployment_started`` and
``deployment_completed``, and the orchestrator closes the run with ``epic_completed``.

Correlation: one ``trace_id`` for the run; a ``task_id`` per task, so each task has its own stream
``task:<task_id>`` (the orchestrator's own events, without task, go to ``trace:<trace_id>``); ``agent_id`` on
every event. ``parent_id`` links each event to its cause (a response to its call, a call to the dispatch or
retry, a dispatch to the plan, the plan to the request), so every event of the run has the request as
``root_id``. LLM events carry idempotency keys, as an agent that may resend them after a network error would.

Everything except ids and timestamps is the same on every run: the events, their order, their data. Each run
gets a fresh run id (part of the trace id, the task ids and the idempotency keys), so runs accumulate side by
side in one store. ``occurred_at`` places the run on a timeline of a few minutes that ends before it is written.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from meshlog.cli import Console, compact_json
from meshlog.events import ANY, NO_STREAM, ExpectedVersion, NewEvent, RecordedEvent, StreamInfo, uuid7
from meshlog.log import EventLog
from meshlog.projections import Replay
from meshlog.query import Page

__all__ = [
    "REQUEST",
    "DemoReport",
    "DemoSummary",
    "DemoTask",
    "TaskStatus",
    "TaskStatusProjection",
    "show_demo",
    "write_demo",
]

REQUEST: Final = "Add rate limiting to the API"
ORCHESTRATOR: Final = "orchestrator"
FAILURE_TYPES: Final = ("llm.error", "task.result.failure")
RUN_SPAN: Final = timedelta(minutes=5)
"""How long before the write the simulated run starts (it lasts less than this)."""


@dataclass(frozen=True, slots=True)
class DemoTask:
    """One task of the run: ``key`` is the same on every run, ``task_id`` is the run's own."""

    key: str
    task_id: str
    agent_id: str
    title: str

    @property
    def stream(self) -> str:
        return f"task:{self.task_id}"


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What :func:`write_demo` wrote."""

    run_id: str
    trace_id: str
    request: str
    tasks: tuple[DemoTask, ...]
    events: tuple[RecordedEvent, ...]
    """Every event of the run as recorded, in position order."""
    url: str

    def task(self, key: str) -> DemoTask:
        """The task with this key: ``implement``, ``test`` or ``deploy``."""
        for task in self.tasks:
            if task.key == key:
                return task
        raise KeyError(key)

    @property
    def retried_task(self) -> DemoTask:
        """The task whose first attempt fails and whose retry succeeds."""
        return self.task("test")

    @property
    def events_written(self) -> int:
        return len(self.events)

    @property
    def llm_calls(self) -> int:
        return sum(1 for e in self.events if e.type == "llm.call")

    @property
    def llm_tokens(self) -> int:
        return sum(int(e.data["total_tokens"]) for e in self.events if e.type == "llm.response")

    @property
    def agents(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.agent_id for e in self.events if e.agent_id))

    @property
    def streams(self) -> tuple[str, ...]:
        """The streams the run wrote to, in order of their first event."""
        return tuple(dict.fromkeys(e.stream for e in self.events))


# -- writing ---------------------------------------------------------------------------------------------------
class _Run:
    """Emits the run's events on a simulated clock (``occurred_at``) and keeps what was recorded."""

    def __init__(self, log: EventLog, run_id: str, started_at: datetime) -> None:
        self.log = log
        self.trace_id = f"run-{run_id}"
        self.started_at = started_at
        self.elapsed_ms = 0
        self.events: list[RecordedEvent] = []
        self._llm_calls = 0

    def wait(self, ms: int) -> None:
        self.elapsed_ms += ms

    def now(self) -> datetime:
        return self.started_at + timedelta(milliseconds=self.elapsed_ms)

    def new(
        self,
        type_: str,
        data: Mapping[str, Any],
        *,
        agent: str,
        task: DemoTask | None = None,
        parent: str | None = None,
        key: str | None = None,
    ) -> NewEvent:
        """An event at the current simulated time (with its id chosen here, so later events of the same
        batch can name it as parent)."""
        return NewEvent(
            type=type_,
            data=data,
            trace_id=self.trace_id,
            task_id=task.task_id if task else None,
            agent_id=agent,
            parent_id=parent,
            idempotency_key=key,
            occurred_at=self.now(),
            id=uuid7(),
        )

    def emit(
        self,
        type_: str,
        data: Mapping[str, Any],
        *,
        agent: str,
        task: DemoTask | None = None,
        parent: str | None = None,
        key: str | None = None,
        expected_version: ExpectedVersion = ANY,
    ) -> RecordedEvent:
        event = self.log.emit(
            type_,
            data,
            trace_id=self.trace_id,
            task_id=task.task_id if task else None,
            agent_id=agent,
            parent_id=parent,
            idempotency_key=key,
            occurred_at=self.now(),
            expected_version=expected_version,
        )
        self.events.append(event)
        return event

    def batch(self, events: Sequence[NewEvent]) -> list[RecordedEvent]:
        recorded = self.log.emit_batch(events)
        self.events.extend(recorded)
        return recorded

    def _llm_key(self) -> str:
        self._llm_calls += 1
        return f"{self.trace_id}:llm-{self._llm_calls}"

    def llm(
        self,
        task: DemoTask | None,
        agent: str,
        *,
        parent: str,
        model: str,
        purpose: str,
        input_tokens: int,
        output_tokens: int,
        duration_ms: int,
        finish_reason: str,
        attempt: int = 1,
        tool_calls: Sequence[str] = (),
    ) -> RecordedEvent:
        """An ``llm.call`` and, ``duration_ms`` later, its ``llm.response``; returns the response."""
        key = self._llm_key()
        call = self.emit(
            "llm.call",
            {"model": model, "purpose": purpose, "attempt": attempt, "max_tokens": 4096},
            agent=agent,
            task=task,
            parent=parent,
            key=f"{key}:call",
        )
        self.wait(duration_ms)
        response: dict[str, Any] = {
            "model": model,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "duration_ms": duration_ms,
            "finish_reason": finish_reason,
        }
        if tool_calls:
            response["tool_calls"] = list(tool_calls)
        return self.emit("llm.response", response, agent=agent, task=task, parent=call.id, key=f"{key}:response")

    def llm_timeout(
        self, task: DemoTask, agent: str, *, parent: str, model: str, purpose: str, timeout_ms: int
    ) -> RecordedEvent:
        """An ``llm.call`` that gets no answer, and ``timeout_ms`` later its ``llm.error``; returns the error."""
        key = self._llm_key()
        call = self.emit(
            "llm.call",
            {"model": model, "purpose": purpose, "attempt": 1, "max_tokens": 4096, "timeout_ms": timeout_ms},
            agent=agent,
            task=task,
            parent=parent,
            key=f"{key}:call",
        )
        self.wait(timeout_ms)
        return self.emit(
            "llm.error",
            {
                "model": model,
                "error": "timeout",
                "message": f"no response within {timeout_ms // 1000} s",
                "duration_ms": timeout_ms,
                "retryable": True,
            },
            agent=agent,
            task=task,
            parent=call.id,
            key=f"{key}:error",
        )

    def tool(
        self,
        task: DemoTask,
        agent: str,
        *,
        parent: str,
        tool: str,
        args: Mapping[str, Any],
        result: Mapping[str, Any],
        duration_ms: int,
    ) -> RecordedEvent:
        """A ``tool.call`` and its ``tool.result``, written together when the tool returns; returns the result."""
        call = self.new("tool.call", {"tool": tool, "args": dict(args)}, agent=agent, task=task, parent=parent)
        self.wait(duration_ms)
        done = self.new(
            "tool.result",
            {"tool": tool, "ok": True, "duration_ms": duration_ms, "result": dict(result)},
            agent=agent,
            task=task,
            parent=call.id,
        )
        return self.batch([call, done])[1]

    def progress(self, task: DemoTask, *, parent: str, percent: int, message: str) -> RecordedEvent:
        return self.emit(
            "task.progress", {"percent": percent, "message": message}, agent=task.agent_id, task=task, parent=parent
        )


def write_demo(log: EventLog, *, run_id: str | None = None, started_at: datetime | None = None) -> DemoSummary:
    """Write one run of the sample (see the module's docstring) and return what was written.

    ``run_id`` defaults to 6 random hex digits; a run id already written to this store makes the first emit
    fail with ``WrongExpectedVersion`` (its trace stream must be new), before anything is written.
    ``started_at`` is the simulated start (default: 5 minutes ago).
    """
    run_id = run_id or uuid.uuid4().hex[:6]
    run = _Run(log, run_id, started_at or datetime.now(UTC) - RUN_SPAN)
    implement = DemoTask(
        "implement", f"{run_id}-implement", "api-coder", "Implement token-bucket rate limiting middleware"
    )
    test = DemoTask("test", f"{run_id}-test", "test-runner", "Write and run tests for the rate limiter")
    deploy = DemoTask("deploy", f"{run_id}-deploy", "deployer", "Deploy the API to staging")
    tasks = (implement, test, deploy)

    # The request arrives; the orchestrator plans, then dispatches every task in one atomic batch.
    request = run.emit(
        "user.request",
        {"request": REQUEST, "user": "dana", "channel": "chat"},
        agent=ORCHESTRATOR,
        expected_version=NO_STREAM,
    )
    run.wait(400)
    plan_response = run.llm(
        None,
        ORCHESTRATOR,
        parent=request.id,
        model="gpt-4o",
        purpose="plan the work",
        input_tokens=912,
        output_tokens=388,
        duration_ms=5650,
        finish_reason="stop",
    )
    run.wait(200)
    plan = run.new(
        "plan.created",
        {"request": REQUEST, "tasks": [t.key for t in tasks], "agents": [t.agent_id for t in tasks]},
        agent=ORCHESTRATOR,
        parent=plan_response.id,
    )
    depends_on = {"implement": [], "test": ["implement"], "deploy": ["test"]}
    capability = {"implement": "code", "test": "testing", "deploy": "deployment"}
    dispatches = [
        run.new(
            "task.dispatched",
            {
                "title": t.title,
                "assignee": t.agent_id,
                "capability": capability[t.key],
                "depends_on": depends_on[t.key],
                "attempt": 1,
            },
            agent=ORCHESTRATOR,
            task=t,
            parent=plan.id,
        )
        for t in tasks
    ]
    dispatched = dict(zip((t.key for t in tasks), run.batch([plan, *dispatches])[1:], strict=True))

    # api-coder implements the middleware.
    agent, task, parent = implement.agent_id, implement, dispatched["implement"].id
    run.wait(300)
    response = run.llm(
        task,
        agent,
        parent=parent,
        model="gpt-4o",
        purpose="design the rate limiting middleware",
        input_tokens=1840,
        output_tokens=620,
        duration_ms=7300,
        finish_reason="tool_calls",
        tool_calls=["read_file", "write_file"],
    )
    run.wait(100)
    run.tool(
        task,
        agent,
        parent=response.id,
        tool="read_file",
        args={"path": "api/app.py"},
        result={"bytes": 4210},
        duration_ms=14,
    )
    run.wait(100)
    run.tool(
        task,
        agent,
        parent=response.id,
        tool="write_file",
        args={"path": "api/middleware/rate_limit.py"},
        result={"lines": 86},
        duration_ms=22,
    )
    run.wait(200)
    run.progress(task, parent=parent, percent=60, message="token-bucket middleware written")
    run.wait(300)
    response = run.llm(
        task,
        agent,
        parent=parent,
        model="gpt-4o",
        purpose="wire the middleware into the app",
        input_tokens=2960,
        output_tokens=410,
        duration_ms=5200,
        finish_reason="tool_calls",
        tool_calls=["edit_file"],
    )
    run.wait(100)
    run.tool(
        task,
        agent,
        parent=response.id,
        tool="edit_file",
        args={"path": "api/app.py"},
        result={"lines_changed": 9},
        duration_ms=18,
    )
    run.wait(200)
    run.emit(
        "task.result",
        {
            "status": "succeeded",
            "attempt": 1,
            "summary": "token bucket per API key: 100 requests/min, 429 with Retry-After",
            "files_changed": 2,
        },
        agent=agent,
        task=task,
        parent=parent,
    )

    # test-runner: the first attempt times out and fails; the orchestrator retries; the second succeeds.
    agent, task, parent = test.agent_id, test, dispatched["test"].id
    run.wait(500)
    error = run.llm_timeout(
        task, agent, parent=parent, model="gpt-4o", purpose="write tests for the rate limiter", timeout_ms=30_000
    )
    run.wait(100)
    failure = run.emit(
        "task.result.failure",
        {"status": "failed", "attempt": 1, "error": "llm.error: timeout", "retryable": True},
        agent=agent,
        task=task,
        parent=error.id,
    )
    run.wait(2000)
    retry = run.emit(
        "task.retry",
        {"attempt": 2, "max_attempts": 3, "reason": "llm timeout", "backoff_ms": 2000},
        agent=ORCHESTRATOR,
        task=task,
        parent=failure.id,
    )
    run.wait(200)
    response = run.llm(
        task,
        agent,
        parent=retry.id,
        model="gpt-4o",
        purpose="write tests for the rate limiter",
        attempt=2,
        input_tokens=2210,
        output_tokens=1530,
        duration_ms=11_800,
        finish_reason="tool_calls",
        tool_calls=["write_file", "run_tests"],
    )
    run.wait(100)
    run.tool(
        task,
        agent,
        parent=response.id,
        tool="write_file",
        args={"path": "tests/test_rate_limit.py"},
        result={"lines": 142},
        duration_ms=20,
    )
    run.wait(100)
    run.tool(
        task,
        agent,
        parent=response.id,
        tool="run_tests",
        args={"command": "pytest tests/test_rate_limit.py"},
        result={"passed": 14, "failed": 0},
        duration_ms=8400,
    )
    run.wait(200)
    run.progress(task, parent=retry.id, percent=100, message="14 tests pass")
    run.wait(100)
    run.emit(
        "task.result",
        {
            "status": "succeeded",
            "attempt": 2,
            "summary": "14 tests cover the limit, the refill and the 429 response",
            "tests_passed": 14,
        },
        agent=agent,
        task=task,
        parent=retry.id,
    )

    # deployer ships it to staging.
    agent, task, parent = deploy.agent_id, deploy, dispatched["deploy"].id
    run.wait(400)
    response = run.llm(
        task,
        agent,
        parent=parent,
        model="gpt-4o-mini",
        purpose="plan the rollout",
        input_tokens=760,
        output_tokens=190,
        duration_ms=2100,
        finish_reason="stop",
    )
    release = {"environment": "staging", "service": "api", "version": "1.42.0"}
    run.wait(300)
    started = run.emit(
        "deployment_started",
        {**release, "strategy": "rolling", "replicas": 6},
        agent=agent,
        task=task,
        parent=response.id,
    )
    deploy_started_ms = run.elapsed_ms
    run.wait(100)
    run.tool(
        task, agent, parent=started.id, tool="rollout", args=release, result={"replicas_updated": 6}, duration_ms=48_000
    )
    run.wait(200)
    run.progress(task, parent=parent, percent=90, message="6 of 6 replicas updated, checking health")
    run.wait(15_000)
    run.emit(
        "deployment_completed",
        {**release, "healthy": True, "duration_ms": run.elapsed_ms - deploy_started_ms},
        agent=agent,
        task=task,
        parent=started.id,
    )
    run.wait(100)
    run.emit(
        "task.result",
        {"status": "succeeded", "attempt": 1, "summary": "api 1.42.0 is live on staging"},
        agent=agent,
        task=task,
        parent=parent,
    )

    # The orchestrator closes the epic.
    run.wait(300)
    run.emit(
        "epic_completed",
        {
            "request": REQUEST,
            "tasks": len(tasks),
            "succeeded": len(tasks),
            "failed_attempts": 1,
            "retries": 1,
            "llm_calls": sum(1 for e in run.events if e.type == "llm.call"),
            "llm_tokens": sum(int(e.data["total_tokens"]) for e in run.events if e.type == "llm.response"),
            "duration_ms": run.elapsed_ms,
        },
        agent=ORCHESTRATOR,
        parent=request.id,
    )
    return DemoSummary(
        run_id=run_id,
        trace_id=run.trace_id,
        request=REQUEST,
        tasks=tasks,
        events=tuple(run.events),
        url=log.url,
    )


# -- a projection ----------------------------------------------------------------------------------------------
@dataclass(slots=True)
class TaskStatus:
    """A task's state as :class:`TaskStatusProjection` folds it from the task's stream."""

    status: str = "pending"
    attempts: int = 0
    llm_calls: int = 0
    tokens: int = 0
    llm_ms: int = 0
    tool_calls: int = 0
    errors: list[str] = field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def duration_ms(self) -> int | None:
        """From dispatch to the last result (by ``occurred_at``), or None while unfinished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at) / timedelta(milliseconds=1))


class TaskStatusProjection:
    """Status, attempts, LLM calls, tokens and time of one task, from its ``task:<id>`` stream."""

    def initial(self) -> TaskStatus:
        return TaskStatus()

    def apply(self, state: TaskStatus, event: RecordedEvent) -> TaskStatus:
        at = event.occurred_at or event.recorded_at
        data = event.data
        if event.type == "task.dispatched":
            state.status, state.attempts, state.started_at = "dispatched", 1, at
        elif event.type == "task.retry":
            state.status, state.attempts = "retrying", int(data.get("attempt", state.attempts + 1))
        elif event.type == "llm.call":
            state.status = "running"
            state.llm_calls += 1
        elif event.type == "llm.response":
            state.tokens += int(data.get("total_tokens", 0))
            state.llm_ms += int(data.get("duration_ms", 0))
        elif event.type == "llm.error":
            state.llm_ms += int(data.get("duration_ms", 0))
            state.errors.append(f"llm.error: {data.get('error', 'unknown')}")
        elif event.type == "tool.call":
            state.tool_calls += 1
        elif event.type == "task.result.failure":
            state.status, state.finished_at = "failed", at
        elif event.type == "task.result":
            state.status, state.finished_at = str(data.get("status", "succeeded")), at
        return state


# -- showing ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DemoReport:
    """What :func:`show_demo` read back from the store (and printed)."""

    agent_id: str
    agent_events: Page
    """The agent's last 10 events in the run, newest first."""
    failures: list[RecordedEvent]
    replayed_stream: str
    replay: Replay[TaskStatus]
    streams: list[StreamInfo]
    total_events: int
    """Events of the run's trace, as the store counts them."""
    llm_tokens: int
    """Sum of ``total_tokens`` over the trace's ``llm.response`` events, read back by query."""


def show_demo(log: EventLog, summary: DemoSummary, console: Console | None = None) -> DemoReport:
    """Read the run back with query, replay and list_streams, print it, and return what was read."""
    out = console or Console()
    trace = summary.trace_id
    out.print(f'meshlog demo: "{summary.request}"', bold=True)
    out.fields(
        [
            ("store", summary.url),
            ("trace", trace),
            ("agents", ", ".join(summary.agents)),
            ("tasks", ", ".join(f"{t.task_id} ({t.agent_id})" for t in summary.tasks)),
            ("written", f"{summary.events_written} events"),
        ]
    )

    agent = summary.retried_task.agent_id
    recent = log.query(agent_id=agent, trace_id=trace, order="desc", limit=10)
    out.heading(
        f"The last 10 events of {agent}",
        f'log.query(agent_id="{agent}", trace_id="{trace}", order="desc", limit=10)',
    )
    out.table(
        ["position", "type", "task", "data"],
        [(e.position, e.type, e.task_id, describe(e)) for e in recent],
        numeric={0},
    )
    if recent.has_more:
        out.print("  ... and earlier ones: page.next_cursor fetches them", dim=True)

    failures = _all(log, trace_id=trace, types=FAILURE_TYPES)
    types = ", ".join(f'"{t}"' for t in FAILURE_TYPES)
    out.heading(f"Every failure in trace {trace}", f'log.query(trace_id="{trace}", types=[{types}])')
    out.table(
        ["position", "type", "agent", "task", "data"],
        [(e.position, e.type, e.agent_id, e.task_id, describe(e)) for e in failures],
        numeric={0},
    )

    stream = summary.retried_task.stream
    result = log.replay(stream, TaskStatusProjection())
    state = result.state
    out.heading(f"Replay of {stream}", f'log.replay("{stream}", TaskStatusProjection())')
    duration = "-" if state.duration_ms is None else f"{state.duration_ms / 1000:.1f} s (dispatch to result)"
    out.fields(
        [
            ("status", state.status),
            ("attempts", state.attempts),
            ("llm_calls", state.llm_calls),
            ("tokens", f"{state.tokens:,}"),
            ("llm_time", f"{state.llm_ms / 1000:.1f} s"),
            ("tool_calls", state.tool_calls),
            ("errors", ", ".join(state.errors) or "-"),
            ("duration", duration),
        ]
    )
    out.print(
        f"  replayed {result.events_replayed} events up to version {result.last_version} "
        f"in {result.duration_ms:.2f} ms",
        dim=True,
    )

    infos = [info for s in summary.streams for info in log.list_streams(prefix=s, limit=1) if info.stream == s]
    out.heading("The run's streams", "log.list_streams(prefix=...)")
    out.table(
        ["stream", "version", "last_position", "updated_at"],
        [(i.stream, i.version, i.last_position, i.updated_at) for i in infos],
        numeric={1, 2},
    )

    total = log.query(trace_id=trace, limit=1, total_count=True).total_count or 0
    tokens = sum(int(e.data.get("total_tokens", 0)) for e in _all(log, trace_id=trace, types=("llm.response",)))
    out.heading("Totals", f'log.query(trace_id="{trace}", total_count=True)')
    out.fields(
        [
            ("events written", summary.events_written),
            ("events in trace", total),
            ("LLM calls", summary.llm_calls),
            ("LLM tokens", f"{tokens:,}"),
        ]
    )

    out.heading("Explore")
    if summary.url.startswith("memory:"):
        out.print("  a memory:// store keeps nothing once the process ends; write the demo to a file to explore it")
    else:
        base = f"meshlog --url {summary.url}"
        if log.tenant != "default":
            base += f" --tenant {log.tenant}"
        for line in (
            f"{base} query --trace-id {trace}",
            f"{base} query --agent-id {agent} --order desc --limit 5",
            f"{base} replay {stream}",
            f"{base} streams",
        ):
            out.print(f"  {line}")
    return DemoReport(
        agent_id=agent,
        agent_events=recent,
        failures=failures,
        replayed_stream=stream,
        replay=result,
        streams=infos,
        total_events=total,
        llm_tokens=tokens,
    )


def describe(event: RecordedEvent) -> str:
    """A one-line summary of the demo's events (compact JSON for other types)."""
    d = event.data
    try:
        if event.type == "llm.call":
            return f"{d['model']}: {d['purpose']} (attempt {d['attempt']})"
        if event.type == "llm.response":
            return f"{d['model']}: {d['total_tokens']} tokens in {d['duration_ms']} ms, {d['finish_reason']}"
        if event.type == "llm.error":
            return f"{d['model']}: {d['error']} after {d['duration_ms']} ms"
        if event.type == "tool.call":
            return f"{d['tool']} {compact_json(d['args'])}"
        if event.type == "tool.result":
            return f"{d['tool']}: {'ok' if d['ok'] else 'failed'} in {d['duration_ms']} ms {compact_json(d['result'])}"
        if event.type == "task.progress":
            return f"{d['percent']}% {d['message']}"
        if event.type == "task.retry":
            return f"attempt {d['attempt']} of {d['max_attempts']} after {d['backoff_ms']} ms: {d['reason']}"
        if event.type in ("task.result", "task.result.failure"):
            return f"{d['status']} (attempt {d['attempt']}): {d.get('summary') or d.get('error')}"
        if event.type == "task.dispatched":
            return f"to {d['assignee']}: {d['title']}"
    except (KeyError, TypeError):
        pass
    return compact_json(d)


def _all(log: EventLog, *, trace_id: str, types: Sequence[str]) -> list[RecordedEvent]:
    """Every event of the trace with one of ``types``, page by page."""
    events: list[RecordedEvent] = []
    cursor: str | None = None
    while True:
        page = log.query(trace_id=trace_id, types=types, limit=1000, cursor=cursor)
        events.extend(page.events)
        if not page.has_more:
            return events
        cursor = page.next_cursor
