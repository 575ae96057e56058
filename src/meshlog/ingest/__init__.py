"""Ingestion from message buses: events that travel over NATS JetStream and are stored by ingest workers.

Agents publish events (:func:`publish_nats`, or a :class:`~meshlog.ingest.nats.NatsPublisher` that keeps its
connection) instead of appending them; ``meshlog ingest nats`` (:class:`~meshlog.ingest.nats.NatsIngest`) runs a
worker that stores them, with exactly-once effect. Dapr's JetStream pub/sub component publishes into the same
streams. See docs/ingest.md.

This package imports no NATS client: :mod:`meshlog.ingest.messages` (the message formats) works without one, and
:mod:`meshlog.ingest.nats` needs the ``nats`` extra (``pip install 'meshlog[nats]'``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from meshlog.errors import ConfigurationError
from meshlog.ingest.messages import DecodedMessage, EncodedEvent, decode_message, encode_event

if TYPE_CHECKING:
    from meshlog.ingest.nats import Published

__all__ = [
    "DecodedMessage",
    "EncodedEvent",
    "decode_message",
    "encode_event",
    "publish_nats",
    "publish_nats_async",
]


def _nats_module() -> Any:
    try:
        from meshlog.ingest import nats
    except ImportError as exc:
        raise ConfigurationError(f"NATS needs nats-py: pip install 'meshlog[nats]' ({exc})") from exc
    return nats


async def publish_nats_async(
    servers: str | Sequence[str],
    subject: str,
    type: str,
    data: Mapping[str, Any] | None = None,
    *,
    timeout: float = 5.0,
    **fields: Any,
) -> Published:
    """Publish one event to a JetStream ``subject`` for an ingest worker to store; returns once JetStream holds
    it. ``fields`` are those of :meth:`meshlog.AsyncEventLog.emit` (``task_id``, ``parent_id``,
    ``idempotency_key``, ...). Connects for this one event: keep an
    :class:`~meshlog.ingest.nats.AsyncNatsPublisher` to publish many.

    Raises ``ValidationError`` for an event that could not be stored (nothing is sent), ``StoreUnavailable``
    when NATS cannot be reached, ``ConfigurationError`` without the ``nats`` extra.
    """
    publisher = await _nats_module().AsyncNatsPublisher.connect(servers, subject=subject, timeout=timeout)
    async with publisher:
        published: Published = await publisher.publish(type, data, **fields)
    return published


def publish_nats(
    servers: str | Sequence[str],
    subject: str,
    type: str,
    data: Mapping[str, Any] | None = None,
    *,
    timeout: float = 5.0,
    **fields: Any,
) -> Published:
    """The blocking form of :func:`publish_nats_async` (keep a :class:`~meshlog.ingest.nats.NatsPublisher` to
    publish many)."""
    with _nats_module().NatsPublisher(servers, subject=subject, timeout=timeout) as publisher:
        published: Published = publisher.publish(type, data, **fields)
    return published
