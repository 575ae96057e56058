"""meshlog.waterfall: a trace's events as spans, from the demo run and from what the tracing wrappers write."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest

import meshlog
import meshlog.tracing as tracing
from fake_llm import TEXT, USAGE, FakeLlmServer, fake_llm_server
from meshlog import RecordedEvent
from meshlog.demo import write_demo
from meshlog.waterfall import Span, build_waterfall

MESSAGES: list[Any] = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Say hello."}]
SPAN_FIELDS = {
    "id", "end_id", "kind", "type", "name", "agent_id", "task_id", "stream", "position", "start", "end", "offset_ms",
    "duration_ms", "depth", "parent_span_id", "status", "model", "input_tokens", "output_tokens", "total_tokens",
    "finish_reason", "error", "error_type", "prompt", "response",
}  # fmt: skip


def trace_events(log: meshlog.EventLog, trace_id: str) -> list[RecordedEvent]:
    return list(log.query(trace_id=trace_id, limit=1000))


def by_name(spans: tuple[Span, ...], kind: str) -> list[str]:
    return [s.name for s in spans if s.kind == kind]


# -- the demo run -------------------------------------------------------------------------------------------------
def test_the_demo_run_as_spans() -> None:
    log = meshlog.connect("memory://")
    summary = write_demo(log, started_at=datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    events = trace_events(log, summary.trace_id)
    waterfall = build_waterfall(reversed(events))  # any order in, the same spans out
    spans = waterfall.spans
    pairs = sum(1 for e in events if e.type in ("llm.call", "tool.call"))
    assert waterfall.event_count == len(events) == summary.events_written
    assert len(spans) == len(events) - pairs
    assert all(set(s.to_dict()) == SPAN_FIELDS for s in spans)
    assert [(s.start, s.position) for s in spans] == sorted((s.start, s.position) for s in spans)
    assert waterfall.start == datetime(2026, 3, 1, 9, 0, tzinfo=UTC) == spans[0].start
    assert spans[0].offset_ms == 0 and spans[0].type == "user.request" and spans[0].depth == 0
    assert waterfall.end == max(s.end or s.start for s in spans)

    llm = [s for s in spans if s.kind == "llm"]
    assert len(llm) == summary.llm_calls
    assert sum(s.total_tokens or 0 for s in llm) == summary.llm_tokens
    plan = llm[0]
    assert (plan.name, plan.model, plan.status, plan.finish_reason) == ("gpt-4o", "gpt-4o", "ok", "stop")
    assert (plan.input_tokens, plan.output_tokens, plan.total_tokens) == (912, 388, 1300)
    assert (plan.offset_ms, plan.duration_ms) == (400.0, 5650.0)
    assert plan.end == plan.start + timedelta(milliseconds=5650)
    assert plan.parent_span_id == spans[0].id and plan.depth == 1
    response = next(e for e in events if e.parent_id == plan.id)
    assert plan.end_id == response.id and response.type == "llm.response"

    (timeout,) = [s for s in llm if s.status == "error"]
    assert (timeout.error, timeout.error_type, timeout.duration_ms) == ("no response within 30 s", "timeout", 30000.0)
    assert timeout.total_tokens is None and timeout.agent_id == "test-runner"

    tools = [s for s in spans if s.kind == "tool"]
    assert by_name(spans, "tool") == ["read_file", "write_file", "edit_file", "write_file", "run_tests", "rollout"]
    assert all(s.status == "ok" and s.end_id is not None and s.duration_ms is not None for s in tools)
    rollout = tools[-1]
    assert rollout.duration_ms == 48_000.0 and rollout.task_id is not None and rollout.stream.startswith("task:")
    # A tool called after an LLM answer hangs under that LLM call's span (its start's parent is the response).
    read_file = tools[0]
    parent = next(s for s in spans if s.id == read_file.parent_span_id)
    assert parent.kind == "llm" and read_file.depth == parent.depth + 1

    markers = [s for s in spans if s.kind == "event"]
    assert all(s.duration_ms == 0 and s.end == s.start and s.end_id is None for s in markers)
    assert {s.name for s in markers} >= {"task.progress", "task.dispatched", "plan.created", "epic_completed"}
    (failure,) = [s for s in markers if s.status == "error"]
    assert failure.type == "task.result.failure" and failure.error == "llm.error: timeout"
    assert failure.parent_span_id == timeout.id
    ids = {s.id for s in spans}
    assert all(s.parent_span_id in ids for s in spans if s.parent_span_id is not None)
    assert all(
        s.depth == next(p.depth for p in spans if p.id == s.parent_span_id) + 1 for s in spans if s.parent_span_id
    )


def test_a_truncated_trace_leaves_spans_open() -> None:
    log = meshlog.connect("memory://")
    summary = write_demo(log)
    events = trace_events(log, summary.trace_id)
    cut = next(i for i, e in enumerate(events) if e.type == "llm.call") + 1
    waterfall = build_waterfall(events[:cut])
    open_span = waterfall.spans[-1]
    assert (open_span.kind, open_span.status, open_span.end, open_span.end_id) == ("llm", "open", None, None)
    assert open_span.duration_ms is None and open_span.model == "gpt-4o"


def test_end_events_without_their_start_and_second_ends_are_markers() -> None:
    log = meshlog.connect("memory://")
    call = log.emit("tool.call", {"tool": "grep"}, trace_id="t")
    first = log.emit("tool.result", {"tool": "grep", "ok": False, "error": "no match"}, trace_id="t", parent_id=call.id)
    again = log.emit("tool.result", {"tool": "grep", "ok": True}, trace_id="t", parent_id=call.id)
    spans = build_waterfall(trace_events(log, "t")[1:]).spans  # the call left out
    assert [(s.kind, s.id) for s in spans] == [("event", first.id), ("event", again.id)]
    spans = build_waterfall(trace_events(log, "t")).spans
    assert [(s.kind, s.id, s.end_id, s.status, s.error) for s in spans] == [
        ("tool", call.id, first.id, "error", "no match"),
        ("event", again.id, None, "ok", None),
    ]
    assert spans[1].parent_span_id == call.id and spans[1].depth == 1


def test_a_parent_cycle_through_external_parents_is_cut() -> None:
    log = meshlog.connect("memory://")
    a, b = meshlog.events.uuid7(), meshlog.events.uuid7()
    log.emit("span.start", {"name": "a"}, id=a, parent_id=b, external_parent=True, trace_id="c")
    log.emit("span.start", {"name": "b"}, id=b, parent_id=a, trace_id="c")
    spans = build_waterfall(trace_events(log, "c")).spans
    assert {s.status for s in spans} == {"open"}
    (root,) = [s for s in spans if s.parent_span_id is None]
    (child,) = [s for s in spans if s.parent_span_id is not None]
    assert (root.depth, child.depth, child.parent_span_id) == (0, 1, root.id)


def test_no_events_no_spans() -> None:
    waterfall = build_waterfall([])
    assert (waterfall.spans, waterfall.start, waterfall.end, waterfall.event_count) == ((), None, None, 0)


# -- what the tracing wrappers write ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLlmServer]:
    with fake_llm_server() as server:
        yield server


@pytest.fixture
def log() -> Iterator[meshlog.EventLog]:
    opened = meshlog.connect("memory://")
    tracing.configure(log=opened, spool=False, log_full_payload=True)
    try:
        yield opened
    finally:
        tracing.shutdown()
        opened.close()


def traced_spans(log: meshlog.EventLog) -> tuple[Span, ...]:
    assert tracing.flush(30)
    events = list(log.query(limit=1000))
    traces = {e.trace_id for e in events}
    assert len(traces) == 1
    return build_waterfall(events).spans


def test_tracing_wrappers_output(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    client = tracing.instrument(openai.OpenAI(base_url=llm.openai_url, api_key="test", max_retries=0))

    @meshlog.traced(name="lookup", tool=True)
    def lookup(city: str) -> dict[str, Any]:
        return {"city": city, "sky": "clear"}

    with meshlog.trace(task_id="7", agent_id="coder"), meshlog.span("answer"):
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        lookup("Oslo")
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="fake-error-429", messages=MESSAGES)
        stream = client.chat.completions.create(model="fake-long", messages=MESSAGES, stream=True)
        for i, _ in enumerate(stream):
            if i == 2:
                break
        stream.close()
        with pytest.raises(KeyError), meshlog.span("fails"):
            raise KeyError("missing")
    spans = traced_spans(log)
    assert [(s.kind, s.name, s.status) for s in spans] == [
        ("span", "answer", "ok"),
        ("llm", "gpt-test", "ok"),
        ("tool", "lookup", "ok"),
        ("llm", "fake-error-429", "error"),
        ("llm", "fake-long", "abandoned"),
        ("span", "fails", "error"),
    ]
    root, answer, tool, failed, abandoned, fails = spans
    assert root.depth == 0 and all(s.parent_span_id == root.id and s.depth == 1 for s in spans[1:])
    assert all((s.agent_id, s.task_id, s.stream) == ("coder", "7", "task:7") for s in spans)
    assert all(s.end is not None and s.duration_ms is not None and s.duration_ms >= 0 for s in spans)
    assert all(s.start >= root.start for s in spans) and spans[0] is root
    assert (answer.input_tokens, answer.output_tokens) == (USAGE["input"], USAGE["output"])
    assert answer.total_tokens == USAGE["input"] + USAGE["output"] and answer.finish_reason == "stop"
    assert answer.response == TEXT and answer.prompt is not None and "Say hello." in answer.prompt
    assert failed.error_type is not None and failed.error_type.endswith("RateLimitError")
    assert failed.error is not None and failed.input_tokens is None
    assert abandoned.finish_reason == "abandoned" and abandoned.response == "word0 word1 word2 "
    assert fails.error == "'missing'" and fails.error_type == "KeyError"
    assert tool.error is None and tool.end_id is not None


def test_a_stream_dropped_unread_is_abandoned(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    client = tracing.instrument(openai.OpenAI(base_url=llm.openai_url, api_key="test", max_retries=0))
    stream = client.chat.completions.create(model="fake-long", messages=MESSAGES, stream=True)
    next(iter(stream))
    del stream
    gc.collect()
    (span,) = traced_spans(log)
    assert (span.kind, span.status, span.finish_reason) == ("llm", "abandoned", "abandoned")
