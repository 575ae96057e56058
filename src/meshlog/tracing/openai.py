"""Tracing for the ``openai`` client: Chat Completions and Responses, sync, async and streamed.

``meshlog.tracing.instrument(client)`` replaces ``client.chat.completions.create`` and ``client.responses.create``
on that client object (the stream helpers ``.stream(...)`` go through them too); nothing global is patched and
the client's return values are passed through unchanged (a stream is the SDK's own stream object, observed in
place).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from meshlog.tracing._llm import Accumulator, given, simple_params, usage_into, wrap_method
from meshlog.tracing.semconv import LlmRequest, LlmResult, message_stats

__all__ = ["ChatAccumulator", "ResponsesAccumulator", "chat_result", "instrument_openai", "responses_result"]

_CHAT_SKIP: Final = frozenset(
    {"messages", "tools", "functions", "model", "stream_options", "metadata", "timeout", "stream"}
)
_RESPONSES_SKIP: Final = frozenset(
    {"input", "instructions", "tools", "model", "metadata", "timeout", "prompt", "stream"}
)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _list(value: Any) -> list[Any]:
    return list(value) if given(value) and isinstance(value, (list, tuple)) else []


class _ChatHooks:
    def __init__(self, provider: str = "openai") -> None:
        self.provider = provider

    def request(self, kwargs: dict[str, Any]) -> LlmRequest:
        messages = _list(kwargs.get("messages"))
        system, prompt, count, system_text = message_stats(messages)
        tools = _list(kwargs.get("tools")) or _list(kwargs.get("functions"))
        return LlmRequest(
            provider=self.provider,
            model=str(kwargs.get("model") or "unknown"),
            operation="chat",
            system_prompt_length=system,
            prompt_length=prompt,
            message_count=count,
            tool_count=len(tools),
            stream=kwargs.get("stream") is True,
            params=simple_params(kwargs, _CHAT_SKIP),
            system=system_text,
            prompt=[m for m in messages if _get(m, "role") not in ("system", "developer")],
        )

    def result(self, response: Any) -> LlmResult:
        return chat_result(response)

    def accumulator(self) -> Accumulator:
        return ChatAccumulator()

    def is_stream(self, response: Any) -> bool:
        return not hasattr(response, "choices") and hasattr(response, "_iterator")


def chat_result(response: Any) -> LlmResult:
    """An :class:`LlmResult` from a ``ChatCompletion`` (or LiteLLM's ``ModelResponse``)."""
    result = LlmResult(model=_get(response, "model"), response_id=_get(response, "id"))
    texts: list[str] = []
    for choice in _get(response, "choices") or []:
        reason = _get(choice, "finish_reason")
        if reason:
            result.finish_reasons.append(str(reason))
        message = _get(choice, "message")
        content = _get(message, "content")
        if isinstance(content, str):
            texts.append(content)
        for call in _get(message, "tool_calls") or []:
            function = _get(call, "function")
            name = _get(function, "name")
            if name:
                result.tool_calls.append(str(name))
    result.response_length = sum(len(t) for t in texts)
    result.response = "".join(texts)
    usage_into(result, _get(response, "usage"))
    return result


class ChatAccumulator:
    """Reads ``ChatCompletionChunk`` objects."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.response_id: str | None = None
        self.texts: list[str] = []
        self.tools: dict[tuple[int, int], str] = {}
        self.finish: dict[int, str] = {}
        self.usage: Any = None

    def add(self, chunk: Any) -> bool:
        self.model = _get(chunk, "model") or self.model
        self.response_id = _get(chunk, "id") or self.response_id
        for choice in _get(chunk, "choices") or []:
            index = _get(choice, "index") or 0
            delta = _get(choice, "delta")
            content = _get(delta, "content")
            if isinstance(content, str):
                self.texts.append(content)
            for call in _get(delta, "tool_calls") or []:
                name = _get(_get(call, "function"), "name")
                if name:
                    self.tools[(index, _get(call, "index") or 0)] = str(name)
            reason = _get(choice, "finish_reason")
            if reason:
                self.finish[index] = str(reason)
        usage = _get(chunk, "usage")
        if usage is not None:
            self.usage = usage
        return True

    def result(self) -> LlmResult:
        text = "".join(self.texts)
        result = LlmResult(
            model=self.model,
            response_id=self.response_id,
            finish_reasons=[self.finish[i] for i in sorted(self.finish)],
            response_length=len(text),
            tool_calls=[self.tools[k] for k in sorted(self.tools)],
            response=text,
        )
        usage_into(result, self.usage)
        return result


class _ResponsesHooks:
    def request(self, kwargs: dict[str, Any]) -> LlmRequest:
        prompt_input = kwargs.get("input")
        instructions = kwargs.get("instructions")
        system_text = instructions if isinstance(instructions, str) else None
        if isinstance(prompt_input, str):
            system, prompt, count = 0, len(prompt_input), 1
        else:
            items = [i for i in _list(prompt_input) if _get(i, "role") is not None or _get(i, "type") == "message"]
            system, prompt, count, from_messages = message_stats(items)
            system_text = system_text or from_messages
        if isinstance(instructions, str):
            system += len(instructions)
        return LlmRequest(
            provider="openai",
            model=str(kwargs.get("model") or "unknown"),
            operation="chat",
            system_prompt_length=system,
            prompt_length=prompt,
            message_count=count,
            tool_count=len(_list(kwargs.get("tools"))),
            stream=kwargs.get("stream") is True,
            params=simple_params(kwargs, _RESPONSES_SKIP),
            system=system_text,
            prompt=prompt_input if given(prompt_input) else None,
        )

    def result(self, response: Any) -> LlmResult:
        return responses_result(response)

    def accumulator(self) -> Accumulator:
        return ResponsesAccumulator()

    def is_stream(self, response: Any) -> bool:
        return not hasattr(response, "output") and hasattr(response, "_iterator")


def responses_result(response: Any) -> LlmResult:
    """An :class:`LlmResult` from a Responses API ``Response``."""
    result = LlmResult(model=_get(response, "model"), response_id=_get(response, "id"))
    texts: list[str] = []
    for item in _get(response, "output") or []:
        kind = _get(item, "type")
        if kind == "message":
            for part in _get(item, "content") or []:
                text = _get(part, "text")
                if isinstance(text, str):
                    texts.append(text)
        elif kind == "function_call" and _get(item, "name"):
            result.tool_calls.append(str(_get(item, "name")))
    status = _get(response, "status")
    if status == "completed":
        result.finish_reasons = ["tool_calls" if result.tool_calls else "stop"]
    elif status == "incomplete":
        reason = _get(_get(response, "incomplete_details"), "reason")
        result.finish_reasons = ["length" if reason == "max_output_tokens" else str(reason or "incomplete")]
    elif status:
        result.finish_reasons = [str(status)]
    result.response_length = sum(len(t) for t in texts)
    result.response = "".join(texts)
    usage_into(result, _get(response, "usage"))
    return result


class ResponsesAccumulator:
    """Reads Responses API stream events; the final ``response.completed`` event carries the whole response."""

    def __init__(self) -> None:
        self.final: Any = None
        self.texts: list[str] = []
        self.tools: list[str] = []
        self.model: str | None = None
        self.response_id: str | None = None

    def add(self, event: Any) -> bool:
        kind = _get(event, "type")
        if kind == "response.output_text.delta":
            delta = _get(event, "delta")
            if isinstance(delta, str):
                self.texts.append(delta)
        elif kind == "response.output_item.added":
            item = _get(event, "item")
            if _get(item, "type") == "function_call" and _get(item, "name"):
                self.tools.append(str(_get(item, "name")))
        elif kind in ("response.created", "response.in_progress"):
            response = _get(event, "response")
            self.model = _get(response, "model") or self.model
            self.response_id = _get(response, "id") or self.response_id
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self.final = _get(event, "response")
        return True

    def result(self) -> LlmResult:
        if self.final is not None:
            return responses_result(self.final)
        text = "".join(self.texts)
        return LlmResult(
            model=self.model,
            response_id=self.response_id,
            response_length=len(text),
            tool_calls=list(self.tools),
            response=text,
        )


def instrument_openai(client: Any) -> Any:
    """Trace ``client`` (an ``openai.OpenAI`` or ``openai.AsyncOpenAI``, or Azure's); returns it."""
    is_async = type(client).__name__.startswith("Async")
    chat = getattr(getattr(client, "chat", None), "completions", None)
    if chat is not None:
        wrap_method(chat, "create", _ChatHooks(), is_async=is_async)
    responses = getattr(client, "responses", None)
    if responses is not None and hasattr(responses, "create"):
        wrap_method(responses, "create", _ResponsesHooks(), is_async=is_async)
    return client


def chat_hooks(provider: str) -> _ChatHooks:
    """The Chat Completions hooks for an OpenAI-compatible client of ``provider`` (LiteLLM uses them)."""
    return _ChatHooks(provider)
