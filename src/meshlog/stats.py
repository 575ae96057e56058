"""Aggregate counts of a tenant's events over a time window (no I/O): the figures of an overview page, and the
summaries of the traces that ran in it.

A window is a range of ``recorded_at`` (``since`` inclusive, ``until`` exclusive) cut into buckets of
``bucket_seconds`` that start at ``since``; the last bucket ends at ``until`` and may be shorter. Stores count
(in SQL, with ``GROUP BY`` over the ``recorded_at`` index, never by loading events) and hand the counts to
:func:`build_stats`, which fills the empty buckets, orders the lists and picks the failures out, so every store
answers with the same :class:`EventStats`.

A failure is told by its type alone (:func:`is_failure_type`; :func:`failure_type_sql` is the same rule in SQL):
counting by payload would mean reading every event's data.

:class:`TraceSummary` sums up one trace's events recorded in a window: stores group by ``trace_id`` in SQL over the
same ``recorded_at`` range (``started`` and ``last`` are ``recorded_at`` times, the store's own clock, which the
window is cut by and indexed on; ``occurred_at`` is optional and set by callers) and return the most recently
active traces first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from meshlog.errors import ValidationError
from meshlog.session import canonical_type

__all__ = [
    "DEFAULT_BUCKET_SECONDS",
    "DEFAULT_TRACE_LIMIT",
    "LLM_CALL_TYPE",
    "LLM_RESULT_TYPES",
    "MAX_BUCKETS",
    "MAX_TRACE_AGENTS",
    "MAX_TRACE_LIMIT",
    "MAX_WINDOW",
    "EventStats",
    "TraceSummary",
    "bucket_count",
    "build_stats",
    "check_range",
    "check_trace_query",
    "check_window",
    "event_tokens",
    "failure_type_sql",
    "is_failure_type",
    "sort_traces",
    "trace_agents",
]

DEFAULT_BUCKET_SECONDS: Final = 60
MAX_WINDOW: Final = timedelta(days=7)
"""The longest window one call may count."""
MAX_BUCKETS: Final = 10_080
"""The most buckets one window may have (7 days of minutes)."""
DEFAULT_TRACE_LIMIT: Final = 50
"""How many traces :meth:`~meshlog.EventLog.traces` returns unless told."""
MAX_TRACE_LIMIT: Final = 500
"""The most traces one call may return."""
MAX_TRACE_AGENTS: Final = 10
"""The most agent ids a :class:`TraceSummary` names (the first ones in code point order)."""
LLM_CALL_TYPE: Final = "llm.call"
"""The type a trace's LLM calls are counted by (:mod:`meshlog.tracing` writes one per call)."""
LLM_RESULT_TYPES: Final = ("llm.response", "llm.error")
"""The types whose payloads carry an LLM call's tokens (:func:`event_tokens`)."""
_FAILURE_SUFFIXES: Final = ("_error", "_failure", "_failed")
_FAILURE_NAMES: Final = ("error", "error_occurred")


def is_failure_type(event_type: str) -> bool:
    """Whether events of this type report a failure: types ending in ``.error``, ``.failure``, ``.failed``,
    ``_error``, ``_failure`` or ``_failed`` (``llm.error``, ``task.result.failure``, ``deployment_failed``), or
    named ``error``. The separators ``.``, ``-``, ``/``, ``:`` count alike and case is ignored, as in
    :func:`meshlog.session.is_failure`, which also reads the payload."""
    kind = canonical_type(event_type)
    return kind in _FAILURE_NAMES or kind.endswith(_FAILURE_SUFFIXES)


def failure_type_sql(column: str = "type") -> str:
    """:func:`is_failure_type` as an SQL condition on the text ``column``, for SQLite and PostgreSQL alike: the
    separators replaced by ``_``, lower case, then the names and suffixes compared (``substr`` from the length
    rather than ``LIKE``, whose ``_`` is a wildcard and whose ``%`` psycopg would take for a placeholder; the
    replacements and ``lower`` keep the length). The aliases of :func:`~meshlog.session.canonical_type` never turn
    a failure into a success or back, so the normalized type decides. ``lower`` folds only ASCII letters in SQLite;
    the names and suffixes are ASCII."""
    kind = f"lower({column})"
    for separator in ".-/:":
        kind = f"replace({kind}, '{separator}', '_')"
    names = ", ".join(f"'{name}'" for name in _FAILURE_NAMES)
    ends = " OR ".join(f"substr({kind}, length({column}) - {len(s) - 1}) = '{s}'" for s in _FAILURE_SUFFIXES)
    return f"({kind} IN ({names}) OR {ends})"


def _check_aware(since: datetime, until: datetime) -> None:
    for name, value in (("until", until), ("since", since)):
        if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError(f"{name} must be a timezone-aware datetime", field=name, rule="aware")


def _check_length(since: datetime, until: datetime) -> None:
    if until <= since:
        raise ValidationError("until must be after since", field="until", rule="after_since")
    if until - since > MAX_WINDOW:
        raise ValidationError(
            f"the window is at most {MAX_WINDOW.days} days long, got {until - since}", field="since", rule="max_window"
        )


def check_range(since: datetime, until: datetime) -> None:
    """Raise ValidationError unless ``[since, until)`` is a window one call may read: timezone-aware bounds,
    ``since < until``, at most :data:`MAX_WINDOW` long."""
    _check_aware(since, until)
    _check_length(since, until)


def check_trace_query(since: datetime, until: datetime, limit: int, agent_id: str | None) -> None:
    """Raise ValidationError unless the arguments make a valid :meth:`~meshlog.EventLog.traces` call: a window
    as :func:`check_range` wants it, ``limit`` an integer from 1 to :data:`MAX_TRACE_LIMIT`, ``agent_id`` None or
    a non-empty string without NUL characters."""
    check_range(since, until)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_TRACE_LIMIT:
        raise ValidationError(
            f"limit must be an integer from 1 to {MAX_TRACE_LIMIT}, got {limit!r}", field="limit", rule="range"
        )
    if agent_id is None:
        return
    if not isinstance(agent_id, str):
        raise ValidationError("agent_id must be a string", field="agent_id", rule="type")
    if not agent_id:
        raise ValidationError("agent_id must not be empty", field="agent_id", rule="non_empty")
    if "\x00" in agent_id:
        raise ValidationError("agent_id contains a NUL character", field="agent_id", rule="no_nul")


def check_window(since: datetime, until: datetime, bucket_seconds: int) -> None:
    """Raise ValidationError unless the window and bucket make a countable timeline: timezone-aware bounds,
    ``since < until``, at most :data:`MAX_WINDOW` long, a whole number of seconds >= 1 per bucket and at most
    :data:`MAX_BUCKETS` buckets."""
    _check_aware(since, until)
    if isinstance(bucket_seconds, bool) or not isinstance(bucket_seconds, int) or bucket_seconds < 1:
        raise ValidationError(
            f"bucket must be a whole number of seconds >= 1, got {bucket_seconds!r}", field="bucket", rule="min"
        )
    _check_length(since, until)
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


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """One trace's events recorded in a window (only those: a trace that began before the window starts, here, at
    its first event inside it).

    ``started`` and ``last`` are the first and last ``recorded_at``; ``events`` counts the events, ``llm_calls``
    those of type ``llm.call``, ``failures`` those of failure types (:func:`is_failure_type`); ``tokens`` adds up the
    LLM calls' tokens (:func:`event_tokens` of the ``llm.response`` and ``llm.error`` events, as a trace's waterfall
    does); ``agents`` are the distinct agent ids, in code point order, at most :data:`MAX_TRACE_AGENTS` of them.
    """

    trace_id: str
    started: datetime
    last: datetime
    events: int
    agents: tuple[str, ...]
    llm_calls: int
    tokens: int
    failures: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (an item of ``GET /v1/traces``; datetimes as ISO 8601 strings)."""
        return {
            "trace_id": self.trace_id,
            "started": self.started.isoformat(),
            "last": self.last.isoformat(),
            "events": self.events,
            "agents": list(self.agents),
            "llm_calls": self.llm_calls,
            "tokens": self.tokens,
            "failures": self.failures,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TraceSummary:
        """The summary from :meth:`to_dict`'s form. Raises KeyError, TypeError or ValueError on another shape."""
        agents = raw["agents"]
        if not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
            raise TypeError(f"agents must be a list of strings, got {agents!r}")
        trace_id = raw["trace_id"]
        if not isinstance(trace_id, str):
            raise TypeError(f"trace_id must be a string, got {trace_id!r}")
        return cls(
            trace_id=trace_id,
            started=_aware(raw["started"]),
            last=_aware(raw["last"]),
            events=_int(raw["events"]),
            agents=tuple(agents),
            llm_calls=_int(raw["llm_calls"]),
            tokens=_int(raw["tokens"]),
            failures=_int(raw["failures"]),
        )


def event_tokens(event_type: str, data: Mapping[str, Any]) -> int:
    """The tokens an event counts for in :attr:`TraceSummary.tokens`: for ``llm.response`` and ``llm.error``,
    ``total_tokens``, else ``input_tokens + output_tokens``, each a non-negative number (truncated to an integer;
    anything else does not count); 0 for other events. SQL stores apply the same rule to the payload."""
    if event_type not in LLM_RESULT_TYPES:
        return 0
    total = _token_count(data.get("total_tokens"))
    if total is not None:
        return total
    given, produced = _token_count(data.get("input_tokens")), _token_count(data.get("output_tokens"))
    return 0 if given is None or produced is None else given + produced


def _token_count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return None
    return int(value)


def trace_agents(agent_ids: Iterable[str | None]) -> tuple[str, ...]:
    """A :class:`TraceSummary`'s ``agents`` from a trace's agent ids (repeats and None allowed): distinct, in code
    point order, the first :data:`MAX_TRACE_AGENTS`."""
    return tuple(sorted({a for a in agent_ids if a is not None})[:MAX_TRACE_AGENTS])


def sort_traces(summaries: Iterable[TraceSummary]) -> list[TraceSummary]:
    """The traces' order: the last active first, then by trace id (code point order, as SQL stores sort it)."""
    by_id = sorted(summaries, key=lambda t: t.trace_id)
    return sorted(by_id, key=lambda t: t.last, reverse=True)  # stable: equal times keep the trace id order
