"""The tracing writer's counters as Prometheus metrics (when prometheus-client is installed).

- ``meshlog_tracing_events_total{outcome}``: ``enqueued``, ``written``, ``spooled``, ``delivered``, ``dropped``,
  ``spool_full``, ``rejected``.
- ``meshlog_tracing_errors_total``: errors inside tracing that were caught.
- ``meshlog_tracing_queue_depth``, ``meshlog_tracing_spool_pending``: events waiting now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from meshlog.tracing._writer import TracingStats

__all__ = ["register"]

_registered = False


def register(stats: Callable[[], TracingStats]) -> None:
    """Register the collector in prometheus-client's default registry (once per process)."""
    global _registered
    if _registered:
        return
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector

    class TracingCollector(Collector):
        def collect(self) -> Iterator[Any]:
            s = stats()
            events = CounterMetricFamily(
                "meshlog_tracing_events", "Tracing events by what became of them.", labels=["outcome"]
            )
            for outcome in ("enqueued", "written", "spooled", "delivered", "dropped", "spool_full", "rejected"):
                events.add_metric([outcome], getattr(s, outcome))
            yield events
            yield CounterMetricFamily("meshlog_tracing_errors", "Errors inside tracing, caught.", value=s.errors)
            yield GaugeMetricFamily("meshlog_tracing_queue_depth", "Tracing events queued now.", value=s.queue_depth)
            yield GaugeMetricFamily(
                "meshlog_tracing_spool_pending", "Tracing events waiting in the spool.", value=s.spool_pending
            )

    REGISTRY.register(TracingCollector())
    _registered = True
