"""The real openai, anthropic and litellm clients, over HTTP to a local fake model server (tests/fake_llm.py),
traced into real stores. Nothing of the client libraries is mocked."""

from __future__ import annotations

import asyncio
import gc
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

import meshlog
import meshlog.tracing as tracing
from fake_llm import CHUNKS, TEXT, USAGE, FakeLlmServer, fake_llm_server

# LiteLLM reads its model prices from the package, never from the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MESSAGES: list[Any] = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Say hello."}]
TOOLS: list[Any] = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLlmServer]:
    with fake_llm_server() as server:
        yield server


@pytest.fixture
def log(tmp_path: Path) -> Iterator[meshlog.EventLog]:
    opened = meshlog.connect(f"sqlite:///{tmp_path / 'trace.db'}", types=["agent-mesh"], validation="strict")
    tracing.configure(log=opened, spool=False)
    try:
        yield opened
    finally:
        tracing.shutdown()
        opened.close()


def written(log: meshlog.EventLog) -> list[meshlog.RecordedEvent]:
    assert tracing.flush(30)
    assert tracing.stats().rejected == 0 and tracing.stats().errors == 0
    return log.query(limit=1000).events


def call_and_answer(log: meshlog.EventLog, answer: str = "llm.response") -> tuple[dict[str, Any], dict[str, Any]]:
    events = written(log)
    assert [e.type for e in events] == ["llm.call", answer]
    call, response = events
    assert response.parent_id == call.id and call.trace_id == response.trace_id and call.trace_id
    return call.data, response.data


def openai_client(llm: FakeLlmServer) -> openai.OpenAI:
    return tracing.instrument(openai.OpenAI(base_url=llm.openai_url, api_key="test", max_retries=0))


# -- OpenAI ---------------------------------------------------------------------------------------------------------
def test_openai_chat_in_every_store(llm: FakeLlmServer, store_url: str) -> None:
    log = meshlog.connect(store_url)
    tracing.configure(log=log, spool=False)
    try:
        client = openai_client(llm)
        with meshlog.trace(task_id="7", agent_id="coder"), meshlog.span("answer") as step:
            reply = client.chat.completions.create(model="gpt-test", messages=MESSAGES, temperature=0.2, seed=1)
        assert type(reply) is openai.types.chat.ChatCompletion and reply.choices[0].message.content == TEXT
        assert tracing.flush(30)
        start, call, response, end = log.query(limit=100).events
    finally:
        tracing.shutdown()
        log.close()
    assert (start.type, call.type, response.type, end.type) == ("span.start", "llm.call", "llm.response", "span.end")
    assert call.parent_id == step.id and response.parent_id == call.id
    assert (call.task_id, call.agent_id) == ("7", "coder")
    assert call.data == {
        "model": "gpt-test",
        "provider": "openai",
        "operation": "chat",
        "system_prompt_length": len("Be terse."),
        "prompt_length": len("Say hello."),
        "message_count": 2,
        "tool_count": 0,
        "stream": False,
        "temperature": 0.2,
        "params": {"temperature": 0.2, "seed": 1},
    }
    attributes = call.metadata["attributes"]
    assert attributes["gen_ai.request.model"] == "gpt-test" and attributes["gen_ai.request.temperature"] == 0.2
    assert attributes["gen_ai.operation.name"] == "chat" and attributes["gen_ai.provider.name"] == "openai"
    data = dict(response.data)
    assert data.pop("duration_ms") >= 0
    assert data == {
        "finish_reason": "stop",
        "model": "gpt-test",
        "response_id": "chatcmpl-fake",
        "response_length": len(TEXT),
        "tool_call_count": 0,
        "input_tokens": USAGE["input"],
        "output_tokens": USAGE["output"],
        "total_tokens": USAGE["input"] + USAGE["output"],
        "cached_input_tokens": USAGE["cached"],
        "reasoning_tokens": USAGE["reasoning"],
    }
    attributes = response.metadata["attributes"]
    assert attributes["gen_ai.usage.input_tokens"] == USAGE["input"]
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == USAGE["cached"]


def test_openai_tool_calls(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    openai_client(llm).chat.completions.create(model="fake-tools", messages=MESSAGES, tools=TOOLS)
    call, response = call_and_answer(log)
    assert call["tool_count"] == 1
    assert response["finish_reason"] == "tool_calls" and response["tool_calls"] == ["get_weather"]
    assert response["tool_call_count"] == 1


def test_openai_stream(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    stream = openai_client(llm).chat.completions.create(
        model="gpt-test", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert type(stream) is openai.Stream
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == TEXT
    call, response = call_and_answer(log)
    assert call["stream"] is True
    assert response["streamed"] is True and response["chunk_count"] == 7 and response["time_to_first_chunk_ms"] >= 0
    assert response["response_length"] == len(TEXT) and response["input_tokens"] == USAGE["input"]
    assert "abandoned" not in response


def test_openai_stream_closed_early_is_abandoned(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    tracing.configure(log=log, spool=False, log_full_payload=True)
    stream = openai_client(llm).chat.completions.create(model="fake-long", messages=MESSAGES, stream=True)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    _, response = call_and_answer(log)
    assert response["abandoned"] is True and response["finish_reason"] == "abandoned"
    assert response["chunk_count"] == 3 and response["response"] == "word0 word1 word2 "


def test_openai_stream_dropped_unread_is_abandoned(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    stream = openai_client(llm).chat.completions.create(model="fake-long", messages=MESSAGES, stream=True)
    next(iter(stream))
    del stream
    gc.collect()
    _, response = call_and_answer(log)
    assert response["abandoned"] is True and response["chunk_count"] == 1


@pytest.mark.parametrize(
    ("model", "kind", "cls"),
    [
        ("fake-error-429", "rate_limited", openai.RateLimitError),
        ("fake-error-500", "server_error", openai.InternalServerError),
    ],
)
def test_openai_errors(llm: FakeLlmServer, log: meshlog.EventLog, model: str, kind: str, cls: type) -> None:
    with pytest.raises(cls):
        openai_client(llm).chat.completions.create(model=model, messages=MESSAGES)
    _, error = call_and_answer(log, "llm.error")
    assert error["error"] == kind and error["status_code"] == int(model[-3:])
    assert error["error_type"] == f"openai.{cls.__name__}" and error["retryable"] is True
    assert "fake error" in error["message"] and error["duration_ms"] >= 0


def test_openai_unreachable_server_is_an_llm_error(log: meshlog.EventLog) -> None:
    from server_helpers import free_port

    client = tracing.instrument(
        openai.OpenAI(base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="t", max_retries=0)
    )
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    _, error = call_and_answer(log, "llm.error")
    assert error["error"] == "connection_error" and "status_code" not in error


def test_openai_responses_api(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    client = openai_client(llm)
    reply = client.responses.create(model="gpt-test", input="Say hello.", instructions="Be terse.")
    assert reply.output_text == TEXT
    call, response = call_and_answer(log)
    assert (call["prompt_length"], call["system_prompt_length"]) == (len("Say hello."), len("Be terse."))
    assert response["finish_reason"] == "stop" and response["response_length"] == len(TEXT)
    assert response["reasoning_tokens"] == USAGE["reasoning"]


def test_openai_responses_stream_with_tools(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    client = openai_client(llm)
    with client.responses.stream(model="fake-tools", input="Weather?") as stream:
        final = stream.get_final_response()
    assert final.output[0].type == "function_call"
    _, response = call_and_answer(log)
    assert response["streamed"] is True and response["tool_calls"] == ["get_weather"]
    assert response["finish_reason"] == "tool_calls" and response["input_tokens"] == USAGE["input"]


def test_openai_async_and_async_stream(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    async def main() -> str:
        client = tracing.instrument(openai.AsyncOpenAI(base_url=llm.openai_url, api_key="test", max_retries=0))
        async with meshlog.trace(agent_id="async-agent"):
            reply = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
            stream = await client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
            parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        await client.close()
        return (reply.choices[0].message.content or "") + "".join(parts)

    assert asyncio.run(main()) == TEXT + TEXT
    events = written(log)
    assert [e.type for e in events] == ["llm.call", "llm.response", "llm.call", "llm.response"]
    assert {e.agent_id for e in events} == {"async-agent"} and len({e.trace_id for e in events}) == 1
    assert events[3].data["streamed"] is True and events[3].parent_id == events[2].id


def test_full_payloads_go_through_the_redaction_hook(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    seen: list[str] = []

    def redact(kind: str, value: Any) -> Any:
        seen.append(kind)
        return "[redacted]" if kind == "system" else value

    tracing.configure(log=log, spool=False, log_full_payload=True, redact=redact)
    openai_client(llm).chat.completions.create(model="gpt-test", messages=MESSAGES)
    call, response = call_and_answer(log)
    assert call["system"] == "[redacted]" and "Say hello." in call["prompt"]
    assert response["response"] == TEXT
    assert seen == ["system", "prompt", "response"]


def test_the_call_is_recorded_as_it_was_made(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    # The writer thread summarizes the call later: appending to the messages, or rewriting one, right after it
    # must not show.
    tracing.configure(log=log, spool=False, log_full_payload=True)
    messages: list[Any] = [dict(message) for message in MESSAGES]
    reply = openai_client(llm).chat.completions.create(model="gpt-test", messages=messages)
    messages[-1]["content"] = "Say hello again, and again."
    messages.append({"role": "assistant", "content": reply.choices[0].message.content})
    messages.append({"role": "user", "content": "And again."})
    call, response = call_and_answer(log)
    assert call["message_count"] == 2 and call["prompt_length"] == len("Say hello.")
    assert "again" not in call["prompt"] and response["response"] == TEXT


def test_a_call_that_cannot_be_summarized_writes_nothing_and_is_counted(
    llm: FakeLlmServer, log: meshlog.EventLog
) -> None:
    class Message(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError("unreadable")

    messages: list[Any] = [Message(role="user", content="Hi")]
    reply = openai_client(llm).chat.completions.create(model="gpt-test", messages=messages)
    assert reply.choices[0].message.content == TEXT
    assert tracing.flush(30)
    assert log.query(limit=10).events == [] and tracing.stats().errors == 1


def test_untraced_without_a_store(llm: FakeLlmServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MESHLOG_URL", "DATABASE_URL", "PG_PRIMARY_URL"):
        monkeypatch.delenv(name, raising=False)
    tracing.configure()
    try:
        reply = openai_client(llm).chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert reply.choices[0].message.content == TEXT
        assert tracing.stats().enqueued == 0
    finally:
        tracing.shutdown()


# -- Anthropic ------------------------------------------------------------------------------------------------------
def anthropic_client(llm: FakeLlmServer) -> anthropic.Anthropic:
    return tracing.instrument(anthropic.Anthropic(base_url=llm.anthropic_url, api_key="test", max_retries=0))


ANTHROPIC_MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]


def test_anthropic_message(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    message = anthropic_client(llm).messages.create(
        model="claude-test", max_tokens=64, system="Be terse.", messages=ANTHROPIC_MESSAGES
    )
    assert type(message) is anthropic.types.Message
    call, response = call_and_answer(log)
    assert call["provider"] == "anthropic" and call["system_prompt_length"] == len("Be terse.")
    assert call["max_tokens"] == 64
    cached, written_tokens = USAGE["cached"], USAGE["cache_write"]
    assert response["finish_reason"] == "end_turn" and response["response_length"] == len(TEXT)
    assert response["input_tokens"] == USAGE["input"] + cached + written_tokens
    assert (response["cached_input_tokens"], response["cache_creation_input_tokens"]) == (cached, written_tokens)


def test_anthropic_tools_and_raw_stream(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    stream = anthropic_client(llm).messages.create(
        model="fake-tools", max_tokens=64, messages=ANTHROPIC_MESSAGES, stream=True
    )
    kinds = [event.type for event in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    _, response = call_and_answer(log)
    assert response["tool_calls"] == ["get_weather"] and response["finish_reason"] == "tool_use"
    assert response["chunk_count"] == len(kinds) and response["output_tokens"] == USAGE["output"]


def test_anthropic_stream_helper(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    with anthropic_client(llm).messages.stream(model="claude-test", max_tokens=64, messages=ANTHROPIC_MESSAGES) as s:
        assert "".join(s.text_stream) == TEXT
    call, response = call_and_answer(log)
    assert call["stream"] is True
    assert response["streamed"] is True and response["response_length"] == len(TEXT)
    # message_start, content_block_start, the deltas, content_block_stop, message_delta, message_stop: the SDK's
    # derived events (text …) are not counted
    assert response["chunk_count"] == 2 + len(CHUNKS) + 3


def test_anthropic_stream_helper_left_early(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    with anthropic_client(llm).messages.stream(model="fake-long", max_tokens=64, messages=ANTHROPIC_MESSAGES) as s:
        for _ in zip(range(3), s.text_stream, strict=False):
            pass
    _, response = call_and_answer(log)
    assert response["abandoned"] is True and 0 < response["response_length"] < 1000


def test_anthropic_error(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    with pytest.raises(anthropic.RateLimitError):
        anthropic_client(llm).messages.create(model="fake-error-429", max_tokens=8, messages=ANTHROPIC_MESSAGES)
    _, error = call_and_answer(log, "llm.error")
    assert error["error"] == "rate_limited" and error["error_type"] == "anthropic.RateLimitError"


def test_anthropic_async(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    async def main() -> str:
        client = tracing.instrument(anthropic.AsyncAnthropic(base_url=llm.anthropic_url, api_key="test", max_retries=0))
        message = await client.messages.create(model="claude-test", max_tokens=64, messages=ANTHROPIC_MESSAGES)
        async with client.messages.stream(model="claude-test", max_tokens=64, messages=ANTHROPIC_MESSAGES) as s:
            text = await s.get_final_text()
        await client.close()
        block = message.content[0]
        assert block.type == "text"
        return block.text + text

    assert asyncio.run(main()) == TEXT + TEXT
    events = written(log)
    assert [e.type for e in events] == ["llm.call", "llm.response", "llm.call", "llm.response"]
    assert events[3].data["streamed"] is True and events[3].data["response_length"] == len(TEXT)


# -- LiteLLM --------------------------------------------------------------------------------------------------------
# LiteLLM's own warnings (its pydantic models, event loops it leaves open), not meshlog's.
@pytest.mark.filterwarnings(
    "ignore::ResourceWarning",
    "ignore::pytest.PytestUnraisableExceptionWarning",
    "ignore:Item .* is using the `ReadOnly` qualifier:UserWarning",
    "ignore:Accessing the 'model_computed_fields' attribute on the instance is deprecated:DeprecationWarning",
    "ignore:Accessing the 'model_fields' attribute on the instance is deprecated:DeprecationWarning",
)
def test_litellm_sync_async_stream_and_error(llm: FakeLlmServer, log: meshlog.EventLog) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import litellm
    litellm.telemetry = False
    tracing.instrument(litellm)
    options: dict[str, Any] = {"api_base": llm.openai_url, "api_key": "test", "messages": MESSAGES}
    reply = litellm.completion(model="openai/gpt-test", **options)
    assert reply.choices[0].message.content == TEXT
    stream = litellm.completion(model="openai/gpt-test", stream=True, stream_options={"include_usage": True}, **options)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == TEXT

    async def main() -> None:
        await litellm.acompletion(model="openai/fake-tools", **options)
        astream = await litellm.acompletion(model="openai/gpt-test", stream=True, **options)
        async for _ in astream:
            pass

    asyncio.run(main())
    with pytest.raises(litellm.exceptions.InternalServerError):
        litellm.completion(model="openai/fake-error-500", num_retries=0, max_retries=0, **options)
    gc.collect()  # LiteLLM's own unclosed loops are reported here, under this test's filter
    events = written(log)
    assert [e.type for e in events] == ["llm.call", "llm.response"] * 4 + ["llm.call", "llm.error"]
    calls = events[0::2]
    assert {c.data["provider"] for c in calls} == {"openai"} and calls[0].data["model"] == "openai/gpt-test"
    assert "api_key" not in calls[0].data.get("params", {}) and "api_base" not in calls[0].data.get("params", {})
    assert events[1].data["input_tokens"] == USAGE["input"] and events[1].data["finish_reason"] == "stop"
    assert events[3].data["streamed"] is True and events[3].data["response_length"] == len(TEXT)
    assert events[5].data["tool_calls"] == ["get_weather"]
    assert events[7].data["streamed"] is True
    assert events[9].data["error"] == "server_error" and events[9].data["status_code"] == 500
