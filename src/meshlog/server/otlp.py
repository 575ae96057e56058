"""The OTLP/HTTP trace receiver: ``POST /v1/traces`` turns OpenTelemetry spans into meshlog events.

Bodies are ``application/x-protobuf`` (an ``ExportTraceServiceRequest``) or ``application/json`` (its OTLP/JSON
form, whose trace and span ids are hex strings, not base64), optionally gzip-compressed
(``Content-Encoding: gzip``). Spans become events as :mod:`meshlog.tracing.spans` describes: GenAI and
OpenInference LLM spans as ``llm.call`` / ``llm.response`` / ``llm.error``, tool spans as ``tool.call`` /
``tool.result``, other spans as ``span.start`` / ``span.end``; ids and idempotency keys derive from the trace and
span ids, so a resent request stores nothing twice.

Answers, as the OTLP specification asks:

- ``200`` with an ``ExportTraceServiceResponse`` in the request's encoding; spans that cannot be stored (bad ids,
  events the store refuses) are counted in ``partial_success.rejected_spans`` with an ``error_message``, and the
  others are stored.
- ``400`` for a body that cannot be decoded, ``413`` over the size limit, ``415`` for another content type, with
  a ``google.rpc.Status`` body (protobuf or JSON, as the request).
- ``503`` with ``Retry-After`` when the store cannot be reached: the client retries, and the idempotency keys make
  the retry safe.

Needs ``opentelemetry-proto`` (the ``server`` extra).
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import zlib
from collections.abc import Iterator
from typing import Any, Final

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from meshlog.errors import MeshlogError, StoreError
from meshlog.events import NewEvent
from meshlog.log_async import AsyncEventLog
from meshlog.server.app import get_log
from meshlog.spool import is_final
from meshlog.tracing.spans import SpanRecord, events_of_spans, invalid_reason

__all__ = ["DEFAULT_MAX_OTLP_BYTES", "otlp_router", "parse_otlp"]

logger = logging.getLogger("meshlog.server")

DEFAULT_MAX_OTLP_BYTES: Final = 16 * 1024 * 1024
PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
_BATCH: Final = 1000
_KINDS: Final = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS: Final = {0: "unset", 1: "ok", 2: "error"}


class OtlpError(Exception):
    """A request the receiver refuses whole (answered with a ``google.rpc.Status``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def otlp_router(*, max_body_bytes: int = DEFAULT_MAX_OTLP_BYTES) -> APIRouter:
    """The router of ``POST /v1/traces``; its log comes from :func:`meshlog.server.app.get_log` (the tenant of
    the request's credential)."""
    router = APIRouter(tags=["otlp"])

    @router.post(
        "/v1/traces",
        summary="Receive OpenTelemetry spans (OTLP/HTTP, protobuf or JSON)",
        response_class=Response,
        responses={
            200: {"description": "ExportTraceServiceResponse (partial_success lists spans not stored)"},
            400: {"description": "Undecodable body (google.rpc.Status)"},
            415: {"description": "Not application/x-protobuf or application/json"},
            503: {"description": "Store unreachable: retry (the spans' idempotency keys make it safe)"},
        },
    )
    async def receive_traces(request: Request, log: AsyncEventLog = Depends(get_log)) -> Response:  # noqa: B008
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        as_json = content_type == JSON
        if content_type not in (PROTOBUF, JSON):
            return _status(415, f"unsupported content type {content_type or '(none)'!r}: use {PROTOBUF} or {JSON}")
        try:
            body = await _read(request, max_body_bytes)
            spans, rejected, errors = parse_otlp(body, as_json=as_json)
        except OtlpError as exc:
            return _status(exc.status, exc.message, as_json=as_json)
        try:
            failed, store_errors = await _store(log, spans)
        except StoreError as exc:
            logger.warning("OTLP spans not stored, store unreachable: %s", exc)
            return _status(503, f"the store is unreachable: {exc}", as_json=as_json, retry_after=5)
        rejected += failed
        errors.extend(store_errors)
        return _answer(
            rejected,
            "; ".join(errors[:5]) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""),
            as_json=as_json,
        )

    return router


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise OtlpError(413, f"request body of {declared} bytes is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise OtlpError(413, f"request body is over {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise OtlpError(415, f"unsupported content encoding {encoding!r}: use gzip or none")
    try:
        inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        data = inflater.decompress(body, limit + 1)
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise OtlpError(400, f"request body is not valid {encoding}: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise OtlpError(413, f"decompressed request body is over {limit} bytes")
    return data


def parse_otlp(body: bytes, *, as_json: bool) -> tuple[list[SpanRecord], int, list[str]]:
    """The spans of an ``ExportTraceServiceRequest`` (protobuf or OTLP/JSON), the number of spans refused and
    why. Raises :class:`OtlpError` (400) when the body cannot be decoded at all."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    message = ExportTraceServiceRequest()
    if as_json:
        try:
            value = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise OtlpError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise OtlpError(400, "request body must be a JSON object (an ExportTraceServiceRequest)")
        _hex_ids_to_base64(value)
        try:
            json_format.ParseDict(value, message, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            raise OtlpError(400, f"not an OTLP/JSON ExportTraceServiceRequest: {exc}") from None
    else:
        try:
            message.ParseFromString(body)
        except (DecodeError, ValueError, RecursionError) as exc:
            raise OtlpError(400, f"not an OTLP protobuf ExportTraceServiceRequest: {exc}") from None
    spans: list[SpanRecord] = []
    rejected = 0
    errors: list[str] = []
    for resource_spans in message.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name or None
            for span in scope_spans.spans:
                record = SpanRecord(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex() or None,
                    name=span.name,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano or span.start_time_unix_nano,
                    kind=_KINDS.get(span.kind, "unspecified"),
                    attributes=_attributes(span.attributes),
                    status_code=_STATUS.get(span.status.code, "unset"),
                    status_message=span.status.message,
                    resource=resource,
                    scope=scope,
                    events=[(e.name, _attributes(e.attributes)) for e in span.events],
                )
                reason = invalid_reason(record)
                if reason is not None:
                    rejected += 1
                    errors.append(reason)
                    continue
                spans.append(record)
    return spans, rejected, errors


def _hex_ids_to_base64(value: dict[str, Any]) -> None:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping reads bytes as base64. An id that is
    not hex becomes empty, so that its span is refused alone rather than the whole request."""

    def convert(obj: dict[str, Any], names: tuple[str, ...]) -> None:
        for name in names:
            for key in (name, _snake(name)):
                raw = obj.get(key)
                if isinstance(raw, str):
                    try:
                        obj[key] = base64.b64encode(bytes.fromhex(raw)).decode("ascii")
                    except ValueError:
                        obj[key] = ""

    for resource_spans in _items(value, "resourceSpans"):
        for scope_spans in _items(resource_spans, "scopeSpans"):
            for span in _items(scope_spans, "spans"):
                convert(span, ("traceId", "spanId", "parentSpanId"))
                for link in _items(span, "links"):
                    convert(link, ("traceId", "spanId"))


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _items(obj: Any, name: str) -> Iterator[dict[str, Any]]:
    if not isinstance(obj, dict):
        return
    items = obj.get(name, obj.get(_snake(name)))
    if isinstance(items, list):
        yield from (item for item in items if isinstance(item, dict))


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, kind)


async def _store(log: AsyncEventLog, spans: list[SpanRecord]) -> tuple[int, list[str]]:
    """Write the spans' events; returns the spans refused and why. Raises StoreError when the store failed (then
    the client should resend the whole request)."""
    if not spans:
        return 0, []
    events = events_of_spans(spans)
    failed_spans: set[str] = set()
    errors: list[str] = []
    for start in range(0, len(events), _BATCH):
        batch = events[start : start + _BATCH]
        try:
            await log.emit_batch(batch)
        except MeshlogError as exc:
            if not is_final(exc):
                raise
            await _one_by_one(log, batch, failed_spans, errors)
    return len(failed_spans), errors


async def _one_by_one(log: AsyncEventLog, batch: list[NewEvent], failed: set[str], errors: list[str]) -> None:
    """A batch the store refused: write its events one at a time, so only the bad spans are refused."""
    for event in batch:
        span_key = (event.idempotency_key or "").rsplit(":", 1)[0]
        try:
            await log.emit_batch([event])
        except MeshlogError as exc:
            if not is_final(exc):
                raise
            if span_key not in failed:
                failed.add(span_key)
                errors.append(f"span {span_key.removeprefix('otlp:')}: {exc}")


def _answer(rejected: int, message: str, *, as_json: bool) -> Response:
    if as_json:
        body: dict[str, Any] = {}
        if rejected or message:
            body["partialSuccess"] = {"rejectedSpans": rejected, "errorMessage": message}
        return Response(json.dumps(body), media_type=JSON)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return Response(response.SerializeToString(), media_type=PROTOBUF)


# google.rpc.Code for the HTTP statuses answered here.
_RPC_CODES: Final = {400: 3, 413: 8, 415: 3, 503: 14}


def _status(status: int, message: str, *, as_json: bool = False, retry_after: int | None = None) -> Response:
    """A ``google.rpc.Status`` body (protobuf, or JSON for JSON requests)."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    code = _RPC_CODES.get(status, 2)
    if as_json:
        return Response(json.dumps({"code": code, "message": message}), status, headers, media_type=JSON)
    try:
        from google.rpc.status_pb2 import Status

        payload = Status(code=code, message=message).SerializeToString()
    except ImportError:  # googleapis-common-protos missing: the two fields by hand (1: code, 2: message)
        text = message.encode("utf-8")
        payload = bytes([0x08, code, 0x12]) + _varint(len(text)) + text
    return Response(payload, status, headers, media_type=PROTOBUF)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
