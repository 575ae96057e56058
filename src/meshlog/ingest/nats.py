"""NATS JetStream: ingest workers that store a stream's messages as events, and publishers that put events on it.

Needs the ``nats`` extra: ``pip install 'meshlog[nats]'``.

:class:`NatsIngest` runs a durable pull consumer. It fetches a batch of messages, turns each into events
(:func:`meshlog.ingest.messages.decode_message`: a Dapr CloudEvent or a meshlog event as JSON) and appends the
single events of the batch in one atomic ``emit_batch``; when that batch is refused (one event is invalid, or a
redelivery mixes stored and new events), and for messages that carry a batch or an expected version, each
message is appended alone, all concurrently (the log's group committer shares their transactions). Each message
is acked only after its own events are committed. Its outcome is one of:

- **stored** (acked): the events are committed, now or by an earlier delivery of the same message (a
  *duplicate*: every message's events carry an idempotency key, so a redelivery writes nothing twice);
- **failed** (nak'd with a growing delay): the store failed or could not be reached; JetStream delivers the
  message again after the delay, and keeps doing so until it is stored;
- **malformed** (terminated): the message can never be stored (not JSON, not an event, refused by validation,
  or its key already names a different event); it is published to the dead-letter subject first, when one is
  set, and counted by reason.

Several workers may share one durable consumer: JetStream hands each message to one of them at a time. A
message whose worker dies before acking is delivered again after ``ack_wait``; one whose events take long to
commit is kept from that timeout by ``in_progress`` signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Final, NamedTuple, TypeVar

try:
    import nats
    import nats.errors
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext, api
    from nats.js import errors as js_errors
except ImportError as exc:  # pragma: no cover - exercised by the install smoke test
    raise ImportError(f"meshlog.ingest.nats needs the nats extra: pip install 'meshlog[nats]' ({exc})") from exc

from meshlog._cloudevents import _RULE_REASONS, DEFAULT_TOPICS, DaprSettings, TopicMapper
from meshlog._validation import DEFAULT_MAX_EVENT_BYTES
from meshlog.errors import (
    ConcurrencyError,
    ConfigurationError,
    IdempotencyConflict,
    StoreError,
    StoreUnavailable,
    ValidationError,
)
from meshlog.events import ANY, NewEvent, RecordedEvent
from meshlog.ingest.messages import MSG_ID_HEADER, DecodedMessage, decode_message, encode_event
from meshlog.log_async import AsyncEventLog, connect_async

__all__ = [
    "DEFAULT_DURABLE",
    "DEFAULT_NATS_URL",
    "AsyncNatsPublisher",
    "IngestStats",
    "NatsIngest",
    "NatsPublisher",
    "Published",
    "serve_metrics",
]

logger = logging.getLogger("meshlog.ingest.nats")

DEFAULT_NATS_URL: Final = "nats://127.0.0.1:4222"
DEFAULT_DURABLE: Final = "meshlog-ingest"
_DEAD_LETTER_ERROR_CHARS: Final = 500
T = TypeVar("T")


def _servers(servers: str | Sequence[str]) -> list[str]:
    """NATS server URLs from a list or a comma-separated string."""
    items = [servers] if isinstance(servers, str) else list(servers)
    urls = [url.strip() for item in items for url in item.split(",") if url.strip()]
    if not urls:
        raise ConfigurationError("at least one NATS server URL is needed")
    return urls


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether NATS ``subject`` (or pattern) falls under ``pattern`` (``*`` one token, ``>`` the rest)."""
    want, have = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or part not in ("*", have[i]):
            return False
    return len(want) == len(have)


async def _connect(servers: list[str], *, name: str, connect_timeout: float) -> Client:
    async def on_error(exc: Exception) -> None:
        logger.warning("meshlog: NATS: %s", exc)

    async def on_disconnected() -> None:
        if not client.is_closed:
            logger.warning("meshlog: disconnected from NATS, reconnecting")

    async def on_reconnected() -> None:
        logger.info("meshlog: reconnected to NATS at %s", client.connected_url.netloc if client.connected_url else "?")

    try:
        client: Client = await nats.connect(
            servers,
            name=name,
            connect_timeout=max(1, round(connect_timeout)),
            allow_reconnect=True,
            max_reconnect_attempts=1,  # at start: fail soon when no server answers (see below)
            reconnect_time_wait=1,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
    except (OSError, nats.errors.Error) as exc:
        raise StoreUnavailable(f"cannot connect to NATS at {', '.join(servers)}: {exc or type(exc).__name__}") from exc
    # Once connected, never give up reconnecting: a worker or publisher rides out a NATS restart or a cluster
    # node's loss (the client reads this option at each reconnect).
    client.options["max_reconnect_attempts"] = -1
    return client


# -- counting ---------------------------------------------------------------------------------------------------
@dataclass
class IngestStats:
    """Messages answered since the worker started.

    ``processed``: acked after their events were committed, of which ``duplicates`` had been committed by an
    earlier delivery (before the batch was fetched); ``malformed``: terminated (by reason in
    ``malformed_reasons``: ``not_json``, ``not_cloudevent``, ``data_not_object``, ``invalid_event``,
    ``idempotency_conflict``, ``conflict``), of which ``dead_lettered`` were published to the dead-letter subject;
    ``failures``: nak'd for redelivery because the store (or the dead-letter subject) failed.
    """

    processed: int = 0
    duplicates: int = 0
    malformed: int = 0
    failures: int = 0
    dead_lettered: int = 0
    malformed_reasons: dict[str, int] = field(default_factory=dict)

    def count_malformed(self, reason: str) -> None:
        """Count one message terminated for ``reason``."""
        self.malformed += 1
        self.malformed_reasons[reason] = self.malformed_reasons.get(reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "processed": self.processed,
            "duplicates": self.duplicates,
            "malformed": self.malformed,
            "failures": self.failures,
            "dead_lettered": self.dead_lettered,
            "malformed_reasons": dict(self.malformed_reasons),
        }


def serve_metrics(stats: IngestStats, port: int, host: str = "127.0.0.1") -> Any:
    """Serve ``stats`` for Prometheus at ``http://host:port/metrics`` from a daemon thread; returns the server
    (``server.shutdown()`` stops it). Needs ``prometheus-client`` (in the ``nats`` extra).

    ``meshlog_ingest_messages_total{outcome}`` counts messages by outcome (``stored``, ``duplicate``,
    ``malformed``, ``failed``), ``meshlog_ingest_malformed_total{reason}`` the malformed ones by reason and
    ``meshlog_ingest_dead_letters_total`` those published to the dead-letter subject.
    """
    try:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.core import CounterMetricFamily
        from prometheus_client.registry import Collector
    except ImportError as exc:
        raise ConfigurationError(f"metrics need prometheus-client: pip install 'meshlog[nats]' ({exc})") from exc

    class _StatsCollector(Collector):
        def collect(self) -> Iterable[CounterMetricFamily]:
            messages = CounterMetricFamily(
                "meshlog_ingest_messages", "NATS messages answered, by outcome", labels=["outcome"]
            )
            messages.add_metric(["stored"], stats.processed - stats.duplicates)
            messages.add_metric(["duplicate"], stats.duplicates)
            messages.add_metric(["malformed"], stats.malformed)
            messages.add_metric(["failed"], stats.failures)
            yield messages
            malformed = CounterMetricFamily(
                "meshlog_ingest_malformed", "NATS messages terminated as malformed, by reason", labels=["reason"]
            )
            for reason, count in sorted(stats.malformed_reasons.items()):
                malformed.add_metric([reason], count)
            yield malformed
            yield CounterMetricFamily(
                "meshlog_ingest_dead_letters",
                "Malformed messages published to the dead-letter subject",
                value=stats.dead_lettered,
            )

    registry = CollectorRegistry(auto_describe=True)
    registry.register(_StatsCollector())
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


# -- the worker -------------------------------------------------------------------------------------------------
class NatsIngest:
    """An ingest worker: a durable pull consumer on a JetStream stream that appends each message's events.

    ``servers``: NATS URLs (a list or a comma-separated string); ``stream``: the JetStream stream, created with
    ``subjects`` (and ``replicas``) when it does not exist; ``subjects`` also filters what the consumer reads
    when they differ from the stream's; ``durable``: the consumer's name, shared by every worker of the
    stream. ``store``: a store URL (opened with ``tenant`` at the first batch, and again after a failure) or
    an open :class:`~meshlog.AsyncEventLog` (used as is, not closed). ``dead_letter``: a subject that malformed
    messages are published to before they are terminated (bind it to a stream to keep them).

    ``batch`` messages are fetched and stored at once; a message not acked within ``ack_wait`` seconds is
    delivered again; a failed one is nak'd with a delay of ``nak_delay`` seconds, doubled on each delivery up
    to ``max_nak_delay``; ``max_deliver`` caps the deliveries (default: no cap, so no event is ever given up on
    while the store is down). ``topics`` maps CloudEvent topics to event types as the Dapr routes do (added to
    the mesh's ``task-results`` and ``task-progress``; any other topic ``T`` gives the type ``dapr.T``).

    Raises ``ConfigurationError`` for an option meshlog cannot use.
    """

    def __init__(
        self,
        servers: str | Sequence[str] = DEFAULT_NATS_URL,
        *,
        stream: str,
        subjects: Sequence[str] = (),
        durable: str = DEFAULT_DURABLE,
        store: str | AsyncEventLog | None = None,
        tenant: str | None = None,
        migrate: bool = True,
        dead_letter: str | None = None,
        batch: int = 100,
        ack_wait: float = 30.0,
        nak_delay: float = 1.0,
        max_nak_delay: float = 60.0,
        max_deliver: int | None = None,
        fetch_timeout: float = 2.0,
        replicas: int = 1,
        topics: Mapping[str, TopicMapper | str | None] | None = None,
        name: str = "meshlog-ingest",
    ) -> None:
        self.servers = _servers(servers)
        if not isinstance(stream, str) or not stream or any(c in stream for c in " .*>\t\r\n"):
            raise ConfigurationError(f"stream must be a JetStream stream name (no spaces, '.', '*', '>'): {stream!r}")
        self.stream = stream
        self.subjects = [s.strip() for s in subjects if s.strip()]
        if not isinstance(durable, str) or not durable or any(c in durable for c in " .*>\t\r\n"):
            raise ConfigurationError(f"durable must be a consumer name (no spaces, '.', '*', '>'): {durable!r}")
        self.durable = durable
        if dead_letter is not None:
            if not dead_letter or any(c in dead_letter for c in " *>\t\r\n"):
                raise ConfigurationError(f"dead_letter must be a subject without wildcards: {dead_letter!r}")
            if any(subject_matches(s, dead_letter) for s in self.subjects):
                raise ConfigurationError(
                    f"dead_letter {dead_letter!r} is one of the ingested subjects: its messages would come back"
                )
        self.dead_letter = dead_letter
        for value, label in ((batch, "batch"), (replicas, "replicas")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{label} must be a positive integer, got {value!r}")
        if max_deliver is not None and (isinstance(max_deliver, bool) or max_deliver < 1):
            raise ConfigurationError(f"max_deliver must be a positive integer or None, got {max_deliver!r}")
        self.batch = batch
        self.replicas = replicas
        self.max_deliver = max_deliver
        self.ack_wait = _positive(ack_wait, "ack_wait")
        self.nak_delay = _positive(nak_delay, "nak_delay")
        self.max_nak_delay = max(_positive(max_nak_delay, "max_nak_delay"), self.nak_delay)
        self.fetch_timeout = _positive(fetch_timeout, "fetch_timeout")
        self.dapr = DaprSettings() if topics is None else DaprSettings(topics={**DEFAULT_TOPICS, **topics})
        self.name = name
        self.tenant = tenant
        self.migrate = migrate
        self._store = store
        self._log: AsyncEventLog | None = store if isinstance(store, AsyncEventLog) else None
        self._owns_log = not isinstance(store, AsyncEventLog)
        self._store_down = False
        self._migrated = False
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        """Set once the stream and the consumer exist and messages are being fetched."""
        self._js: JetStreamContext | None = None
        self._client: Client | None = None
        self.stats = IngestStats()

    def __repr__(self) -> str:
        return f"NatsIngest(stream={self.stream!r}, durable={self.durable!r})"

    def stop(self) -> None:
        """Ask :meth:`run` to return once the messages in hand are answered (call from the worker's loop)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stopping.is_set()

    async def run(self) -> IngestStats:
        """Consume until :meth:`stop`: fetch, store, ack. Returns the counts.

        Raises ``StoreUnavailable`` when NATS cannot be reached at start and ``ConfigurationError`` when the
        stream does not exist and no subjects were given to create it. Once running, NATS and store outages are
        ridden out: messages wait in the stream, or are nak'd and delivered again.
        """
        client = await _connect(self.servers, name=self.name, connect_timeout=5.0)
        self._client = client
        try:
            js = client.jetstream()
            self._js = js
            sub = await self._subscribe(js)
            self.ready.set()
            # A stop is seen between batches: the batch in hand is stored and answered first.
            while not self._stopping.is_set():
                messages = await self._fetch(sub)
                if messages:
                    await self._process(messages)
        finally:
            # Acks are fire-and-forget publishes: flush them before the connection goes.
            with contextlib.suppress(Exception):
                await client.flush(timeout=5)
            with contextlib.suppress(Exception):
                await client.close()
            self._client = None
            if self._owns_log and self._log is not None:
                log, self._log = self._log, None
                with contextlib.suppress(Exception):
                    await log.close()
        return self.stats

    # -- setup --
    async def _subscribe(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        info = await self._stream_info(js)
        have = list(info.config.subjects or [])
        consumer = api.ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver if self.max_deliver is not None else -1,
            max_ack_pending=max(1000, self.batch * 10),
        )
        if self.subjects and sorted(self.subjects) != sorted(have):
            if len(self.subjects) == 1:
                consumer.filter_subject = self.subjects[0]
            else:
                consumer.filter_subjects = list(self.subjects)  # needs nats-server 2.10
        try:
            await js.consumer_info(self.stream, self.durable)
        except js_errors.NotFoundError:
            try:
                await js.add_consumer(self.stream, consumer)
            except js_errors.APIError:
                await js.consumer_info(self.stream, self.durable)  # created by another worker meanwhile
        return await js.pull_subscribe_bind(durable=self.durable, stream=self.stream)

    async def _stream_info(self, js: JetStreamContext) -> api.StreamInfo:
        try:
            return await js.stream_info(self.stream)
        except js_errors.NotFoundError:
            if not self.subjects:
                raise ConfigurationError(
                    f"JetStream stream {self.stream!r} does not exist; give its subjects to create it"
                ) from None
        config = api.StreamConfig(
            name=self.stream,
            subjects=list(self.subjects),
            num_replicas=self.replicas,
            storage=api.StorageType.FILE,
            duplicate_window=120.0,
        )
        try:
            return await js.add_stream(config)
        except js_errors.BadRequestError:
            return await js.stream_info(self.stream)  # created by another worker meanwhile

    # -- the loop --
    async def _fetch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        try:
            return await sub.fetch(self.batch, timeout=self.fetch_timeout)
        except TimeoutError:
            return []
        except nats.errors.ConnectionClosedError:
            raise
        except nats.errors.Error as exc:  # reconnecting, a JetStream leader election, ...: try again shortly
            logger.warning("meshlog: fetching from %r failed, retrying: %s", self.stream, exc or type(exc).__name__)
            await self._pause(min(1.0, self.fetch_timeout))
            return []

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _open_log(self) -> AsyncEventLog:
        if self._log is None:
            assert not isinstance(self._store, AsyncEventLog)
            migrate = self.migrate and not self._migrated  # once is enough: not again after an outage
            self._log = await connect_async(self._store, tenant=self.tenant, migrate=migrate)
            self._migrated = True
        return self._log

    async def _drop_log(self) -> None:
        """Close a log this worker opened after the store failed: while the store is down, opening it again fails
        at once (where a pool would wait for a connection), and once it is back, a new pool connects at once."""
        if self._owns_log and self._log is not None:
            log, self._log = self._log, None
            with contextlib.suppress(Exception):
                await log.close()

    async def _process(self, messages: list[Msg]) -> None:
        try:
            log = await self._open_log()
            # Positions are drawn in commit order: an event at or below this head was committed before the
            # batch was fetched, so an append that returns only such events was a duplicate.
            head = await log.head_position()
        except Exception as exc:  # the store is down: every message of the batch comes back later
            logger.warning("meshlog: store unavailable, redelivering %d messages later: %s", len(messages), exc)
            for msg in messages:
                self.stats.failures += 1
                await self._nak(msg)
            await self._drop_log()
            return
        pending = {id(msg): msg for msg in messages}  # Msg is not hashable
        keeper = asyncio.create_task(self._keep_in_progress(pending))
        self._store_down = False
        try:
            decoded: list[tuple[Msg, DecodedMessage]] = []
            for msg in messages:
                message = await self._decode(msg)
                if message is None:
                    pending.pop(id(msg), None)
                else:
                    decoded.append((msg, message))
            # Single events without an expected version go in one atomic batch: one request for the whole fetch.
            # When one of them cannot be stored, or only some were stored before (a partial redelivery), the
            # batch is refused as a whole and each message is appended alone, concurrently, to get its own answer.
            together = [(msg, d) for msg, d in decoded if d.kind != "batch" and d.expected_version is ANY]
            alone = decoded
            if len(together) > 1 and await self._append_together(log, together, head, pending):
                alone = [(msg, d) for msg, d in decoded if d.kind == "batch" or d.expected_version is not ANY]
            await asyncio.gather(*(self._handle(log, msg, d, head, pending) for msg, d in alone))
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if self._store_down:
            await self._drop_log()

    async def _keep_in_progress(self, pending: dict[int, Msg]) -> None:
        """Tell JetStream the batch is still being worked on, so a slow commit is not taken for a dead worker."""
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            for msg in list(pending.values()):
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    async def _decode(self, msg: Msg) -> DecodedMessage | None:
        """The message's events; None when it was malformed (and is answered)."""
        try:
            meta = msg.metadata
            return decode_message(
                msg.data,
                subject=msg.subject,
                headers=msg.headers,
                default_key=f"nats:{meta.stream}:{meta.sequence.stream}",
                dapr=self.dapr,
            )
        except ValidationError as exc:
            await self._answered(self._reject(msg, _RULE_REASONS.get(exc.rule or "", "invalid_event"), exc), msg)
            return None

    async def _answered(self, answer: Awaitable[None], msg: Msg) -> None:
        try:
            await answer
        except Exception:  # an answer that could not be sent: the message comes back after ack_wait
            logger.exception("meshlog: could not answer message %s", _describe(msg))

    async def _append_together(
        self, log: AsyncEventLog, group: list[tuple[Msg, DecodedMessage]], head: int, pending: dict[int, Msg]
    ) -> bool:
        """Append the single events of ``group`` in one batch and answer them; False when refused as a batch."""
        try:
            recorded = await log.emit_batch([d.events[0] for _, d in group])
        except (ValidationError, ConcurrencyError):
            return False
        except Exception as exc:  # the store failed: nothing of the batch is stored, every message comes back
            self._store_failed(exc, f"{len(group)} messages")
            for msg, _ in group:
                self.stats.failures += 1
                await self._answered(self._nak(msg), msg)
                pending.pop(id(msg), None)
            return True
        for (msg, _), event in zip(group, recorded, strict=True):
            await self._answered(self._stored(msg, [event], head), msg)
            pending.pop(id(msg), None)
        return True

    def _store_failed(self, exc: Exception, what: str) -> None:
        self._store_down = self._store_down or isinstance(exc, StoreUnavailable)
        if isinstance(exc, StoreError):
            logger.warning("meshlog: %s not stored, redelivering later: %s", what, exc)
        else:
            logger.error("meshlog: %s not stored, redelivering later", what, exc_info=exc)

    async def _stored(self, msg: Msg, recorded: list[RecordedEvent], head: int) -> None:
        self.stats.processed += 1
        if all(event.position <= head for event in recorded):
            self.stats.duplicates += 1
        await msg.ack()

    async def _handle(
        self, log: AsyncEventLog, msg: Msg, decoded: DecodedMessage, head: int, pending: dict[int, Msg]
    ) -> None:
        try:
            await self._answered(self._answer(log, msg, decoded, head), msg)
        finally:
            pending.pop(id(msg), None)

    async def _answer(self, log: AsyncEventLog, msg: Msg, decoded: DecodedMessage, head: int) -> None:
        try:
            recorded = await _append(log, decoded)
        except ValidationError as exc:
            await self._reject(msg, "invalid_event", exc)
            return
        except IdempotencyConflict as exc:
            await self._reject(msg, "idempotency_conflict", exc)
            return
        except ConcurrencyError as exc:
            await self._reject(msg, "conflict", exc)
            return
        except Exception as exc:  # the store failed (or worse): never acked, delivered again later
            self.stats.failures += 1
            self._store_failed(exc, f"message {_describe(msg)}")
            await self._nak(msg)
            return
        await self._stored(msg, recorded, head)

    async def _nak(self, msg: Msg) -> None:
        delivered = msg.metadata.num_delivered
        delay = min(self.nak_delay * 2 ** min(max(delivered - 1, 0), 30), self.max_nak_delay)
        try:
            await msg.nak(delay=delay)
        except Exception as exc:  # not answered: the message comes back after ack_wait anyway
            logger.warning("meshlog: could not nak message %s: %s", _describe(msg), exc)

    async def _reject(self, msg: Msg, reason: str, error: Exception) -> None:
        logger.warning("meshlog: terminating malformed message %s (%s): %s", _describe(msg), reason, error)
        if self.dead_letter is not None:
            try:
                await self._publish_dead_letter(msg, reason, error)
            except Exception as exc:  # keep the message rather than lose it: it comes back and is tried again
                logger.warning("meshlog: dead-letter subject %r failed, redelivering: %s", self.dead_letter, exc)
                self.stats.failures += 1
                await self._nak(msg)
                return
            self.stats.dead_lettered += 1
        self.stats.count_malformed(reason)
        await msg.term()

    async def _publish_dead_letter(self, msg: Msg, reason: str, error: Exception) -> None:
        assert self.dead_letter is not None and self._js is not None and self._client is not None
        meta = msg.metadata
        headers = {name: value for name, value in (msg.headers or {}).items() if name != MSG_ID_HEADER}
        headers.update(
            {
                # Publishing the same dead letter twice (after a crash before term) keeps one copy.
                MSG_ID_HEADER: f"dead-letter:{meta.stream}:{meta.sequence.stream}",
                "Meshlog-Reason": reason,
                "Meshlog-Error": " ".join(str(error).split())[:_DEAD_LETTER_ERROR_CHARS],
                "Meshlog-Subject": msg.subject,
                "Meshlog-Stream": meta.stream,
                "Meshlog-Sequence": str(meta.sequence.stream),
            }
        )
        original_id = (msg.headers or {}).get(MSG_ID_HEADER)
        if original_id:
            headers["Meshlog-Msg-Id"] = original_id
        try:
            await self._js.publish(self.dead_letter, msg.data, headers=headers)
        except js_errors.NoStreamResponseError:
            # No stream keeps the subject: a plain publish reaches whoever subscribes to it now.
            await self._client.publish(self.dead_letter, msg.data, headers=headers)


async def _append(log: AsyncEventLog, decoded: DecodedMessage) -> list[RecordedEvent]:
    if decoded.kind == "batch":
        return await log.emit_batch(decoded.events, expected_version=decoded.expected_version)
    (event,) = decoded.events
    return [await log.append(event, expected_version=decoded.expected_version)]


def _describe(msg: Msg) -> str:
    try:
        meta = msg.metadata
        return f"{meta.stream}#{meta.sequence.stream} on {msg.subject!r}"
    except Exception:  # not a JetStream message
        return repr(msg.subject)


# -- publishing -------------------------------------------------------------------------------------------------
class Published(NamedTuple):
    """A published event: its ``id`` and ``idempotency_key`` (as it will be stored), the JetStream ``stream``
    and ``seq`` that hold it, and whether JetStream already had it (``duplicate``: a retry within the
    stream's duplicate window)."""

    id: str
    idempotency_key: str
    stream: str
    seq: int
    duplicate: bool


_RETRIABLE: Final = (
    asyncio.TimeoutError,
    js_errors.NoStreamResponseError,
    js_errors.ServiceUnavailableError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
)


class AsyncNatsPublisher:
    """Publishes events to a JetStream subject for ingest workers to store, instead of appending directly.

    Each event is validated first (``ValidationError`` before anything is sent) and published as a meshlog
    message body with its idempotency key as ``Nats-Msg-Id``: a publish retried after a timeout is kept once
    by JetStream (within the stream's duplicate window) and stored once by the ingest worker (always).
    ``publish`` returns once JetStream has stored the message. Raises ``StoreUnavailable`` when NATS cannot be
    reached and ``StoreError`` when the publish fails after ``retries`` attempts.
    """

    def __init__(
        self,
        client: Client,
        *,
        subject: str,
        timeout: float = 5.0,
        retries: int = 3,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.subject = subject
        self.timeout = _positive(timeout, "timeout")
        self.retries = retries
        self.max_event_bytes = max_event_bytes
        self._owns_client = owns_client
        self._js = client.jetstream(timeout=self.timeout)

    @classmethod
    async def connect(
        cls,
        servers: str | Sequence[str] = DEFAULT_NATS_URL,
        *,
        subject: str,
        timeout: float = 5.0,
        retries: int = 3,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> AsyncNatsPublisher:
        """Connect to NATS and return a publisher that closes the connection with it."""
        client = await _connect(_servers(servers), name="meshlog-publisher", connect_timeout=timeout)
        return cls(
            client, subject=subject, timeout=timeout, retries=retries, max_event_bytes=max_event_bytes, owns_client=True
        )

    async def __aenter__(self) -> AsyncNatsPublisher:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection (when this publisher opened it)."""
        if self._owns_client and not self.client.is_closed:
            await self.client.close()

    async def publish(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        subject: str | None = None,
        stream: str | None = None,
        trace_id: str | None = None,
        task_id: str | None = None,
        agent_id: str | None = None,
        parent_id: str | None = None,
        related: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        version: int = 1,
        occurred_at: datetime | None = None,
        id: str | None = None,
        external_parent: bool = False,
    ) -> Published:
        """Publish one event (the arguments of :meth:`AsyncEventLog.emit`) to ``subject`` (default: the
        publisher's)."""
        event = NewEvent(
            type=type,
            data={} if data is None else data,
            stream=stream,
            metadata=metadata,
            trace_id=trace_id,
            task_id=task_id,
            agent_id=agent_id,
            parent_id=parent_id,
            related=related,
            idempotency_key=idempotency_key,
            version=version,
            occurred_at=occurred_at,
            id=id,
            external_parent=external_parent,
        )
        return await self.publish_event(event, subject=subject)

    async def publish_event(self, event: NewEvent, *, subject: str | None = None) -> Published:
        """Publish ``event`` to ``subject`` (default: the publisher's)."""
        encoded = encode_event(event, max_event_bytes=self.max_event_bytes)
        target = subject or self.subject
        headers = {MSG_ID_HEADER: encoded.idempotency_key}
        attempt = 0
        while True:
            try:
                ack = await self._js.publish(target, encoded.body, timeout=self.timeout, headers=headers)
            except _RETRIABLE as exc:
                if attempt >= self.retries:
                    raise StoreUnavailable(
                        f"publishing to NATS subject {target!r} failed after {attempt + 1} attempts: "
                        f"{exc or type(exc).__name__}"
                    ) from exc
                attempt += 1
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
                continue
            except nats.errors.Error as exc:
                raise StoreError(f"publishing to NATS subject {target!r} failed: {exc or type(exc).__name__}") from exc
            return Published(encoded.id, encoded.idempotency_key, ack.stream, ack.seq, bool(ack.duplicate))


class NatsPublisher:
    """The blocking form of :class:`AsyncNatsPublisher`, for code without an event loop: the connection lives
    on a private event loop in a daemon thread. Close it (or use it as a context manager) when done."""

    def __init__(
        self,
        servers: str | Sequence[str] = DEFAULT_NATS_URL,
        *,
        subject: str,
        timeout: float = 5.0,
        retries: int = 3,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="meshlog-nats-publisher", daemon=True)
        self._thread.start()
        try:
            self._publisher = self._call(
                AsyncNatsPublisher.connect(
                    servers, subject=subject, timeout=timeout, retries=retries, max_event_bytes=max_event_bytes
                )
            )
        except BaseException:
            self._shutdown()
            raise
        self.subject = subject

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _shutdown(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> NatsPublisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and stop the thread (safe to call twice)."""
        if self._loop.is_closed():
            return
        try:
            self._call(self._publisher.close())
        finally:
            self._shutdown()

    def publish(self, type: str, data: Mapping[str, Any] | None = None, **fields: Any) -> Published:
        """Publish one event: the arguments of :meth:`AsyncNatsPublisher.publish`."""
        return self._call(self._publisher.publish(type, data, **fields))

    def publish_event(self, event: NewEvent, *, subject: str | None = None) -> Published:
        """Publish ``event`` to ``subject`` (default: the publisher's)."""
        return self._call(self._publisher.publish_event(event, subject=subject))
