"""The OTLP/HTTP receiver (POST /v1/traces) on a real meshlog server, and the OpenTelemetry span exporter.

The pydantic-ai test runs a real agent (its TestModel) with OpenTelemetry instrumentation exporting over
OTLP/HTTP (opentelemetry-exporter-otlp-proto-http) to the server.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import meshlog
import meshlog.tracing as tracing
from meshlog.tracing.spans import anchor_id
from server_helpers import running_server

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
ROOT_SPAN = bytes.fromhex("eee19b7ec3c1b174")
CHAT_SPAN = bytes.fromhex("eee19b7ec3c1b175")
TOOL_SPAN = bytes.fromhex("eee19b7ec3c1b176")
FAILED_SPAN = bytes.fromhex("eee19b7ec3c1b177")
T0 = 1_700_000_000_000_000_000


@pytest.fixture(params=["sqlite", "postgres"])
def server_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path / 'otlp.db'}"


@pytest.fixture
def server(server_store: str) -> Iterator[str]:
    with running_server(server_store, types=["agent-mesh"], validation="strict") as base:
        yield base


def attr(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        v = AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = AnyValue(int_value=value)
    elif isinstance(value, float):
        v = AnyValue(double_value=value)
    elif isinstance(value, list):
        v = AnyValue()
        v.array_value.values.extend(AnyValue(string_value=x) for x in value)
    else:
        v = AnyValue(string_value=str(value))
    return KeyValue(key=key, value=v)


def span(span_id: bytes, name: str, parent: bytes = b"", start: int = 0, end: int = 10, **attrs: Any) -> Span:
    s = Span(
        trace_id=TRACE,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=T0 + start * 1_000_000,
        end_time_unix_nano=T0 + end * 1_000_000,
    )
    s.attributes.extend(attr(k.replace("__", "."), v) for k, v in attrs.items())
    return s


def request_of(*spans: Span) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    resource = ResourceSpans()
    resource.resource.attributes.append(attr("service.name", "weather-service"))
    scope = ScopeSpans()
    scope.scope.name = "test"
    scope.spans.extend(spans)
    resource.scope_spans.append(scope)
    message.resource_spans.append(resource)
    return message


def agent_spans() -> list[Span]:
    """An agent run with a GenAI chat span (OpenTelemetry names), an OpenInference tool span and a failed call;
    children listed first, as exporters send them."""
    chat = span(
        CHAT_SPAN,
        "chat gpt-4o",
        ROOT_SPAN,
        1,
        5,
        gen_ai__operation__name="chat",
        gen_ai__provider__name="openai",
        gen_ai__request__model="gpt-4o",
        gen_ai__request__temperature=0.2,
        gen_ai__response__model="gpt-4o-2024",
        gen_ai__response__finish_reasons=["tool_calls"],
        gen_ai__usage__input_tokens=120,
        gen_ai__usage__output_tokens=30,
        gen_ai__usage__cache_read__input_tokens=100,
        gen_ai__input__messages=json.dumps(
            [
                {"role": "system", "parts": [{"type": "text", "content": "Be terse."}]},
                {"role": "user", "parts": [{"type": "text", "content": "Weather?"}]},
            ]
        ),
        gen_ai__output__messages=json.dumps(
            [{"role": "assistant", "parts": [{"type": "tool_call", "name": "get_weather", "id": "c1"}]}]
        ),
    )
    tool = span(
        TOOL_SPAN,
        "get_weather",
        ROOT_SPAN,
        6,
        7,
        openinference__span__kind="TOOL",
        tool__name="get_weather",
        input__value='{"city": "Paris"}',
        output__value="sunny",
    )
    failed = span(
        FAILED_SPAN,
        "llm",
        ROOT_SPAN,
        8,
        9,
        openinference__span__kind="LLM",
        llm__model_name="claude-x",
        llm__provider="anthropic",
        llm__token_count__prompt=12,
    )
    failed.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="overloaded"))
    failed_event = failed.events.add()
    failed_event.name = "exception"
    failed_event.attributes.append(attr("exception.type", "anthropic.InternalServerError"))
    root = span(ROOT_SPAN, "invoke_agent weather", b"", 0, 10, gen_ai__agent__name="weather-agent")
    return [chat, tool, failed, root]


def post(base: str, body: bytes, content_type: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/traces", content=body, headers={"content-type": content_type, **headers}, timeout=30)


def stored(url: str) -> list[meshlog.RecordedEvent]:
    with meshlog.connect(url) as log:
        return log.query(trace_id=TRACE.hex(), limit=1000).events


def test_protobuf_spans_become_events_once(server: str, server_store: str) -> None:
    body = request_of(*agent_spans()).SerializeToString()
    answer = post(server, body, "application/x-protobuf")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/x-protobuf"
    parsed = ExportTraceServiceResponse.FromString(answer.content)
    assert parsed.partial_success.rejected_spans == 0
    # OTLP clients resend: nothing is stored twice (and gzip is understood).
    again = post(server, gzip.compress(body), "application/x-protobuf", **{"content-encoding": "gzip"})
    assert again.status_code == 200
    events = stored(server_store)
    assert sorted(e.type for e in events) == sorted(
        ["span.start", "span.end", "llm.call", "llm.response", "tool.call", "tool.result", "llm.call", "llm.error"]
    )
    by_type = {e.type: e for e in events}
    root = by_type["span.start"]
    assert root.id == anchor_id(TRACE.hex(), ROOT_SPAN.hex()) and root.parent_id is None
    assert events[0] == root  # parents first, although the children came first
    call = next(e for e in events if e.type == "llm.call" and e.data["model"] == "gpt-4o")
    response = by_type["llm.response"]
    assert call.parent_id == root.id and response.parent_id == call.id and call.depth == 1
    assert {e.agent_id for e in events} == {"weather-agent"}
    assert {e.stream for e in events} == {f"trace:{TRACE.hex()}"}
    assert call.data == {
        "model": "gpt-4o",
        "provider": "openai",
        "operation": "chat",
        "system_prompt_length": len("Be terse."),
        "prompt_length": len("Weather?"),
        "message_count": 2,
        "tool_count": 0,
        "stream": False,
        "temperature": 0.2,
        "params": {"temperature": 0.2},
    }
    assert response.data == {
        "finish_reason": "tool_calls",
        "model": "gpt-4o-2024",
        "duration_ms": 4,
        "response_length": 0,
        "tool_call_count": 1,
        "tool_calls": ["get_weather"],
        "input_tokens": 120,
        "output_tokens": 30,
        "total_tokens": 150,
        "cached_input_tokens": 100,
    }
    assert call.metadata["attributes"]["gen_ai.request.model"] == "gpt-4o"
    assert call.metadata["otel"]["span_id"] == CHAT_SPAN.hex()
    assert call.metadata["otel"]["resource"] == {"service.name": "weather-service"}
    assert by_type["tool.call"].data == {"tool": "get_weather", "args": {"city": "Paris"}}
    assert by_type["tool.result"].data == {"tool": "get_weather", "ok": True, "duration_ms": 1, "result": "sunny"}
    error = by_type["llm.error"].data
    assert error["error_type"] == "anthropic.InternalServerError" and error["message"] == "overloaded"
    assert [e.data["model"] for e in events if e.type == "llm.call"] == ["gpt-4o", "claude-x"]
    assert by_type["span.end"].data == {"name": "invoke_agent weather", "ok": True, "duration_ms": 10}


def test_json_with_hex_ids_and_partial_success(server: str, server_store: str) -> None:
    from google.protobuf import json_format

    value = json_format.MessageToDict(request_of(*agent_spans()))
    for s in value["resourceSpans"][0]["scopeSpans"][0]["spans"]:  # OTLP/JSON ids are hex, not base64
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in s:
                s[key] = json_format.base64.b64decode(s[key]).hex()  # type: ignore[attr-defined]
    bad = {"traceId": "zz", "spanId": "eee19b7ec3c1b199", "name": "bad ids"}
    zero = {"traceId": "0" * 32, "spanId": "eee19b7ec3c1b198", "name": "zero trace"}
    value["resourceSpans"][0]["scopeSpans"][0]["spans"].extend([bad, zero])
    answer = httpx.post(f"{server}/v1/traces", json=value, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    partial = answer.json()["partialSuccess"]
    assert partial["rejectedSpans"] == 2 and "traceId" in partial["errorMessage"]
    assert len(stored(server_store)) == 8
    # The same spans over protobuf afterwards: the same events, nothing new.
    assert post(server, request_of(*agent_spans()).SerializeToString(), "application/x-protobuf").status_code == 200
    assert len(stored(server_store)) == 8


def test_bad_requests_are_refused_whole(server: str, server_store: str) -> None:
    assert post(server, b"\xff\x00garbage", "application/x-protobuf").status_code == 400
    assert post(server, b"{not json", "application/json").status_code == 400
    assert post(server, b"[]", "application/json").status_code == 400
    assert post(server, b"x", "text/plain").status_code == 415
    assert post(server, b"not gzip", "application/x-protobuf", **{"content-encoding": "gzip"}).status_code == 400
    assert stored(server_store) == []


def test_pydantic_ai_agent_over_otlp(server: str, server_store: str) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.capabilities.instrumentation import Instrumentation
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.test import TestModel

    provider = TracerProvider(resource=Resource.create({"service.name": "weather-service"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{server}/v1/traces", timeout=30)))
    agent = Agent(
        TestModel(),
        name="weather-agent",
        capabilities=[Instrumentation(settings=InstrumentationSettings(tracer_provider=provider))],
    )

    @agent.tool_plain
    def get_weather(city: str) -> str:
        return f"sunny in {city}"

    # asyncio.run closes its loop; run_sync would leave one for the garbage collector to warn about later.
    result = asyncio.run(agent.run("What is the weather?"))
    assert "sunny" in result.output
    provider.force_flush()
    provider.shutdown()
    with meshlog.connect(server_store) as log:
        events = log.query(limit=1000).events
    types = [e.type for e in events]
    assert types.count("llm.call") == 2 and types.count("llm.response") == 2
    assert types.count("tool.call") == 1 and types.count("tool.result") == 1
    assert types.count("span.start") == 1 and types.count("span.end") == 1
    assert len({e.trace_id for e in events}) == 1
    run = next(e for e in events if e.type == "span.start")
    assert run.data["name"] == "invoke_agent weather-agent"
    calls = [e for e in events if e.type == "llm.call"]
    assert all(c.parent_id == run.id and c.data["model"] == "test" for c in calls)
    assert {e.agent_id for e in events} == {"weather-agent"}
    responses = [e for e in events if e.type == "llm.response"]
    assert all(r.data["input_tokens"] > 0 and r.data["output_tokens"] > 0 for r in responses)
    assert sorted(len(r.data.get("tool_calls", [])) for r in responses) == [0, 1]
    tool = next(e for e in events if e.type == "tool.call")
    assert tool.data["tool"] == "get_weather" and tool.parent_id == run.id
    assert next(e for e in events if e.type == "tool.result").data["result"].startswith("sunny in")


def test_exporter_writes_spans_into_a_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'exported.db'}"
    exporter = tracing.exporter(url, spool=False)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("plan", attributes={"meshlog.task_id": "42"}):
        with tracer.start_as_current_span(
            "chat m", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
        ) as chat:
            chat.set_attribute("gen_ai.usage.input_tokens", 3)
            chat.set_attribute("gen_ai.response.finish_reasons", ["stop"])
        exporter.export([])  # an empty batch is fine
    provider.force_flush()
    provider.shutdown()
    with meshlog.connect(url) as log:
        events = log.query(limit=100).events
    assert sorted(e.type for e in events) == ["llm.call", "llm.response", "span.end", "span.start"]
    start = next(e for e in events if e.type == "span.start")
    call = next(e for e in events if e.type == "llm.call")
    assert call.parent_id == start.id and start.task_id == "42"  # the child was exported before its parent
    assert next(e for e in events if e.type == "llm.response").data["input_tokens"] == 3
