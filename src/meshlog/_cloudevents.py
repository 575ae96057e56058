"""CloudEvents as Dapr's pub/sub delivers them, mapped to meshlog events; no I/O.

Shared by the Dapr routes of the server (:mod:`meshlog.server.dapr`, which re-exports these names) and the NATS
JetStream ingest worker (:mod:`meshlog.ingest.nats`), so that a CloudEvent becomes the same event, with the same
idempotency key ``dapr:<source>:<id>``, whichever way it arrives.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeAlias

from meshlog._validation import _TYPE_RE
from meshlog.errors import ConfigurationError, ValidationError
from meshlog.events import NewEvent

__all__ = [
    "DEFAULT_TOPICS",
    "DaprSettings",
    "TopicMapper",
    "map_cloud_event",
    "map_task_progress",
    "map_task_result",
]

TopicMapper: TypeAlias = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]
"""Maps a message's ``data`` (without its correlation keys) to the event type and the event's ``data``."""

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
