"""Input validation and encoding, without I/O.

Everything an append needs to check before touching a store happens here, so that every store applies the
same rules and bad input raises :class:`~meshlog.errors.ValidationError` before anything is written.

The NUL rule: a NUL character (U+0000) is rejected wherever it appears (in ``data`` and ``metadata`` keys and
strings, and in every text field), by every store. PostgreSQL's ``jsonb`` cannot hold it, and silently
rewriting a payload would make the stored event differ from what the caller sent.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, cast

from meshlog.errors import EventTooLarge, ValidationError
from meshlog.events import ExpectedVersion, NewEvent, StreamState, default_stream, uuid7

DEFAULT_MAX_EVENT_BYTES: Final = 1024 * 1024
MAX_BATCH: Final = 10_000
MAX_TEXT: Final = 512
MAX_JSON_DEPTH: Final = 64
MAX_VERSION: Final = 2**31 - 1
MAX_POSITION: Final = 2**63 - 1

_TYPE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}")
_TENANT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")


TypeCheck = Callable[[NewEvent, "int | None"], NewEvent]
"""Validates an event against its type's schema (given its index in a batch) and returns the event to append."""


@dataclass(slots=True)
class PreparedEvent:
    """A validated event, its payloads already serialized to compact JSON."""

    id: str
    stream: str
    type: str
    version: int
    data_json: str
    metadata_json: str
    trace_id: str | None
    task_id: str | None
    agent_id: str | None
    parent_id: str | None
    related: tuple[str, ...]
    idempotency_key: str | None
    occurred_at: datetime | None
    id_given: bool
    external_parent: bool


@dataclass(slots=True)
class AppendRequest:
    """One atomic append: its events are written all together or not at all.

    ``expected_version`` applies to ``stream`` (set only when the request states an expectation, in which case
    every event is in that stream).
    """

    tenant: str
    events: list[PreparedEvent]
    expected_version: ExpectedVersion = StreamState.ANY
    stream: str | None = None


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT_RE.fullmatch(tenant):
        raise ValidationError(f"tenant must match {_TENANT_RE.pattern}, got {tenant!r}", field="tenant", rule="pattern")
    return tenant


def _text(value: object, name: str, *, required: bool = False, limit: int = MAX_TEXT) -> str | None:
    if value is None:
        if required:
            raise ValidationError(f"{name} is required", field=name, rule="required")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, got {type(value).__name__}", field=name, rule="type")
    if not value:
        raise ValidationError(f"{name} must not be empty", field=name, rule="non_empty")
    if len(value) > limit:
        raise ValidationError(f"{name} is longer than {limit} characters", field=name, rule="max_length")
    if _CONTROL_RE.search(value):
        rule = "no_nul" if "\x00" in value else "no_control_characters"
        raise ValidationError(f"{name} contains a control character", field=name, rule=rule)
    if not value.isascii():
        _check_utf8(value, name)
    return value


def _check_utf8(value: str, name: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            f"{name} is not valid Unicode (a lone surrogate cannot be stored as UTF-8)", field=name, rule="utf8"
        ) from None


def _uuid(value: object, name: str) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise ValidationError(f"{name} must be a UUID, got {value!r}", field=name, rule="uuid")


_SCALARS: Final = frozenset({int, bool, type(None)})


def _plain(value: object, depth: int = 0) -> bool:
    """True when a JSON value certainly passes :func:`_check_json` (exact built-in types, no NUL, ASCII or valid
    UTF-8, finite floats, bounded nesting). The fast path of every emit: it builds no error paths; anything it is
    unsure of goes to :func:`_check_json`, which names the problem."""
    kind = type(value)
    if kind is dict:
        if depth >= MAX_JSON_DEPTH:
            return False
        for key, item in cast("dict[object, object]", value).items():
            if type(key) is not str or "\x00" in key or not (key.isascii() or _utf8_ok(key)):
                return False
            item_kind = type(item)
            if item_kind is str:
                text = cast("str", item)
                if "\x00" in text or not (text.isascii() or _utf8_ok(text)):
                    return False
            elif item_kind in _SCALARS:
                continue
            elif item_kind is float:
                if not math.isfinite(cast("float", item)):
                    return False
            elif not _plain(item, depth + 1):
                return False
        return True
    if kind is list or kind is tuple:
        if depth >= MAX_JSON_DEPTH:
            return False
        return all(_plain(item, depth + 1) for item in cast("list[object]", value))
    if kind is str:
        text = cast("str", value)
        return "\x00" not in text and (text.isascii() or _utf8_ok(text))
    if kind in _SCALARS:
        return True
    if kind is float:
        return math.isfinite(cast("float", value))
    return False


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_json(value: object, path: str, depth: int = 0) -> None:
    """Walk a JSON value: str keys, finite numbers, no NUL, valid Unicode, bounded nesting, nothing json.dumps
    would silently convert."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationError(f"{path} contains a NUL character (U+0000)", field=path, rule="no_nul")
        if not value.isascii():
            _check_utf8(value, path)
    elif isinstance(value, dict):
        if depth >= MAX_JSON_DEPTH:
            raise ValidationError(f"{path} nests deeper than {MAX_JSON_DEPTH} levels", field=path, rule="max_depth")
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"{path} has a non-string key {key!r}", field=path, rule="string_keys")
            if "\x00" in key:
                raise ValidationError(f"{path} has a key with a NUL character", field=path, rule="no_nul")
            if not key.isascii():
                _check_utf8(key, path)
            _check_json(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, (list, tuple)):
        if depth >= MAX_JSON_DEPTH:
            raise ValidationError(f"{path} nests deeper than {MAX_JSON_DEPTH} levels", field=path, rule="max_depth")
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, bool) or value is None or isinstance(value, int):
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{path} is {value}, which JSON cannot carry", field=path, rule="finite")
    else:
        raise ValidationError(
            f"{path} has a {type(value).__name__}, which is not a JSON value", field=path, rule="json_value"
        )


def encode_object(value: object, name: str) -> str:
    """Serialize a JSON object to compact JSON, or raise ValidationError naming the offending path."""
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"{name} must be a JSON object, got {type(value).__name__}", field=name, rule="json_object"
        )
    if not isinstance(value, dict):
        value = dict(value)
    if not _plain(value):
        _check_json(value, name)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def prepare(
    event: NewEvent, *, max_event_bytes: int, index: int | None = None, check: TypeCheck | None = None
) -> PreparedEvent:
    """Validate one event and serialize its payloads. Raises ValidationError (or EventTooLarge).

    ``check`` (the type registry's) validates ``data`` against the type's schema and may return an enriched
    event; it runs before serialization.
    """
    at = "" if index is None else f"events[{index}]."
    if not isinstance(event, NewEvent):
        raise ValidationError(
            f"{at or 'event '}must be a meshlog.NewEvent, got {type(event).__name__}",
            field=at.rstrip(".") or "event",
            rule="type",
        )
    if check is not None:
        event = check(event, index)
    type_ = event.type
    if isinstance(type_, str) and "\x00" in type_:
        raise ValidationError(f"{at}type contains a NUL character", field=f"{at}type", rule="no_nul")
    if not isinstance(type_, str) or not _TYPE_RE.fullmatch(type_):
        raise ValidationError(
            f"{at}type must match {_TYPE_RE.pattern} (letters, digits and . _ : / -), got {type_!r}",
            field=f"{at}type",
            rule="pattern",
        )
    version = event.version
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise ValidationError(
            f"{at}version must be an integer from 1 to {MAX_VERSION}, got {version!r}", field=f"{at}version", rule="min"
        )
    trace_id = _text(event.trace_id, f"{at}trace_id")
    task_id = _text(event.task_id, f"{at}task_id")
    agent_id = _text(event.agent_id, f"{at}agent_id")
    stream = _text(event.stream, f"{at}stream") or default_stream(task_id, trace_id, agent_id)
    key = _text(event.idempotency_key, f"{at}idempotency_key")
    data_json = encode_object(event.data, f"{at}data")
    metadata_json = "{}" if event.metadata is None else encode_object(event.metadata, f"{at}metadata")
    size = _utf8_len(data_json) + _utf8_len(metadata_json)
    if size > max_event_bytes:
        raise EventTooLarge(
            f"{at}data and metadata take {size} bytes, over the limit of {max_event_bytes}",
            field=f"{at}data",
            size=size,
            limit=max_event_bytes,
        )
    parent_id = None if event.parent_id is None else _uuid(event.parent_id, f"{at}parent_id")
    related = event.related
    if isinstance(related, (str, bytes)) or not isinstance(related, Sequence):
        raise ValidationError(f"{at}related must be a list of event ids", field=f"{at}related", rule="type")
    related_ids = tuple(dict.fromkeys(_uuid(r, f"{at}related[{i}]") for i, r in enumerate(related)))
    occurred_at = event.occurred_at
    if occurred_at is not None and (not isinstance(occurred_at, datetime) or occurred_at.tzinfo is None):
        raise ValidationError(
            f"{at}occurred_at must be a timezone-aware datetime", field=f"{at}occurred_at", rule="aware"
        )
    id_given = event.id is not None
    event_id = _uuid(event.id, f"{at}id") if id_given else uuid7()
    if parent_id == event_id:
        raise ValidationError(f"{at}parent_id is the event itself", field=f"{at}parent_id", rule="no_cycle")
    return PreparedEvent(
        id=event_id,
        stream=stream,
        type=type_,
        version=version,
        data_json=data_json,
        metadata_json=metadata_json,
        trace_id=trace_id,
        task_id=task_id,
        agent_id=agent_id,
        parent_id=parent_id,
        related=related_ids,
        idempotency_key=key,
        occurred_at=occurred_at,
        id_given=id_given,
        external_parent=bool(event.external_parent),
    )


def check_expected_version(expected: object) -> ExpectedVersion:
    if isinstance(expected, StreamState):
        return expected
    if isinstance(expected, bool) or not isinstance(expected, int) or not 0 <= expected <= MAX_POSITION:
        raise ValidationError(
            "expected_version must be an integer >= 0 or one of meshlog.ANY, NO_STREAM, STREAM_EXISTS, "
            f"got {expected!r}",
            field="expected_version",
            rule="expected_version",
        )
    return expected


def prepare_request(
    tenant: str,
    events: Sequence[NewEvent],
    *,
    expected_version: object,
    max_event_bytes: int,
    single: bool = False,
    check: TypeCheck | None = None,
) -> AppendRequest:
    """Validate a whole append. Raises before anything is written."""
    expected = check_expected_version(expected_version)
    if isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Sequence):
        raise ValidationError("events must be a list of meshlog.NewEvent", field="events", rule="type")
    if not events:
        raise ValidationError("a batch needs at least one event", field="events", rule="non_empty")
    if len(events) > MAX_BATCH:
        raise ValidationError(
            f"a batch holds at most {MAX_BATCH} events, got {len(events)}", field="events", rule="max_items"
        )
    prepared = [
        prepare(e, max_event_bytes=max_event_bytes, index=None if single else i, check=check)
        for i, e in enumerate(events)
    ]
    if len(prepared) > 1:
        later = {p.id: i for i, p in enumerate(prepared)}
        for i, p in enumerate(prepared):
            if p.parent_id is not None and later.get(p.parent_id, -1) > i:
                raise ValidationError(
                    f"events[{i}].parent_id names a later event of this batch: a parent must come first",
                    field=f"events[{i}].parent_id",
                    rule="parent_first",
                )
        ids: set[str] = set()
        keys: set[str] = set()
        for i, p in enumerate(prepared):
            if p.id in ids:
                raise ValidationError(
                    f"events[{i}].id repeats an id of this batch", field=f"events[{i}].id", rule="unique"
                )
            ids.add(p.id)
            if p.idempotency_key is not None:
                if p.idempotency_key in keys:
                    raise ValidationError(
                        f"events[{i}].idempotency_key repeats a key of this batch",
                        field=f"events[{i}].idempotency_key",
                        rule="unique",
                    )
                keys.add(p.idempotency_key)
    stream = None
    if expected is not StreamState.ANY:
        streams = {p.stream for p in prepared}
        if len(streams) != 1:
            raise ValidationError(
                "expected_version needs every event of the batch in one stream, got " + ", ".join(sorted(streams)),
                field="expected_version",
                rule="single_stream",
            )
        stream = prepared[0].stream
    return AppendRequest(tenant=tenant, events=prepared, expected_version=expected, stream=stream)
