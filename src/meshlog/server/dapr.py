"""Dapr pub/sub ingestion: the routes a Dapr sidecar calls to deliver topic messages, stored as meshlog events.

Dapr asks the app which topics it wants (``GET /dapr/subscribe``, the programmatic subscription) and then POSTs
each message to the route named there, as a structured CloudEvent (``application/cloudevents+json``), or, with
``bulkSubscribe`` enabled, several messages at once as ``{"entries": [{"entryId", "event", "contentType",
"metadata"}, ...]}``. The app answers each message with a status:

- ``SUCCESS``: the event is stored, now or by an earlier delivery of the same message;
- ``RETRY``: the store failed; Dapr delivers the message again later;
- ``DROP``: the message can never be stored (not JSON, not a CloudEvent, ``data`` not a JSON object, rejected by
  validation, or its key already names a different event); Dapr logs it and moves on. Drops are counted.

``SUCCESS`` is never the answer for a message that is not stored. Every event carries the idempotency key
``dapr:<source>:<id>`` of its CloudEvent, so a redelivery (Dapr delivers at least once) writes nothing twice.

``map_cloud_event`` holds the mapping and does no I/O; ``dapr_router`` is the FastAPI side.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from meshlog._validation import _TYPE_RE
from meshlog.errors import (
    ConcurrencyError,
    ConfigurationError,
    IdempotencyConflict,
    StoreError,
    ValidationError,
)
from meshlog.events import NewEvent, RecordedEvent
from meshlog.log_async import AsyncEventLog

__all__ = [
    "DEFAULT_TOPICS",
    "DaprMetricsHook",
    "DaprRouter",
    "DaprSettings",
    "DaprStats",
    "DaprStatus",
    "LogGetter",
    "TopicMapper",
    "dapr_router",
    "map_cloud_event",
    "map_task_progress",
    "map_task_result",
]

logger = logging.getLogger("meshlog.server.dapr")

DaprStatus: TypeAlias = Literal["SUCCESS", "RETRY", "DROP"]
"""The status an app returns to Dapr for one message."""

TopicMapper: TypeAlias = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]
"""Maps a message's ``data`` (without its correlation keys) to the event type and the event's ``data``."""

DaprMetricsHook: TypeAlias = Callable[[str, DaprStatus, str | None], None]
"""Called once per message with the topic, the status answered and, for ``DROP``, the reason."""

# A topic becomes a literal path segment of its route: keep to characters that need no URL escaping.
_TOPIC_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,199}")
# W3C trace context: version-traceid-parentid-flags; the trace id is what correlates a trace across services.
_TRACEPARENT_RE = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
# The CloudEvents 1.0 attributes every event must have.
_REQUIRED_ATTRIBUTES = ("id", "source", "specversion", "type")
# Envelope attributes kept in the event's metadata (under "cloudevent"), when present as non-empty strings.
_KEPT_ATTRIBUTES = (
    "id",
    "source",
    "type",
    "specversion",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "topic",
    "pubsubname",
    "traceparent",
    "tracestate",
)
# Payload keys that become the event's correlation columns (and leave its data): camelCase as JavaScript
# publishers write them, snake_case as Python ones do.
_CORRELATION_KEYS = {
    "task_id": ("taskId", "task_id"),
    "agent_id": ("agentId", "agent_id"),
    "trace_id": ("traceId", "trace_id"),
}
# Drop reasons, by the ValidationError rule that ``map_cloud_event`` raises.
_RULE_REASONS = {"json": "not_json", "cloudevent": "not_cloudevent", "data_object": "data_not_object"}


# -- mapping (no I/O) -------------------------------------------------------------------------------------------
def _snake_case_keys(data: dict[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        new = names.get(key, key)
        if new not in out or key == new:
            out[new] = value
    return out


_RESULT_KEYS = {"durationMs": "duration_ms", "errorType": "error_type", "errorMessage": "error_message"}


def map_task_result(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``task-results``: ``task.result`` when ``payload["success"]`` is true, else ``task.result.failure``.

    The payload is kept, with ``durationMs``, ``errorType`` and ``errorMessage`` renamed to snake_case. What the
    ``agent-mesh`` catalogue requires is filled in when missing: ``success`` (false when absent), ``status``
    (``"succeeded"`` or ``"failed"``) and, for a failure, ``error`` (a string: the payload's ``error``, else its
    ``error_message``, ``error_type`` or ``"task failed"``; a non-string ``error`` moves to ``error_details``).
    """
    data = _snake_case_keys(payload, _RESULT_KEYS)
    if data.get("success") is True:
        data.setdefault("status", "succeeded")
        return "task.result", data
    data.setdefault("success", False)
    data.setdefault("status", "failed")
    error = data.get("error")
    if not isinstance(error, str) or not error:
        if error is not None:
            data.setdefault("error_details", error)
        fallback = [data.get("error_message"), data.get("error_type")]
        data["error"] = next((v for v in fallback if isinstance(v, str) and v), "task failed")
    return "task.result.failure", data


def map_task_progress(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``task-progress``: ``task.progress`` with the payload as it is (``status``, ``details`` ...)."""
    return "task.progress", dict(payload)


def _fixed_type(event_type: str) -> TopicMapper:
    def mapper(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return event_type, dict(payload)

    return mapper


DEFAULT_TOPICS: Mapping[str, TopicMapper] = MappingProxyType(
    {"task-results": map_task_result, "task-progress": map_task_progress}
)
"""The topics the mesh's orchestrator publishes task outcomes and progress to."""


@dataclass(frozen=True)
class DaprSettings:
    """Which Dapr pub/sub component and topics to subscribe to, and how each topic's messages become events.

    ``topics`` maps a topic to a :data:`TopicMapper`, or to an event type string (the message's data is stored
    as it is, under that type), or to ``None`` for the type ``dapr.<topic>``. Each topic is served at
    ``<route_prefix>/<topic>``. ``bulk_subscribe`` asks Dapr to deliver up to ``max_messages_count`` messages
    per request, waiting at most ``max_await_duration_ms`` to fill one. Raises ``ConfigurationError`` for a
    topic or event type meshlog cannot use.
    """

    pubsub_name: str = "pubsub"
    topics: Mapping[str, TopicMapper | str | None] = field(default_factory=lambda: dict(DEFAULT_TOPICS))
    route_prefix: str = "/dapr/events"
    bulk_subscribe: bool = True
    max_messages_count: int = 100
    max_await_duration_ms: int = 1000
    dead_letter_topic: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pubsub_name, str) or not self.pubsub_name:
            raise ConfigurationError("pubsub_name must be a non-empty string")
        if not self.route_prefix.startswith("/") or self.route_prefix.endswith("/"):
            raise ConfigurationError(f"route_prefix must start with '/' and not end with one: {self.route_prefix!r}")
        for name in ("max_messages_count", "max_await_duration_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        if not self.topics:
            raise ConfigurationError("at least one topic is needed")
        # A copy nobody can change: the routes are built from the topics once.
        object.__setattr__(self, "topics", MappingProxyType(dict(self.topics)))
        for topic, how in self.topics.items():
            if not isinstance(topic, str) or not _TOPIC_RE.fullmatch(topic):
                raise ConfigurationError(f"topic must match {_TOPIC_RE.pattern}, got {topic!r}")
            if (isinstance(how, str) or how is None) and not _TYPE_RE.fullmatch(how or f"dapr.{topic}"):
                raise ConfigurationError(f"topic {topic!r}: {how!r} is not a valid event type")
            if how is not None and not isinstance(how, str) and not callable(how):
                raise ConfigurationError(f"topic {topic!r}: expected an event type or a mapper, got {how!r}")

    def with_topics(self, specs: Iterable[str]) -> DaprSettings:
        """These settings with more topics, each given as ``"topic"`` (type ``dapr.<topic>``) or
        ``"topic=event.type"``, as a command-line option would give them."""
        topics: dict[str, TopicMapper | str | None] = dict(self.topics)
        for spec in specs:
            topic, sep, event_type = spec.partition("=")
            topics[topic.strip()] = event_type.strip() if sep else None
        return replace(self, topics=topics)

    def mapper(self, topic: str) -> TopicMapper:
        """The mapper of ``topic`` (``KeyError`` when it is not subscribed)."""
        how = self.topics[topic]
        if how is None or isinstance(how, str):
            return _fixed_type(how or f"dapr.{topic}")
        return how

    def route(self, topic: str) -> str:
        """The path Dapr delivers ``topic``'s messages to."""
        return f"{self.route_prefix}/{topic}"

    def subscriptions(self) -> list[dict[str, Any]]:
        """The body of ``GET /dapr/subscribe``: one programmatic subscription per topic."""
        subs: list[dict[str, Any]] = []
        for topic in self.topics:
            sub: dict[str, Any] = {"pubsubname": self.pubsub_name, "topic": topic, "route": self.route(topic)}
            if self.dead_letter_topic:
                sub["deadLetterTopic"] = self.dead_letter_topic
            if self.bulk_subscribe:
                sub["bulkSubscribe"] = {
                    "enabled": True,
                    "maxMessagesCount": self.max_messages_count,
                    "maxAwaitDurationMs": self.max_await_duration_ms,
                }
            subs.append(sub)
        return subs


def _malformed(message: str, field: str, rule: str) -> ValidationError:
    return ValidationError(message, field=field, rule=rule)


def _parse_json(raw: bytes | str, field: str, rule: str = "json") -> Any:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _malformed(f"{field} is not valid JSON: {exc}", field, rule) from None


def _event_data(envelope: dict[str, Any]) -> dict[str, Any]:
    content_type = envelope.get("datacontenttype")
    json_content = content_type is None or (isinstance(content_type, str) and "json" in content_type.lower())
    if "data" in envelope:
        data = envelope["data"]
        # A publisher that serialized its JSON itself sends a string: it still holds an object.
        if isinstance(data, str) and json_content:
            data = _parse_json(data, "data", "data_object")
    elif "data_base64" in envelope and json_content and isinstance(envelope["data_base64"], str):
        try:
            raw = base64.b64decode(envelope["data_base64"], validate=True)
        except (binascii.Error, ValueError):
            raise _malformed("data_base64 is not valid base64", "data_base64", "data_object") from None
        data = _parse_json(raw, "data_base64", "data_object")
    else:
        raise _malformed("the CloudEvent has no JSON data", "data", "data_object")
    if not isinstance(data, dict):
        raise _malformed(f"data must be a JSON object, got {type(data).__name__}", "data", "data_object")
    return data


def _correlation(payload: dict[str, Any], key: str) -> str | None:
    for name in _CORRELATION_KEYS[key]:
        value = payload.pop(name, None)
        if value is None or value == "":
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise _malformed(f"data.{name} must be a string, got {type(value).__name__}", f"data.{name}", "type")
        return value
    return None


def _trace_from_envelope(envelope: dict[str, Any]) -> str | None:
    for name in ("traceparent", "traceid"):
        value = envelope.get(name)
        if isinstance(value, str) and value:
            match = _TRACEPARENT_RE.fullmatch(value.strip().lower())
            return match.group(1) if match else value
    return None


def _occurred_at(envelope: dict[str, Any]) -> datetime | None:
    value = envelope.get("time")
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None  # kept verbatim in metadata; a bad clock reading is no reason to lose the event
    return when if when.tzinfo is not None else None


def map_cloud_event(settings: DaprSettings, topic: str, envelope: object) -> NewEvent:
    """The event a CloudEvent delivered on ``topic`` becomes; raises ``ValidationError`` when it cannot be one.

    ``envelope`` is the parsed JSON of a structured CloudEvent (or its text, as a bulk entry may carry it). The
    error's ``rule`` is ``json`` (not JSON), ``cloudevent`` (not a CloudEvent 1.0: an object with string ``id``,
    ``source``, ``specversion`` and ``type``), ``data_object`` (``data`` not a JSON object) or ``type`` (a
    correlation value that is neither a string nor an integer).

    Correlation comes from the data (``taskId``/``task_id``, ``agentId``/``agent_id``, ``traceId``/``trace_id``,
    which leave the data) and, for the trace, else from the CloudEvent's ``traceparent`` (its W3C trace id).
    The envelope's attributes are kept in ``metadata["cloudevent"]``, its ``time`` becomes ``occurred_at`` and
    the idempotency key is ``dapr:<source>:<id>``.
    """
    if isinstance(envelope, (str, bytes)):
        envelope = _parse_json(envelope, "body")
    if not isinstance(envelope, dict):
        raise _malformed(f"a CloudEvent is a JSON object, got {type(envelope).__name__}", "body", "cloudevent")
    for name in _REQUIRED_ATTRIBUTES:
        value = envelope.get(name)
        if not isinstance(value, str) or not value:
            raise _malformed(f"not a CloudEvent: {name} must be a non-empty string", name, "cloudevent")
    payload = dict(_event_data(envelope))
    task_id = _correlation(payload, "task_id")
    agent_id = _correlation(payload, "agent_id")
    trace_id = _correlation(payload, "trace_id") or _trace_from_envelope(envelope)
    event_type, data = settings.mapper(topic)(payload)
    kept = {name: envelope[name] for name in _KEPT_ATTRIBUTES if isinstance(envelope.get(name), str)}
    kept = {name: value for name, value in kept.items() if value}
    kept.setdefault("topic", topic)
    return NewEvent(
        type=event_type,
        data=data,
        metadata={"cloudevent": kept},
        trace_id=trace_id,
        task_id=task_id,
        agent_id=agent_id,
        idempotency_key=f"dapr:{envelope['source']}:{envelope['id']}",
        occurred_at=_occurred_at(envelope),
    )


# -- counting ---------------------------------------------------------------------------------------------------
@dataclass
class DaprStats:
    """Messages answered since start, by status; drops also by reason (``not_json``, ``not_cloudevent``,
    ``data_not_object``, ``invalid_event``, ``idempotency_conflict``, ``conflict``, ``no_entry_id``)."""

    success: int = 0
    retry: int = 0
    drop: int = 0
    drop_reasons: dict[str, int] = field(default_factory=dict)

    def count(self, status: DaprStatus, reason: str | None = None) -> None:
        """Count one message answered with ``status``."""
        if status == "SUCCESS":
            self.success += 1
        elif status == "RETRY":
            self.retry += 1
        else:
            self.drop += 1
            key = reason or "unknown"
            self.drop_reasons[key] = self.drop_reasons.get(key, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "success": self.success,
            "retry": self.retry,
            "drop": self.drop,
            "drop_reasons": dict(self.drop_reasons),
        }


# -- storing ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Answer:
    status: DaprStatus
    reason: str | None = None


_SUCCESS = _Answer("SUCCESS")
_RETRY = _Answer("RETRY")


def _failure(exc: Exception, what: str) -> _Answer:
    """The answer for an append that raised ``exc``: drop what can never be stored, retry everything else."""
    if isinstance(exc, ValidationError):
        logger.warning("meshlog: dropping Dapr message %s: %s", what, exc)
        return _Answer("DROP", "invalid_event")
    if isinstance(exc, IdempotencyConflict):
        logger.warning("meshlog: dropping Dapr message %s: %s", what, exc)
        return _Answer("DROP", "idempotency_conflict")
    if isinstance(exc, ConcurrencyError):
        logger.warning("meshlog: dropping Dapr message %s: %s", what, exc)
        return _Answer("DROP", "conflict")
    if isinstance(exc, StoreError):
        logger.warning("meshlog: Dapr message %s not stored, asking for redelivery: %s", what, exc)
    else:
        logger.error("meshlog: Dapr message %s not stored, asking for redelivery", what, exc_info=exc)
    return _RETRY


def _mapped(settings: DaprSettings, topic: str, envelope: object) -> NewEvent | _Answer:
    try:
        return map_cloud_event(settings, topic, envelope)
    except ValidationError as exc:
        logger.warning("meshlog: dropping malformed Dapr message on %r: %s", topic, exc)
        return _Answer("DROP", _RULE_REASONS.get(exc.rule or "", "invalid_event"))
    except Exception:  # a topic's own mapper failed: not the message's fault, so never dropped
        logger.exception("meshlog: the mapper of topic %r failed; asking for redelivery", topic)
        return _RETRY


def _describe(event: NewEvent) -> str:
    return repr(event.idempotency_key)


_Resolve: TypeAlias = Callable[[], Awaitable[AsyncEventLog]]


async def _store_one(resolve: _Resolve, event: NewEvent) -> _Answer:
    try:
        await (await resolve()).emit_batch([event])
    except Exception as exc:  # every outcome gets an answer; unknown failures are retried, never acknowledged
        return _failure(exc, _describe(event))
    return _SUCCESS


async def _store_many(resolve: _Resolve, events: Sequence[NewEvent]) -> list[_Answer]:
    """Store ``events``: in one atomic batch when all can go, else one by one so a bad one fails alone."""
    if not events:
        return []
    try:
        recorded: list[RecordedEvent] = await (await resolve()).emit_batch(events)
    except (ValidationError, ConcurrencyError):
        # A bad event, or a redelivery of which only some events are stored (a batch mixing known and new
        # idempotency keys is refused as a whole): each event alone then gets its own answer.
        return [await _store_one(resolve, event) for event in events]
    except Exception as exc:  # the store failed (or worse): nothing of the batch is stored, all are retried
        return [_failure(exc, _describe(event)) for event in events]
    assert len(recorded) == len(events)
    return [_SUCCESS] * len(events)


# -- routes -----------------------------------------------------------------------------------------------------
LogGetter: TypeAlias = Callable[[], AsyncEventLog | Awaitable[AsyncEventLog]]
"""Returns the log to store into, or an awaitable of it (such as an ``async def`` that opens it on demand)."""


class DaprRouter(APIRouter):
    """The Dapr routes, with the ``settings`` they serve and the ``stats`` of the messages they answered."""

    settings: DaprSettings
    stats: DaprStats


def _is_bulk(body: object) -> bool:
    return isinstance(body, dict) and isinstance(body.get("entries"), list) and "specversion" not in body


def dapr_router(
    get_log: LogGetter,
    settings: DaprSettings | None = None,
    *,
    stats: DaprStats | None = None,
    on_status: DaprMetricsHook | None = None,
) -> DaprRouter:
    """The Dapr routes: ``GET /dapr/subscribe`` and one ``POST`` route per topic of ``settings``.

    ``get_log`` returns the log to store into, or an awaitable of it (called per message, so the app may open
    it on demand; a failure to get it is a ``RETRY``). Each message answered is counted in ``stats`` (a new
    :class:`DaprStats` when not given; ``router.stats``) and reported to ``on_status`` (for example, to
    increment a Prometheus counter by topic and status). Every answer is HTTP 200: a single delivery gets
    ``{"status": ...}``, a bulk delivery ``{"statuses": [{"entryId": ..., "status": ...}, ...]}``.
    """
    settings = settings or DaprSettings()
    counted = DaprStats() if stats is None else stats
    router = DaprRouter(tags=["dapr"])
    router.settings = settings
    router.stats = counted

    async def resolve() -> AsyncEventLog:
        log = get_log()
        return await log if inspect.isawaitable(log) else log

    def answered(topic: str, answer: _Answer) -> DaprStatus:
        counted.count(answer.status, answer.reason)
        if on_status is not None:
            on_status(topic, answer.status, answer.reason)
        return answer.status

    async def subscribe() -> JSONResponse:
        return JSONResponse(settings.subscriptions())

    router.add_api_route(
        "/dapr/subscribe", subscribe, methods=["GET"], name="dapr_subscribe", summary="Dapr subscriptions"
    )

    async def single(topic: str, body: object) -> JSONResponse:
        event = _mapped(settings, topic, body)
        answer = event if isinstance(event, _Answer) else await _store_one(resolve, event)
        return JSONResponse({"status": answered(topic, answer)})

    async def bulk(topic: str, body: dict[str, Any]) -> JSONResponse:
        ids: list[str] = []
        answers: list[_Answer] = []
        pending: list[tuple[int, NewEvent]] = []
        for entry in body["entries"]:
            entry_id = entry.get("entryId", entry.get("entryID")) if isinstance(entry, dict) else None
            if not isinstance(entry_id, str) or not entry_id:
                # Without its id the entry cannot be answered (Dapr treats an unanswered entry as RETRY).
                logger.warning("meshlog: ignoring a bulk entry without entryId on %r", topic)
                answered(topic, _Answer("DROP", "no_entry_id"))
                continue
            result = _mapped(settings, topic, entry.get("event"))
            ids.append(entry_id)
            answers.append(result if isinstance(result, _Answer) else _RETRY)
            if isinstance(result, NewEvent):
                pending.append((len(answers) - 1, result))
        stored = await _store_many(resolve, [event for _, event in pending])
        for (index, _), answer in zip(pending, stored, strict=True):
            answers[index] = answer
        statuses = [
            {"entryId": entry_id, "status": answered(topic, answer)}
            for entry_id, answer in zip(ids, answers, strict=True)
        ]
        return JSONResponse({"statuses": statuses})

    def endpoint(topic: str) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def deliver(request: Request) -> JSONResponse:
            raw = await request.body()
            try:
                body = _parse_json(raw, "body")
            except ValidationError as exc:
                logger.warning("meshlog: dropping Dapr message on %r: %s", topic, exc)
                return JSONResponse({"status": answered(topic, _Answer("DROP", "not_json"))})
            if _is_bulk(body):
                return await bulk(topic, body)
            return await single(topic, body)

        return deliver

    for topic in settings.topics:
        router.add_api_route(
            settings.route(topic),
            endpoint(topic),
            methods=["POST"],
            name=f"dapr_topic_{topic}",
            summary=f"Dapr deliveries of topic {topic}",
        )
    return router
