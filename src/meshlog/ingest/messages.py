"""Messages that carry meshlog events over a message bus, and the events they carry; no I/O.

Two kinds of message body are understood, told apart by the CloudEvents ``specversion`` attribute:

- a **structured CloudEvent** (JSON), as Dapr's pub/sub components publish: mapped exactly as the Dapr routes of
  the server map it (:func:`meshlog._cloudevents.map_cloud_event`: correlation ids out of ``data``, the envelope
  kept in ``metadata["cloudevent"]``, the type from the topic), with the idempotency key ``dapr:<source>:<id>``;
- a **meshlog event** as JSON, the body of ``POST /v1/events``: one event (``{"type": ..., "data": ...}``, with
  an optional ``expected_version``) or an atomic batch (``{"events": [...], "expected_version": ...}``).

An event of a meshlog body keeps its own ``idempotency_key``; one without gets the message's key (its
``Nats-Msg-Id`` header, else a key the transport derives from the message's place in its stream), suffixed with
``:<index>`` inside a batch. So a redelivered message writes nothing twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from meshlog._cloudevents import DaprSettings, _parse_json, map_cloud_event
from meshlog._validation import DEFAULT_MAX_EVENT_BYTES, prepare
from meshlog.errors import ConfigurationError, ValidationError
from meshlog.events import ANY, ExpectedVersion, NewEvent, StreamState, uuid7

__all__ = [
    "MSG_ID_HEADER",
    "DecodedMessage",
    "EncodedEvent",
    "decode_message",
    "encode_event",
]

MSG_ID_HEADER: Final = "Nats-Msg-Id"
"""The header JetStream deduplicates publishes by; meshlog takes it as the idempotency key."""

_EVENT_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(NewEvent))
_EXPECTED: Final = {state.value: state for state in StreamState}
_DEFAULT_DAPR: Final = DaprSettings()


@dataclass(frozen=True, slots=True)
class DecodedMessage:
    """What one message asks to append: its events (written atomically) and the stream version it expects."""

    events: tuple[NewEvent, ...]
    expected_version: ExpectedVersion = ANY
    kind: Literal["cloudevent", "event", "batch"] = "event"
    """``cloudevent`` (a Dapr CloudEvent), ``event`` (one meshlog event) or ``batch`` (``{"events": [...]}``)."""


def decode_message(
    body: bytes | str,
    *,
    subject: str,
    headers: Mapping[str, str] | None = None,
    default_key: str | None = None,
    dapr: DaprSettings | None = None,
) -> DecodedMessage:
    """The events a message body carries; raises ``ValidationError`` when it cannot carry any.

    ``subject`` is the subject (topic) the message was published to: a CloudEvent without a ``topic``
    attribute is mapped as a message of that topic. ``headers`` are the message's headers (``Nats-Msg-Id`` is
    the idempotency key of a meshlog body's events that have none), ``default_key`` the key to use when that
    header is absent. ``dapr`` maps topics to event types as the server's Dapr routes do (default: the mesh's
    ``task-results`` and ``task-progress`` topics; any other topic ``T`` gives the type ``dapr.T``).

    The error's ``rule`` says why: ``json`` (not JSON), ``cloudevent`` or ``data_object`` (a CloudEvent meshlog
    cannot map), ``type``, ``required``, ``unknown_field``, ``timestamp``, ``expected_version`` (a meshlog body of
    the wrong shape). The events themselves are validated when they are appended.
    """
    value = _parse_json(body, "body")
    if isinstance(value, dict) and "specversion" in value:
        return DecodedMessage((_cloud_event(value, subject, dapr or _DEFAULT_DAPR),), ANY, "cloudevent")
    if not isinstance(value, dict):
        raise _invalid(f"a message must hold a JSON object, got {_kind(value)}", "body", "type")
    key = (headers or {}).get(MSG_ID_HEADER) or default_key
    expected = _expected(value.get("expected_version", "any"))
    if "events" in value:
        unknown = sorted(set(value) - {"events", "expected_version"})
        if unknown:
            raise _invalid(f"{unknown[0]}: unknown field of a batch", unknown[0], "unknown_field")
        items = value["events"]
        if not isinstance(items, list):
            raise _invalid(f"events must be a JSON array, got {_kind(items)}", "events", "type")
        events = tuple(
            _event(item, f"events[{i}]", None if key is None else f"{key}:{i}") for i, item in enumerate(items)
        )
        return DecodedMessage(events, expected, "batch")
    single = {name: item for name, item in value.items() if name != "expected_version"}
    return DecodedMessage((_event(single, "", key),), expected, "event")


def _cloud_event(envelope: dict[str, Any], subject: str, dapr: DaprSettings) -> NewEvent:
    topic = envelope.get("topic")
    if not isinstance(topic, str) or not topic:
        topic = subject
    if topic not in dapr.topics:
        try:
            dapr = dapr.with_topics([topic])
        except ConfigurationError as exc:
            raise _invalid(f"topic {topic!r} cannot name an event type: {exc}", "topic", "cloudevent") from None
    return map_cloud_event(dapr, topic, envelope)


def _event(value: object, at: str, key: str | None) -> NewEvent:
    where = at or "body"
    prefix = f"{at}." if at else ""
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be a JSON object, got {_kind(value)}", where, "type")
    unknown = sorted(set(value) - _EVENT_FIELDS)
    if unknown:
        raise _invalid(f"{prefix}{unknown[0]}: unknown field", f"{prefix}{unknown[0]}", "unknown_field")
    if "type" not in value:
        raise _invalid(f"{prefix}type is required", f"{prefix}type", "required")
    fields = dict(value)
    fields.setdefault("data", {})
    occurred = fields.get("occurred_at")
    if occurred is not None:
        when = None
        if isinstance(occurred, str):
            with contextlib.suppress(ValueError):
                when = datetime.fromisoformat(occurred)
        if when is None:
            raise _invalid(
                f"{prefix}occurred_at is not an ISO 8601 timestamp: {occurred!r}", f"{prefix}occurred_at", "timestamp"
            )
        fields["occurred_at"] = when
    related = fields.get("related")
    if related is not None and not isinstance(related, list):
        raise _invalid(f"{prefix}related must be a JSON array of event ids", f"{prefix}related", "type")
    fields["related"] = tuple(related or ())
    external = fields.get("external_parent", False)
    if not isinstance(external, bool):
        raise _invalid(f"{prefix}external_parent must be true or false", f"{prefix}external_parent", "type")
    if fields.get("idempotency_key") is None:
        fields["idempotency_key"] = key
    return NewEvent(**fields)


def _expected(value: object) -> ExpectedVersion:
    if isinstance(value, str) and value in _EXPECTED:
        return _EXPECTED[value]
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _invalid(
        f"expected_version must be an integer >= 0, 'any', 'no_stream' or 'stream_exists', got {value!r}",
        "expected_version",
        "expected_version",
    )


def _invalid(message: str, field: str, rule: str) -> ValidationError:
    return ValidationError(message, field=field, rule=rule)


def _kind(value: object) -> str:
    kinds = {
        dict: "an object",
        list: "an array",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
    }
    return kinds.get(type(value), "null")


# -- publishing -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event ready to publish: the JSON ``body`` and the ``id`` and ``idempotency_key`` it will be stored with
    (the key is also the message's ``Nats-Msg-Id``)."""

    body: bytes
    id: str
    idempotency_key: str


def encode_event(event: NewEvent, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> EncodedEvent:
    """Validate ``event`` as an append would and encode it as a meshlog message body (``POST /v1/events``).

    Raises ``ValidationError`` (or ``EventTooLarge``) before anything is sent. The event gets its id now (a
    UUIDv7 unless given), so the publisher knows it (for ``parent_id`` of later events). Without an
    ``idempotency_key`` it gets ``nats:<id>``, or a random ``nats:`` key when the id was given (so that reusing
    an id is still reported as a reused id rather than taken for a retry).
    """
    prepared = prepare(event, max_event_bytes=max_event_bytes)
    key = prepared.idempotency_key or f"nats:{uuid7() if prepared.id_given else prepared.id}"
    out: dict[str, Any] = {
        "id": prepared.id,
        "type": prepared.type,
        "version": prepared.version,
        "stream": prepared.stream,
        "idempotency_key": key,
    }
    # The payloads are spliced in as the validated JSON text: no second serialization that could differ.
    parts = [json.dumps(out, ensure_ascii=False, separators=(",", ":"))[:-1], f',"data":{prepared.data_json}']
    if prepared.metadata_json != "{}":
        parts.append(f',"metadata":{prepared.metadata_json}')
    extra: dict[str, Any] = {}
    for name in ("trace_id", "task_id", "agent_id", "parent_id"):
        value = getattr(prepared, name)
        if value is not None:
            extra[name] = value
    if prepared.related:
        extra["related"] = list(prepared.related)
    if prepared.occurred_at is not None:
        extra["occurred_at"] = prepared.occurred_at.isoformat()
    if prepared.external_parent:
        extra["external_parent"] = True
    if extra:
        parts.append("," + json.dumps(extra, ensure_ascii=False, separators=(",", ":"))[1:-1])
    parts.append("}")
    return EncodedEvent("".join(parts).encode("utf-8"), prepared.id, key)
