"""Aggregate counts of a tenant's events over a time window (no I/O): the figures of an overview page.

A window is a range of ``recorded_at`` (``since`` inclusive, ``until`` exclusive) cut into buckets of
``bucket_seconds`` that start at ``since``; the last bucket ends at ``until`` and may be shorter. Stores count
(in SQL, with ``GROUP BY`` over the ``recorded_at`` index, never by loading events) and hand the counts to
:func:`build_stats`, which fills the empty buckets, orders the lists and picks the failures out, so every store
answers with the same :class:`EventStats`.

A failure is told by its type alone (:func:`is_failure_type`): counting by payload would mean reading every
event's data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from meshlog.errors import ValidationError
from meshlog.session import canonical_type

__all__ = [
    "DEFAULT_BUCKET_SECONDS",
    "MAX_BUCKETS",
    "MAX_WINDOW",
    "EventStats",
    "bucket_count",
    "build_stats",
    "check_window",
    "is_failure_type",
]

DEFAULT_BUCKET_SECONDS: Final = 60
MAX_WINDOW: Final = timedelta(days=7)
"""The longest window one call may count."""
MAX_BUCKETS: Final = 10_080
"""The most buckets one window may have (7 days of minutes)."""
_FAILURE_SUFFIXES: Final = ("_error", "_failure", "_failed")


def is_failure_type(event_type: str) -> bool:
    """Whether events of this type report a failure: types ending in ``.error``, ``.failure``, ``.failed``,
    ``_error``, ``_failure`` or ``_failed`` (``llm.error``, ``task.result.failure``, ``deployment_failed``), or
    named ``error``. The separators ``.``, ``-``, ``/``, ``:`` count alike and case is ignored, as in
    :func:`meshlog.session.is_failure`, which also reads the payload."""
    kind = canonical_type(event_type)
    return kind in ("error", "error_occurred") or kind.endswith(_FAILURE_SUFFIXES)


def check_window(since: datetime, until: datetime, bucket_seconds: int) -> None:
    """Raise ValidationError unless the window and bucket make a countable timeline: timezone-aware bounds,
    ``since < until``, at most :data:`MAX_WINDOW` long, a whole number of seconds >= 1 per bucket and at most
    :data:`MAX_BUCKETS` buckets."""
    for name, value in (("until", until), ("since", since)):
        if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError(f"{name} must be a timezone-aware datetime", field=name, rule="aware")
    if isinstance(bucket_seconds, bool) or not isinstance(bucket_seconds, int) or bucket_seconds < 1:
        raise ValidationError(
            f"bucket must be a whole number of seconds >= 1, got {bucket_seconds!r}", field="bucket", rule="min"
        )
    if until <= since:
        raise ValidationError("until must be after since", field="until", rule="after_since")
    if until - since > MAX_WINDOW:
        raise ValidationError(
            f"the window is at most {MAX_WINDOW.days} days long, got {until - since}", field="since", rule="max_window"
        )
    buckets = bucket_count(since, until, bucket_seconds)
    if buckets > MAX_BUCKETS:
        raise ValidationError(
            f"the window holds {buckets} buckets of {bucket_seconds} s; at most {MAX_BUCKETS}: use a larger bucket",
            field="bucket",
            rule="max_buckets",
        )


def bucket_count(since: datetime, until: datetime, bucket_seconds: int) -> int:
    """How many buckets of ``bucket_seconds`` cover ``[since, until)`` (the last one may be partial)."""
    span = _micros(until - since)
    size = bucket_seconds * 1_000_000
    return -(-span // size)


def bucket_index(since: datetime, recorded_at: datetime, bucket_seconds: int) -> int:
    """The index of the bucket that ``recorded_at`` (inside the window) falls in."""
    return _micros(recorded_at - since) // (bucket_seconds * 1_000_000)


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class EventStats:
    """Counts of a tenant's events recorded in ``[since, until)``.

    ``timeline`` has one ``(bucket start, count)`` per bucket, empty buckets included, oldest first;
    ``by_type`` and ``by_agent`` are ordered by count, highest first (then by name; events without an agent come
    under None, last among equals); ``failures`` counts the events of failure types (:func:`is_failure_type`),
    ``failures_by_type`` splits them by type.
    """

    since: datetime
    until: datetime
    bucket_seconds: int
    total: int
    timeline: tuple[tuple[datetime, int], ...]
    by_type: tuple[tuple[str, int], ...]
    by_agent: tuple[tuple[str | None, int], ...]
    failures: int
    failures_by_type: tuple[tuple[str, int], ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the body of ``GET /v1/stats``; datetimes as ISO 8601 strings)."""
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "bucket_seconds": self.bucket_seconds,
            "total": self.total,
            "timeline": [{"start": start.isoformat(), "count": count} for start, count in self.timeline],
            "by_type": [{"type": t, "count": count} for t, count in self.by_type],
            "by_agent": [{"agent_id": a, "count": count} for a, count in self.by_agent],
            "failures": self.failures,
            "failures_by_type": [{"type": t, "count": count} for t, count in self.failures_by_type],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> EventStats:
        """The stats from :meth:`to_dict`'s form. Raises KeyError, TypeError or ValueError on another shape."""
        return cls(
            since=_aware(raw["since"]),
            until=_aware(raw["until"]),
            bucket_seconds=_int(raw["bucket_seconds"]),
            total=_int(raw["total"]),
            timeline=tuple((_aware(b["start"]), _int(b["count"])) for b in raw["timeline"]),
            by_type=tuple((str(t["type"]), _int(t["count"])) for t in raw["by_type"]),
            by_agent=tuple(
                (None if a["agent_id"] is None else str(a["agent_id"]), _int(a["count"])) for a in raw["by_agent"]
            ),
            failures=_int(raw["failures"]),
            failures_by_type=tuple((str(t["type"]), _int(t["count"])) for t in raw["failures_by_type"]),
        )


def _aware(text: object) -> datetime:
    if not isinstance(text, str):
        raise TypeError(f"expected an ISO 8601 string, got {text!r}")
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return value.astimezone(UTC)


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _ordered(counts: Mapping[Any, int]) -> list[tuple[Any, int]]:
    return sorted(((key, n) for key, n in counts.items() if n > 0), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or ""))


def build_stats(
    since: datetime,
    until: datetime,
    bucket_seconds: int,
    *,
    buckets: Iterable[tuple[int, int]],
    by_type: Iterable[tuple[str, int]],
    by_agent: Iterable[tuple[str | None, int]],
) -> EventStats:
    """The stats of a window from a store's counts: ``buckets`` as (bucket index, count), ``by_type`` as
    (type, count), ``by_agent`` as (agent id or None, count); a key may repeat (its counts add up). Indexes
    outside the window are a store's bug and raise ValueError."""
    n = bucket_count(since, until, bucket_seconds)
    counts = [0] * n
    for index, count in buckets:
        if not 0 <= index < n:
            raise ValueError(f"bucket index {index} outside the window's {n} buckets")
        counts[index] += int(count)
    step = timedelta(seconds=bucket_seconds)
    start = since.astimezone(UTC)
    types: dict[str, int] = {}
    for t, count in by_type:
        types[t] = types.get(t, 0) + int(count)
    agents: dict[str | None, int] = {}
    for a, count in by_agent:
        agents[a] = agents.get(a, 0) + int(count)
    failed = {t: c for t, c in types.items() if is_failure_type(t)}
    return EventStats(
        since=start,
        until=until.astimezone(UTC),
        bucket_seconds=bucket_seconds,
        total=sum(counts),
        timeline=tuple((start + i * step, c) for i, c in enumerate(counts)),
        by_type=tuple(_ordered(types)),
        by_agent=tuple(_ordered(agents)),
        failures=sum(failed.values()),
        failures_by_type=tuple(_ordered(failed)),
    )
