"""Query filters, result pages and keyset cursors (no I/O)."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Literal

from meshlog.errors import InvalidCursor, ValidationError
from meshlog.events import RecordedEvent

__all__ = ["EventFilter", "Order", "Page"]

Order = Literal["asc", "desc"]
MAX_LIMIT: Final = 1000
_MAX_POSITION: Final = 2**63 - 1
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
DEFAULT_LIMIT: Final = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    """Which events a query or subscription wants. Every given field must match (AND).

    ``types`` matches any of the listed types; ``since`` is inclusive and ``until`` exclusive on
    ``recorded_at``; ``after_position`` and ``before_position`` are exclusive; ``parent_id`` selects the
    direct children of an event; ``text`` matches events with a string value anywhere in ``data`` that
    contains it, ignoring the case of ASCII letters (keys, numbers and booleans are not searched).
    """

    stream: str | None = None
    types: tuple[str, ...] | None = None
    trace_id: str | None = None
    task_id: str | None = None
    agent_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_position: int | None = None
    before_position: int | None = None
    text: str | None = None
    parent_id: str | None = None

    def __post_init__(self) -> None:
        if self.types is not None:
            types: object = self.types
            object.__setattr__(self, "types", (types,) if isinstance(types, str) else tuple(self.types))
            if not all(isinstance(t, str) and t for t in self.types or ()):
                raise ValidationError("types must be non-empty strings", field="types", rule="type")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise ValidationError(f"{name} must be a timezone-aware datetime", field=name, rule="aware")
        for name in ("after_position", "before_position"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_POSITION
            ):
                raise ValidationError(f"{name} must be an integer from 0 to {_MAX_POSITION}", field=name, rule="min")
        for name in ("stream", "trace_id", "task_id", "agent_id", "text", "parent_id"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValidationError(f"{name} must be a string", field=name, rule="type")
            if isinstance(value, str) and "\x00" in value:
                raise ValidationError(f"{name} contains a NUL character", field=name, rule="no_nul")

        if self.parent_id is not None:
            try:
                object.__setattr__(self, "parent_id", str(uuid.UUID(self.parent_id)))
            except ValueError:
                raise ValidationError("parent_id must be a UUID", field="parent_id", rule="uuid") from None

    def matches(self, event: RecordedEvent) -> bool:
        """Whether ``event`` passes this filter (the reference semantics every store follows)."""
        if self.stream is not None and event.stream != self.stream:
            return False
        if self.types is not None and event.type not in self.types:
            return False
        if self.trace_id is not None and event.trace_id != self.trace_id:
            return False
        if self.task_id is not None and event.task_id != self.task_id:
            return False
        if self.agent_id is not None and event.agent_id != self.agent_id:
            return False
        if self.parent_id is not None and event.parent_id != self.parent_id:
            return False
        if self.since is not None and event.recorded_at < self.since:
            return False
        if self.until is not None and event.recorded_at >= self.until:
            return False
        if self.after_position is not None and event.position <= self.after_position:
            return False
        if self.before_position is not None and event.position >= self.before_position:
            return False
        return self.text is None or _contains_text(event.data, self.text.translate(_ASCII_LOWER))

    def is_empty(self) -> bool:
        return self == _EMPTY

    def _as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if value is None:
                continue
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    @classmethod
    def _from_json(cls, raw: dict[str, Any]) -> EventFilter:
        values: dict[str, Any] = dict(raw)
        for key in ("since", "until"):
            if key in values:
                values[key] = datetime.fromisoformat(values[key])
        if "types" in values:
            values["types"] = tuple(values["types"])
        return cls(**values)


_EMPTY: Final = EventFilter()


def _contains_text(value: object, needle: str) -> bool:
    if isinstance(value, str):
        return needle in value.translate(_ASCII_LOWER)
    if isinstance(value, dict):
        return any(_contains_text(v, needle) for v in value.values())
    if isinstance(value, list):
        return any(_contains_text(v, needle) for v in value)
    return False


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(
            f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}", field="limit", rule="range"
        )
    return limit


def check_order(order: object) -> Order:
    """``order`` as a valid Order."""
    if order == "asc":
        return "asc"
    if order == "desc":
        return "desc"
    raise ValidationError(f"order must be 'asc' or 'desc', got {order!r}", field="order", rule="enum")


def encode_cursor(flt: EventFilter, order: Order, position: int) -> str:
    payload = {"v": 1, "o": order, "p": position, "f": flt._as_json()}
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[EventFilter, Order, int]:
    """The filter, order and last position a cursor was issued for. Raises InvalidCursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if payload.get("v") != 1:
            raise ValueError("unknown cursor version")
        order = check_order(payload["o"])
        position = payload["p"]
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ValueError("bad position")
        flt = EventFilter._from_json(payload["f"])
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise InvalidCursor(f"invalid cursor: {cursor[:40]!r}") from exc
    return flt, order, position


def resolve_page_request(
    flt: EventFilter, order: Order | None, cursor: str | None
) -> tuple[EventFilter, EventFilter, Order]:
    """Combine the caller's filter with a cursor.

    Returns (the filter the cursor and next cursor describe, the filter to run with the keyset bound applied,
    the order). A cursor alone is enough; filters given with it must equal those it was issued for.
    """
    if cursor is None:
        return flt, flt, order or "asc"
    c_flt, c_order, position = decode_cursor(cursor)
    if not flt.is_empty() and flt != c_flt:
        raise InvalidCursor("the cursor was issued for a different filter")
    if order is not None and order != c_order:
        raise InvalidCursor(f"the cursor was issued for order={c_order!r}")
    order = c_order
    if order == "asc":
        bound = position if c_flt.after_position is None else max(position, c_flt.after_position)
        run = replace(c_flt, after_position=bound)
    else:
        bound = position if c_flt.before_position is None else min(position, c_flt.before_position)
        run = replace(c_flt, before_position=bound)
    return c_flt, run, order


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a query: its events, whether more match, and the cursor for the next page."""

    events: list[RecordedEvent]
    has_more: bool
    next_cursor: str | None
    total_count: int | None = field(default=None)

    def __iter__(self) -> Iterator[RecordedEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: int) -> RecordedEvent:
        return self.events[index]


def make_page(rows: Sequence[RecordedEvent], limit: int, flt: EventFilter, order: Order, total: int | None) -> Page:
    """Build a page from up to ``limit + 1`` rows (the extra row only says that more exist)."""
    has_more = len(rows) > limit
    events = list(rows[:limit])
    cursor = encode_cursor(flt, order, events[-1].position) if has_more and events else None
    return Page(events=events, has_more=has_more, next_cursor=cursor, total_count=total)
