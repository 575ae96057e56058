"""Prometheus metrics of one server app, in a registry of its own (so that several apps in one process, as in
tests, do not collide).

- ``meshlog_events_written_total{type}``: events acknowledged by ``POST /v1/events`` and outcomes.
- ``meshlog_events_rejected_total{code}``: write requests answered with a problem, by problem code.
- ``meshlog_http_request_duration_seconds{route,method}``: request latency by route template.
- ``meshlog_group_commit_queue_depth``: appends waiting while a group commit is in flight (read at scrape).
- ``meshlog_store_errors_total``: requests that failed because the store failed or was unreachable.
- ``meshlog_dapr_messages_total{topic,status}``: Dapr messages answered (when the Dapr routes are included).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The server's collectors; ``render()`` gives the Prometheus text exposition."""

    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events_written = Counter(
            "meshlog_events_written", "Events written (acknowledged), by type.", ["type"], registry=self.registry
        )
        self.events_rejected = Counter(
            "meshlog_events_rejected",
            "Write requests rejected with a problem, by problem code.",
            ["code"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "meshlog_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "meshlog_group_commit_queue_depth",
            "Appends waiting while a group commit is in flight.",
            registry=self.registry,
        )
        self.queue_depth.set_function(queue_depth)
        self.store_errors = Counter(
            "meshlog_store_errors",
            "Requests that failed because the store failed or was unreachable.",
            registry=self.registry,
        )

        self.dapr_messages = Counter(
            "meshlog_dapr_messages",
            "Dapr pub/sub messages answered, by topic and status (SUCCESS, RETRY, DROP).",
            ["topic", "status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)
