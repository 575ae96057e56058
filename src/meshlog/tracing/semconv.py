"""One shape for every LLM call, whether a client wrapper saw it or an OpenTelemetry span described it.

The wrappers (:mod:`meshlog.tracing.openai`, ``anthropic``, ``litellm``) fill an :class:`LlmRequest` and an
:class:`LlmResult` (or an :class:`LlmFailure`) from the client's own objects; the OTLP receiver and the span
exporter fill the same classes from span attributes (:func:`from_attributes`), reading the OpenTelemetry GenAI
conventions (``gen_ai.*``, current and older names) and OpenInference's (``llm.*``). Either way the events get
the same ``data`` fields (the ``agent-mesh`` catalogue's ``llm.call``, ``llm.response``, ``llm.error``) and the
GenAI attribute names in ``metadata["attributes"]``.

Token counts follow the GenAI conventions: ``input_tokens`` includes tokens read from or written to a
provider's prompt cache (``cached_input_tokens``, ``cache_creation_input_tokens``, reported apart as well), and
``output_tokens`` includes ``reasoning_tokens``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "GEN_AI_OPERATION",
    "GEN_AI_PROVIDER",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_SYSTEM",
    "LlmFailure",
    "LlmRequest",
    "LlmResult",
    "call_fields",
    "error_fields",
    "error_kind",
    "from_attributes",
    "is_llm_span",
    "is_tool_span",
    "json_safe",
    "message_stats",
    "response_fields",
    "text_length",
    "tool_fields",
]

GEN_AI_OPERATION: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER: Final = "gen_ai.provider.name"
GEN_AI_SYSTEM: Final = "gen_ai.system"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_CACHE_READ: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_CACHE_CREATION: Final = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_REASONING: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_TTFC: Final = "gen_ai.response.time_to_first_chunk"
ERROR_TYPE: Final = "error.type"

# gen_ai.request.<name> for these request parameters (the GenAI conventions' names).
_REQUEST_PARAMS: Final = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "stop_sequences",
    "choice.count",
)
_PARAM_ALIASES: Final = {
    "max_completion_tokens": "max_tokens",
    "max_output_tokens": "max_tokens",
    "stop": "stop_sequences",
    "n": "choice.count",
}
_MAX_TEXT: Final = 512


@dataclass(slots=True)
class LlmRequest:
    """What was asked of the model (the ``llm.call`` event)."""

    provider: str
    """``openai``, ``anthropic``, ``litellm`` ... (``gen_ai.provider.name``)."""
    model: str
    operation: str = "chat"
    """``chat``, ``text_completion``, ``generate_content`` ... (``gen_ai.operation.name``)."""
    system_prompt_length: int = 0
    prompt_length: int = 0
    message_count: int = 0
    tool_count: int = 0
    stream: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    """Request parameters other than the prompt and the tools (temperature, max_tokens, tool_choice ...)."""
    system: str | None = None
    """The system prompt itself (kept only with full payloads)."""
    prompt: Any = None
    """The prompt itself: text or the messages (kept only with full payloads)."""


@dataclass(slots=True)
class LlmResult:
    """What the model answered (the ``llm.response`` event)."""

    model: str | None = None
    response_id: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    response_length: int = 0
    tool_calls: list[str] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    reasoning_tokens: int | None = None
    streamed: bool = False
    chunk_count: int | None = None
    time_to_first_chunk_ms: float | None = None
    abandoned: bool = False
    response: Any = None
    """The answer itself (kept only with full payloads)."""


@dataclass(slots=True)
class LlmFailure:
    """Why a call failed (the ``llm.error`` event)."""

    error: str
    """The kind: ``timeout``, ``rate_limited``, ``server_error``, ``connection_error``, ``bad_request`` ..."""
    error_type: str
    """The exception's class (``openai.RateLimitError``) or the span's ``error.type``."""
    message: str = ""
    status_code: int | None = None
    retryable: bool | None = None
    model: str | None = None


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        target[key] = value


def call_fields(request: LlmRequest, *, full: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` and GenAI attributes of the ``llm.call`` event."""
    data: dict[str, Any] = {
        "model": request.model or "unknown",
        "provider": request.provider,
        "operation": request.operation,
        "system_prompt_length": max(0, request.system_prompt_length),
        "prompt_length": max(0, request.prompt_length),
        "message_count": max(0, request.message_count),
        "tool_count": max(0, request.tool_count),
        "stream": request.stream,
    }
    params = {k: json_safe(v) for k, v in request.params.items() if v is not None}
    max_tokens = params.get("max_tokens", params.get("max_completion_tokens", params.get("max_output_tokens")))
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 1:
        data["max_tokens"] = max_tokens
    temperature = params.get("temperature")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature >= 0:
        data["temperature"] = temperature
    if params:
        data["params"] = params
    if full:
        _put(data, "system", request.system)
        if request.prompt is not None:
            data["prompt"] = (
                request.prompt if isinstance(request.prompt, str) else json.dumps(json_safe(request.prompt))
            )
    attributes: dict[str, Any] = {
        GEN_AI_OPERATION: request.operation,
        GEN_AI_PROVIDER: request.provider,
        GEN_AI_SYSTEM: request.provider,
        GEN_AI_REQUEST_MODEL: request.model or "unknown",
    }
    for name, value in params.items():
        key = _PARAM_ALIASES.get(name, name)
        if key in _REQUEST_PARAMS and _attribute_value(value):
            attributes[f"gen_ai.request.{key}"] = value
    return data, attributes


def response_fields(
    result: LlmResult, *, duration_ms: float | None, full: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` and GenAI attributes of the ``llm.response`` event."""
    reasons = [r for r in result.finish_reasons if r]
    finish = reasons[0] if reasons else ("abandoned" if result.abandoned else "unknown")
    data: dict[str, Any] = {"finish_reason": finish}
    _put(data, "model", result.model)
    _put(data, "response_id", result.response_id)
    if duration_ms is not None:
        data["duration_ms"] = max(0, round(duration_ms))
    data["response_length"] = max(0, result.response_length)
    data["tool_call_count"] = len(result.tool_calls)
    if result.tool_calls:
        data["tool_calls"] = list(result.tool_calls)
    total = result.total_tokens
    if total is None and result.input_tokens is not None and result.output_tokens is not None:
        total = result.input_tokens + result.output_tokens
    for name, value in (
        ("input_tokens", result.input_tokens),
        ("output_tokens", result.output_tokens),
        ("total_tokens", total),
        ("cached_input_tokens", result.cached_input_tokens),
        ("cache_creation_input_tokens", result.cache_creation_input_tokens),
        ("reasoning_tokens", result.reasoning_tokens),
    ):
        if value is not None:
            data[name] = max(0, int(value))
    if result.streamed:
        data["streamed"] = True
        data["chunk_count"] = result.chunk_count or 0
        if result.time_to_first_chunk_ms is not None:
            data["time_to_first_chunk_ms"] = max(0, round(result.time_to_first_chunk_ms))
    if result.abandoned:
        data["abandoned"] = True
    if full and result.response is not None:
        data["response"] = (
            result.response if isinstance(result.response, str) else json.dumps(json_safe(result.response))
        )
    attributes: dict[str, Any] = {}
    _put(attributes, GEN_AI_RESPONSE_MODEL, result.model)
    _put(attributes, GEN_AI_RESPONSE_ID, result.response_id)
    if reasons:
        attributes[GEN_AI_FINISH_REASONS] = reasons
    for key, name in (
        (GEN_AI_INPUT_TOKENS, "input_tokens"),
        (GEN_AI_OUTPUT_TOKENS, "output_tokens"),
        (GEN_AI_CACHE_READ, "cached_input_tokens"),
        (GEN_AI_CACHE_CREATION, "cache_creation_input_tokens"),
        (GEN_AI_REASONING, "reasoning_tokens"),
    ):
        _put(attributes, key, data.get(name))
    if result.time_to_first_chunk_ms is not None:
        attributes[GEN_AI_TTFC] = round(result.time_to_first_chunk_ms / 1000, 6)
    return data, attributes


def error_fields(failure: LlmFailure, *, duration_ms: float | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` and GenAI attributes of the ``llm.error`` event."""
    data: dict[str, Any] = {"error": failure.error, "error_type": failure.error_type, "message": failure.message}
    _put(data, "model", failure.model)
    if duration_ms is not None:
        data["duration_ms"] = max(0, round(duration_ms))
    if failure.status_code is not None and 100 <= failure.status_code <= 599:
        data["status_code"] = failure.status_code
    _put(data, "retryable", failure.retryable)
    return data, {ERROR_TYPE: failure.error_type}


def error_kind(status_code: int | None, name: str) -> tuple[str, bool | None]:
    """The kind of an error (``llm.error``'s ``error``) and whether retrying may help, from an HTTP status and
    the exception's class name."""
    lowered = name.lower()
    if "timeout" in lowered:
        return "timeout", True
    if status_code == 429 or "ratelimit" in lowered:
        return "rate_limited", True
    if status_code is not None:
        if status_code >= 500:
            return "server_error", True
        return {
            400: "bad_request",
            401: "authentication",
            403: "permission_denied",
            404: "not_found",
            408: "timeout",
            409: "conflict",
            413: "request_too_large",
            422: "unprocessable",
        }.get(status_code, "client_error"), status_code in (408, 409)
    if "connection" in lowered:
        return "connection_error", True
    if "cancel" in lowered:
        return "cancelled", None
    return "error", None


# -- JSON ---------------------------------------------------------------------------------------------------------
def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON meshlog accepts: no NUL characters, no NaN or infinities, bytes as base64, objects
    through ``model_dump()`` or ``str``; nesting cut at 32 levels."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if depth > 32:
        return str(value)[:_MAX_TEXT]
    if isinstance(value, Mapping):
        return {str(k).replace("\x00", "\ufffd"): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        with contextlib.suppress(Exception):  # any object: fall back to its text
            return json_safe(dump(mode="json", exclude_unset=True), depth + 1)
    return json_safe(str(value), depth + 1)


def _attribute_value(value: Any) -> bool:
    if isinstance(value, (str, bool, int, float)):
        return True
    return isinstance(value, list) and all(isinstance(v, (str, bool, int, float)) for v in value)


# -- from span attributes -----------------------------------------------------------------------------------------
def _first(attrs: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _parse_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def is_llm_span(attrs: Mapping[str, Any]) -> bool:
    """Whether a span's attributes describe a model call (GenAI or OpenInference conventions)."""
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str):
        return kind.upper() == "LLM"
    operation = attrs.get(GEN_AI_OPERATION)
    if isinstance(operation, str):
        return operation in {"chat", "text_completion", "generate_content", "completion", "responses"}
    return any(name in attrs for name in (GEN_AI_REQUEST_MODEL, GEN_AI_INPUT_TOKENS, "llm.model_name", "gen_ai.prompt"))


def is_tool_span(attrs: Mapping[str, Any]) -> bool:
    """Whether a span's attributes describe a tool call."""
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str):
        return kind.upper() == "TOOL"
    return attrs.get(GEN_AI_OPERATION) == "execute_tool" or (
        GEN_AI_TOOL_NAME in attrs and GEN_AI_REQUEST_MODEL not in attrs
    )


def _messages_text(value: Any) -> tuple[int, int, int, str | None]:
    """Characters of system and other messages, the message count and the system text, from GenAI or
    OpenInference message lists (already decoded from JSON)."""
    system = prompt = count = 0
    system_text: list[str] = []
    if not isinstance(value, list):
        return 0, len(value) if isinstance(value, str) else 0, 0, None
    for message in value:
        if not isinstance(message, Mapping):
            continue
        count += 1
        text = _content_text(message.get("content", message.get("parts")))
        if message.get("role") in ("system", "developer"):
            system += len(text)
            system_text.append(text)
        else:
            prompt += len(text)
    return system, prompt, count, "\n".join(system_text) if system_text else None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_content_text(part) for part in content)
    if isinstance(content, Mapping):
        for key in ("text", "content", "result"):
            value = content.get(key)
            if isinstance(value, str):
                return value
    return ""


def _openinference_messages(attrs: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """``llm.input_messages.0.message.role`` ... as a list of messages."""
    messages: dict[int, dict[str, Any]] = {}
    start = prefix + "."
    for key, value in attrs.items():
        if not key.startswith(start):
            continue
        index_text, _, rest = key[len(start) :].partition(".")
        index = _int(index_text)
        if index is None:
            continue
        message = messages.setdefault(index, {})
        if rest == "message.role":
            message["role"] = value
        elif rest == "message.content":
            message["content"] = value
        elif rest.startswith("message.tool_calls.") and rest.endswith("tool_call.function.name"):
            message.setdefault("tool_calls", []).append(value)
        elif rest.startswith("message.contents.") and rest.endswith("message_content.text"):
            message["content"] = str(message.get("content", "")) + str(value)
    return [messages[i] for i in sorted(messages)]


def from_attributes(
    attrs: Mapping[str, Any], *, status_error: str | None = None
) -> tuple[LlmRequest, LlmResult | None, LlmFailure | None]:
    """The call, and its result or its failure, that a span's attributes describe.

    ``status_error`` is the span's status message when its status is ERROR (then the failure is returned).
    """
    provider = (
        _str(_first(attrs, GEN_AI_PROVIDER, GEN_AI_SYSTEM, "llm.provider", "llm.system", "gen_ai.provider"))
        or "unknown"
    )
    model = _str(_first(attrs, GEN_AI_REQUEST_MODEL, "llm.model_name", GEN_AI_RESPONSE_MODEL)) or "unknown"
    operation = _str(attrs.get(GEN_AI_OPERATION)) or "chat"
    params: dict[str, Any] = {}
    for name in _REQUEST_PARAMS:
        value = attrs.get(f"gen_ai.request.{name}")
        if value is not None:
            params[{"stop_sequences": "stop", "choice.count": "n"}.get(name, name)] = value
    invocation = _parse_json(attrs.get("llm.invocation_parameters"))
    if isinstance(invocation, Mapping):
        for key, value in invocation.items():
            if isinstance(value, (str, int, float, bool)) and key not in ("messages", "model"):
                params.setdefault(key, value)
    input_messages = _parse_json(_first(attrs, "gen_ai.input.messages", "gen_ai.prompt"))
    if input_messages is None and any(k.startswith("llm.input_messages.") for k in attrs):
        input_messages = _openinference_messages(attrs, "llm.input_messages")
    system_len, prompt_len, count, system_text = _messages_text(input_messages)
    instructions = _parse_json(attrs.get("gen_ai.system_instructions"))
    if instructions is not None:
        text = _content_text(instructions)
        system_len += len(text)
        system_text = text if system_text is None else f"{text}\n{system_text}"
    if input_messages is None and isinstance(attrs.get("input.value"), str):
        prompt_len = len(attrs["input.value"])
    tools = _parse_json(attrs.get("gen_ai.tool.definitions"))
    tool_count = len(tools) if isinstance(tools, list) else 0
    if not tool_count:
        tool_count = len({k.split(".")[2] for k in attrs if k.startswith("llm.tools.") and k.count(".") >= 3})
    request = LlmRequest(
        provider=provider,
        model=model,
        operation=operation,
        system_prompt_length=system_len,
        prompt_length=prompt_len,
        message_count=count,
        tool_count=tool_count,
        stream=bool(attrs.get("gen_ai.request.stream", False)),
        params=params,
        system=system_text,
        prompt=input_messages,
    )
    error_type = _str(attrs.get(ERROR_TYPE))
    if status_error is not None or error_type is not None:
        kind, retryable = error_kind(_int(attrs.get("http.response.status_code")), error_type or "")
        return (
            request,
            None,
            LlmFailure(
                error=kind,
                error_type=error_type or "error",
                message=status_error or "",
                status_code=_int(attrs.get("http.response.status_code")),
                retryable=retryable,
                model=model,
            ),
        )
    output_messages = _parse_json(attrs.get("gen_ai.output.messages"))
    if output_messages is None and any(k.startswith("llm.output_messages.") for k in attrs):
        output_messages = _openinference_messages(attrs, "llm.output_messages")
    response_length = 0
    tool_calls: list[str] = []
    reasons_from_messages: list[str] = []
    if isinstance(output_messages, list):
        for message in output_messages:
            if not isinstance(message, Mapping):
                continue
            response_length += len(_content_text(message.get("content", message.get("parts"))))
            for part in message.get("parts") or []:
                if isinstance(part, Mapping) and part.get("type") == "tool_call" and part.get("name"):
                    tool_calls.append(str(part["name"]))
            for name in message.get("tool_calls") or []:
                if isinstance(name, str):
                    tool_calls.append(name)
            if isinstance(message.get("finish_reason"), str):
                reasons_from_messages.append(message["finish_reason"])
    elif isinstance(attrs.get("output.value"), str):
        response_length = len(attrs["output.value"])
    reasons = attrs.get(GEN_AI_FINISH_REASONS)
    finish = [str(r) for r in reasons] if isinstance(reasons, (list, tuple)) else []
    if isinstance(reasons, str):
        finish = [reasons]
    input_tokens = _int(_first(attrs, GEN_AI_INPUT_TOKENS, "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"))
    output_tokens = _int(
        _first(attrs, GEN_AI_OUTPUT_TOKENS, "gen_ai.usage.completion_tokens", "llm.token_count.completion")
    )
    result = LlmResult(
        model=_str(_first(attrs, GEN_AI_RESPONSE_MODEL, "llm.model_name")),
        response_id=_str(attrs.get(GEN_AI_RESPONSE_ID)),
        finish_reasons=finish or reasons_from_messages,
        response_length=response_length,
        tool_calls=tool_calls,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=_int(_first(attrs, "gen_ai.usage.total_tokens", "llm.token_count.total")),
        cached_input_tokens=_int(
            _first(
                attrs,
                GEN_AI_CACHE_READ,
                "gen_ai.usage.cache_read_input_tokens",
                "gen_ai.usage.input_tokens.cached",
                "llm.token_count.prompt_details.cache_read",
            )
        ),
        cache_creation_input_tokens=_int(
            _first(
                attrs,
                GEN_AI_CACHE_CREATION,
                "gen_ai.usage.cache_creation_input_tokens",
                "llm.token_count.prompt_details.cache_write",
            )
        ),
        reasoning_tokens=_int(
            _first(
                attrs,
                GEN_AI_REASONING,
                "gen_ai.usage.output_tokens.reasoning",
                "gen_ai.usage.details.reasoning_tokens",
                "llm.token_count.completion_details.reasoning",
            )
        ),
        response=output_messages if output_messages is not None else attrs.get("output.value"),
    )
    ttfc = attrs.get(GEN_AI_TTFC, attrs.get("gen_ai.client.operation.time_to_first_chunk"))
    if isinstance(ttfc, (int, float)) and not isinstance(ttfc, bool):
        result.streamed = True
        result.time_to_first_chunk_ms = float(ttfc) * 1000
    return request, result, None


def tool_fields(attrs: Mapping[str, Any], name: str) -> tuple[str, str | None, Any, Any]:
    """The tool's name, call id, arguments and result from a tool span's attributes."""
    tool = _str(_first(attrs, GEN_AI_TOOL_NAME, "tool.name")) or name
    call_id = _str(_first(attrs, GEN_AI_TOOL_CALL_ID, "tool_call.id"))
    args = _parse_json(_first(attrs, "gen_ai.tool.call.arguments", "tool_arguments", "input.value", "tool.parameters"))
    result = _parse_json(_first(attrs, "gen_ai.tool.call.result", "tool_response", "output.value"))
    return tool, call_id, args, result


def text_length(value: Any) -> int:
    """Characters of text in a prompt or message content (str, list of parts, dict with ``text``)."""
    return len(_content_text(value))


def message_stats(messages: Sequence[Any]) -> tuple[int, int, int, str | None]:
    """System characters, other characters, message count and system text of a list of chat messages
    (dicts or objects with ``role`` and ``content``)."""
    as_dicts = [
        m if isinstance(m, Mapping) else {"role": getattr(m, "role", None), "content": getattr(m, "content", None)}
        for m in messages
    ]
    return _messages_text(as_dicts)
