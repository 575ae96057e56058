"""A small fake model server speaking the OpenAI (Chat Completions, Responses) and Anthropic (Messages) HTTP APIs,
for tests and benchmarks that drive the real client libraries over real sockets.

    with fake_llm_server() as server:
        client = openai.OpenAI(base_url=server.openai_url, api_key="test", max_retries=0)

What it answers depends on the model name:

- ``fake-tools``: a call of the tool ``get_weather`` (finish reason ``tool_calls`` / ``tool_use``);
- ``fake-error-<status>``: that HTTP error with the provider's error body (``fake-error-429``, ``fake-error-500``);
- ``fake-long``: a long answer (200 chunks when streamed), for streams abandoned early;
- anything else: the text ``TEXT`` (``CHUNKS`` chunks when streamed).

Usage is reported with cached input tokens and reasoning tokens (OpenAI) or cache reads and writes (Anthropic).

Run as a program (``python tests/fake_llm.py``, or ``python -m fake_llm`` with tests/ on the path) it serves in a
process of its own, prints its base URL on the first line and stops when its standard input is closed: the
benchmarks use it so that the server does not share the measured process's interpreter.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["CHUNKS", "TEXT", "USAGE", "FakeLlmServer", "fake_llm_server", "main"]

TEXT = "Hello from the fake model."
CHUNKS = ["Hello", " from", " the", " fake", " model."]
LONG_CHUNKS = [f"word{i} " for i in range(200)]
USAGE = {"input": 21, "output": 7, "cached": 5, "reasoning": 3, "cache_write": 2}


class FakeLlmServer:
    """The running server: ``openai_url`` (``…/v1``), ``anthropic_url`` and the requests it received."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.keep_requests = True
        self.chunk_delay = 0.0
        handler = _handler(self)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.openai_url = f"{self.base_url}/v1"
        self.anthropic_url = self.base_url
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@contextlib.contextmanager
def fake_llm_server() -> Iterator[FakeLlmServer]:
    server = FakeLlmServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main() -> None:
    """Serve until standard input is closed; the first line printed is the base URL."""
    with fake_llm_server() as server:
        server.keep_requests = False  # a long benchmark would otherwise keep every request body
        print(server.base_url, flush=True)
        sys.stdin.read()


def _handler(server: FakeLlmServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
            path = self.path.split("?")[0]
            if server.keep_requests:
                server.requests.append((path, body))
            model = str(body.get("model", ""))
            try:
                if model.startswith("fake-error-"):
                    self._error(int(model.rsplit("-", 1)[1]), anthropic=path.endswith("/messages"))
                elif path.endswith("/chat/completions"):
                    self._chat(body, model)
                elif path.endswith("/responses"):
                    self._responses(body, model)
                elif path.endswith("/messages"):
                    self._messages(body, model)
                else:
                    self._json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading (an abandoned stream)

        # -- plumbing -------------------------------------------------------------------------------------------
        def _json(self, status: int, value: Any) -> None:
            data = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _sse_start(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True

        def _sse(self, data: Any, event: str | None = None) -> None:
            text = "" if event is None else f"event: {event}\n"
            text += f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
            self.wfile.write(text.encode())
            self.wfile.flush()
            if server.chunk_delay:
                time.sleep(server.chunk_delay)

        def _error(self, status: int, *, anthropic: bool) -> None:
            message = f"fake error {status}"
            if anthropic:
                kind = "rate_limit_error" if status == 429 else "api_error"
                self._json(status, {"type": "error", "error": {"type": kind, "message": message}})
            else:
                self._json(status, {"error": {"message": message, "type": "fake_error", "code": str(status)}})

        # -- OpenAI Chat Completions ----------------------------------------------------------------------------
        def _chat(self, body: dict[str, Any], model: str) -> None:
            usage = {
                "prompt_tokens": USAGE["input"],
                "completion_tokens": USAGE["output"],
                "total_tokens": USAGE["input"] + USAGE["output"],
                "prompt_tokens_details": {"cached_tokens": USAGE["cached"]},
                "completion_tokens_details": {"reasoning_tokens": USAGE["reasoning"]},
            }
            base = {"id": "chatcmpl-fake", "created": 1700000000, "model": model}
            tools = model == "fake-tools"
            chunks = LONG_CHUNKS if model == "fake-long" else CHUNKS
            if not body.get("stream"):
                message: dict[str, Any] = {"role": "assistant", "content": None if tools else "".join(chunks)}
                if tools:
                    message["tool_calls"] = [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ]
                choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if tools else "stop"}
                self._json(200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
                return
            self._sse_start()
            chunk = {**base, "object": "chat.completion.chunk"}
            if tools:
                call = {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
                self._sse({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [call]}}]})
                more = {"index": 0, "function": {"arguments": '{"city": "Paris"}'}}
                self._sse({**chunk, "choices": [{"index": 0, "delta": {"tool_calls": [more]}}]})
            else:
                for i, text in enumerate(chunks):
                    delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
                    self._sse({**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
            finish = "tool_calls" if tools else "stop"
            self._sse({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                self._sse({**chunk, "choices": [], "usage": usage})
            self._sse("[DONE]")

        # -- OpenAI Responses -----------------------------------------------------------------------------------
        def _responses(self, body: dict[str, Any], model: str) -> None:
            tools = model == "fake-tools"
            text = "".join(LONG_CHUNKS if model == "fake-long" else CHUNKS)
            output: list[dict[str, Any]]
            if tools:
                output = [
                    {
                        "type": "function_call",
                        "id": "fc_1",
                        "call_id": "call_1",
                        "name": "get_weather",
                        "arguments": '{"city": "Paris"}',
                        "status": "completed",
                    }
                ]
            else:
                output = [
                    {
                        "type": "message",
                        "id": "msg_1",
                        "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                ]
            response = {
                "id": "resp_fake",
                "object": "response",
                "created_at": 1700000000,
                "model": model,
                "status": "completed",
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "usage": {
                    "input_tokens": USAGE["input"],
                    "output_tokens": USAGE["output"],
                    "total_tokens": USAGE["input"] + USAGE["output"],
                    "input_tokens_details": {"cached_tokens": USAGE["cached"]},
                    "output_tokens_details": {"reasoning_tokens": USAGE["reasoning"]},
                },
            }
            if not body.get("stream"):
                self._json(200, response)
                return
            self._sse_start()
            created = {**response, "status": "in_progress", "output": [], "usage": None}
            self._sse({"type": "response.created", "sequence_number": 0, "response": created}, "response.created")
            n = 1
            if not tools:
                for piece in LONG_CHUNKS if model == "fake-long" else CHUNKS:
                    delta = {
                        "type": "response.output_text.delta",
                        "sequence_number": n,
                        "item_id": "msg_1",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": piece,
                        "logprobs": [],
                    }
                    self._sse(delta, "response.output_text.delta")
                    n += 1
            done = {"type": "response.completed", "sequence_number": n, "response": response}
            self._sse(done, "response.completed")

        # -- Anthropic Messages ---------------------------------------------------------------------------------
        def _messages(self, body: dict[str, Any], model: str) -> None:
            tools = model == "fake-tools"
            chunks = LONG_CHUNKS if model == "fake-long" else CHUNKS
            usage = {
                "input_tokens": USAGE["input"],
                "output_tokens": USAGE["output"],
                "cache_read_input_tokens": USAGE["cached"],
                "cache_creation_input_tokens": USAGE["cache_write"],
            }
            stop = "tool_use" if tools else "end_turn"
            tool_block = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            if not body.get("stream"):
                content = [tool_block] if tools else [{"type": "text", "text": "".join(chunks)}]
                message = {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": usage,
                }
                self._json(200, message)
                return
            self._sse_start()
            start: dict[str, Any] = {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {**usage, "output_tokens": 1},
            }
            self._sse({"type": "message_start", "message": start}, "message_start")
            if tools:
                block = {**tool_block, "input": {}}
                self._sse({"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start")
                delta = {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'}
                self._sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
            else:
                block = {"type": "text", "text": ""}
                self._sse({"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start")
                for piece in chunks:
                    delta = {"type": "text_delta", "text": piece}
                    self._sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
            self._sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            end = {"stop_reason": stop, "stop_sequence": None}
            self._sse(
                {"type": "message_delta", "delta": end, "usage": {"output_tokens": USAGE["output"]}}, "message_delta"
            )
            self._sse({"type": "message_stop"}, "message_stop")

    return Handler


if __name__ == "__main__":
    main()
