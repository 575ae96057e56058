"""SQL text shared by the SQL stores, built without I/O (values always travel as parameters)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from meshlog.query import EventFilter, Order

EVENT_COLUMNS = (
    "position, id, tenant, stream, stream_position, type, version, data, metadata, trace_id, task_id, "
    "agent_id, parent_id, root_id, depth, related, idempotency_key, occurred_at, recorded_at"
)
TOKEN_COLUMNS = "id, tenant, scopes, secret_hash, name, created_at, expires_at, revoked_at"  # noqa: S105 - names
INSTANCE_COLUMNS = (
    "id, tenant, status, registered_at, last_heartbeat, name, project, host, metadata, heartbeat_event_at, closed_at"
)
"""The columns of ``instances`` in :class:`~meshlog.registry.Instance`'s field order."""


def where(
    tenant: str,
    flt: EventFilter,
    *,
    ph: str,
    text_clause: str,
    time_value: Callable[[datetime], object],
) -> tuple[str, list[object]]:
    """A WHERE clause (without the keyword) and its parameters for the tenant and filter.

    ``ph`` is the driver's placeholder; ``text_clause`` tests one placeholder against ``data``'s strings.
    """
    parts = [f"tenant = {ph}"]
    params: list[object] = [tenant]
    for column in ("stream", "trace_id", "task_id", "agent_id", "parent_id"):
        value = getattr(flt, column)
        if value is not None:
            parts.append(f"{column} = {ph}")
            params.append(value)
    if flt.types is not None:
        if len(flt.types) == 1:
            parts.append(f"type = {ph}")
        else:
            parts.append(f"type IN ({', '.join([ph] * len(flt.types))})")
        params.extend(flt.types)
    if flt.since is not None:
        parts.append(f"recorded_at >= {ph}")
        params.append(time_value(flt.since))
    if flt.until is not None:
        parts.append(f"recorded_at < {ph}")
        params.append(time_value(flt.until))
    # Within one stream the (tenant, stream, stream_position) index is the one to use (see order_by); the unary
    # plus keeps SQLite's planner, which has no statistics, from picking the position index for the bounds.
    position = "+position" if flt.stream is not None else "position"
    if flt.after_position is not None:
        parts.append(f"{position} > {ph}")
        params.append(flt.after_position)
    if flt.before_position is not None:
        parts.append(f"{position} < {ph}")
        params.append(flt.before_position)
    if flt.text is not None:
        parts.append(text_clause)
        params.append(flt.text)
    return " AND ".join(parts), params


def order_by(order: Order, flt: EventFilter | None = None) -> str:
    """The ORDER BY of a query in position order. Within one stream ``stream_position`` grows with ``position``,
    so a query of one stream orders by it instead, which the (tenant, stream, stream_position) index serves:
    "the last 100 events of this stream" then reads 100 index entries instead of sorting the whole stream."""
    column = "stream_position" if flt is not None and flt.stream is not None else "position"
    return f"{column} ASC" if order == "asc" else f"{column} DESC"
