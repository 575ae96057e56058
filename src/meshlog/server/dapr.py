"""Dapr pub/sub ingestion: the routes a Dapr sidecar calls to deliver topic messages, stored as meshlog events.

Dapr asks the app which topics it wants (``GET /dapr/subscribe``, the programmatic subscription) and then POSTs
each message to the route named there, as a structured CloudEvent (``application/cloudevents+json``), or, with
``bulkSubscribe`` enabled, several messages at once as ``{"entries": [{"entryId", "event", "contentType",
"metadata"}, ...]}``. The app answers each message with a status:

- ``SUCCESS``: the event is stored, now or by an earlier delivery of the same message;
- ``RETRY``: the store failed; Dapr delivers the message again later;
- ``DROP``: the message can never be stored (not JSON, not a CloudEvent, ``data`` not a JSON object, rejected by
  validation, or its key already names a different event); Dapr logs it and moves on. Drops are counted.

``SUCCESS`` is never the answer for a message that is not stored. Every event carries the idempotency key
``dapr:<source>:<id>`` of its CloudEvent, so a redelivery (Dapr delivers at least once) writes nothing twice.

``map_cloud_event`` holds the mapping and does no I/O (it lives in ``meshlog._cloudevents``, shared with the NATS
JetStream ingest worker, and is re-exported here); ``dapr_router`` is the FastAPI side.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from meshlog._cloudevents import (
    _RULE_REASONS,
    DEFAULT_TOPICS,
    DaprSettings,
    TopicMapper,
    _parse_json,
    map_cloud_event,
    map_task_progress,
    map_task_result,
)
from meshlog.errors import ConcurrencyError, IdempotencyConflict, StoreError, ValidationError
from meshlog.events import NewEvent, RecordedEvent
from meshlog.log_async import AsyncEventLog

__all__ = [
    "DEFAULT_TOPICS",
    "DaprMetricsHook",
    "DaprRouter",
    "DaprSettings",
    "DaprStats",
    "DaprStatus",
    "LogGetter",
    "TopicMapper",
    "dapr_router",
    "map_cloud_event",
    "map_task_progress",
    "map_task_result",
]

logger = logging.getLogger("meshlog.server.dapr")

DaprStatus: TypeAlias = Literal["SUCCESS", "RETRY", "DROP"]
"""The status an app returns to Dapr for one message."""

DaprMetricsHook: TypeAlias = Callable[[str, DaprStatus, str | None], None]
"""Called once per message with the topic, the status answered and, for ``DROP``, the reason."""


# -- counting ---------------------------------------------------------------------------------------------------
@dataclass
class DaprStats:
    """Messages answered since start, by status; drops also by reason (``not_json``, ``not_cloudevent``,
    ``data_not_object``, ``invalid_event``, ``idempotency_conflict``, ``conflict``, ``no_entry_id``)."""

    success: int = 0
    retry: int = 0
    drop: int = 0
    drop_reasons: dict[str, int] = field(default_factory=dict)

    def count(self, status: DaprStatus, reason: str | None = None) -> None:
        """Count one message answered with ``status``."""
        if status == "SUCCESS":
            self.success += 1
        elif status == "RETRY":
            self.retry += 1
        else:
            self.drop += 1
            key = reason or "unknown"
            self.drop_reasons[key] = self.drop_reasons.get(key, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "success": self.success,
            "retry": self.retry,
            "drop": self.drop,
            "drop_reasons": dict(self.drop_reasons),
        }


# -- storing ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Answer:
    status: DaprStatus
    reason: str | None = None


_SUCCESS = _Answer("SUCCESS")
_RETRY = _Answer("RETRY")


def _failure(exc: Exception, what: str) -> _Answer:
    """The answer for an append that raised ``exc``: drop what can never be stored, retry everything else."""
    if isinstance(exc, ValidationError):
        logger.warning("meshlog: dropping Dapr message %s: %s", what, exc)
        return _Answer("DROP", "invalid_event")
    if isinstance(exc, IdempotencyConflict):
        logger.warning("meshlog: dropping Dapr message %s: %s", what, exc)
        return _Answer("DROP", "idempotency_conflict")
    if isinstance(exc, ConcurrencyError):
        logger.warning("meshlog: dropping Dapr message %s: %s", what, exc)
        return _Answer("DROP", "conflict")
    if isinstance(exc, StoreError):
        logger.warning("meshlog: Dapr message %s not stored, asking for redelivery: %s", what, exc)
    else:
        logger.error("meshlog: Dapr message %s not stored, asking for redelivery", what, exc_info=exc)
    return _RETRY


def _mapped(settings: DaprSettings, topic: str, envelope: object) -> NewEvent | _Answer:
    try:
        return map_cloud_event(settings, topic, envelope)
    except ValidationError as exc:
        logger.warning("meshlog: dropping malformed Dapr message on %r: %s", topic, exc)
        return _Answer("DROP", _RULE_REASONS.get(exc.rule or "", "invalid_event"))
    except Exception:  # a topic's own mapper failed: not the message's fault, so never dropped
        logger.exception("meshlog: the mapper of topic %r failed; asking for redelivery", topic)
        return _RETRY


def _describe(event: NewEvent) -> str:
    return repr(event.idempotency_key)


_Resolve: TypeAlias = Callable[[], Awaitable[AsyncEventLog]]


async def _store_one(resolve: _Resolve, event: NewEvent) -> _Answer:
    try:
        await (await resolve()).emit_batch([event])
    except Exception as exc:  # every outcome gets an answer; unknown failures are retried, never acknowledged
        return _failure(exc, _describe(event))
    return _SUCCESS


async def _store_many(resolve: _Resolve, events: Sequence[NewEvent]) -> list[_Answer]:
    """Store ``events``: in one atomic batch when all can go, else one by one so a bad one fails alone."""
    if not events:
        return []
    try:
        recorded: list[RecordedEvent] = await (await resolve()).emit_batch(events)
    except (ValidationError, ConcurrencyError):
        # A bad event, or a redelivery of which only some events are stored (a batch mixing known and new
        # idempotency keys is refused as a whole): each event alone then gets its own answer.
        return [await _store_one(resolve, event) for event in events]
    except Exception as exc:  # the store failed (or worse): nothing of the batch is stored, all are retried
        return [_failure(exc, _describe(event)) for event in events]
    assert len(recorded) == len(events)
    return [_SUCCESS] * len(events)


# -- routes -----------------------------------------------------------------------------------------------------
LogGetter: TypeAlias = Callable[[], AsyncEventLog | Awaitable[AsyncEventLog]]
"""Returns the log to store into, or an awaitable of it (such as an ``async def`` that opens it on demand)."""


class DaprRouter(APIRouter):
    """The Dapr routes, with the ``settings`` they serve and the ``stats`` of the messages they answered."""

    settings: DaprSettings
    stats: DaprStats


def _is_bulk(body: object) -> bool:
    return isinstance(body, dict) and isinstance(body.get("entries"), list) and "specversion" not in body


def dapr_router(
    get_log: LogGetter,
    settings: DaprSettings | None = None,
    *,
    stats: DaprStats | None = None,
    on_status: DaprMetricsHook | None = None,
) -> DaprRouter:
    """The Dapr routes: ``GET /dapr/subscribe`` and one ``POST`` route per topic of ``settings``.

    ``get_log`` returns the log to store into, or an awaitable of it (called per message, so the app may open
    it on demand; a failure to get it is a ``RETRY``). Each message answered is counted in ``stats`` (a new
    :class:`DaprStats` when not given; ``router.stats``) and reported to ``on_status`` (for example, to
    increment a Prometheus counter by topic and status). Every answer is HTTP 200: a single delivery gets
    ``{"status": ...}``, a bulk delivery ``{"statuses": [{"entryId": ..., "status": ...}, ...]}``.
    """
    settings = settings or DaprSettings()
    counted = DaprStats() if stats is None else stats
    router = DaprRouter(tags=["dapr"])
    router.settings = settings
    router.stats = counted

    async def resolve() -> AsyncEventLog:
        log = get_log()
        return await log if inspect.isawaitable(log) else log

    def answered(topic: str, answer: _Answer) -> DaprStatus:
        counted.count(answer.status, answer.reason)
        if on_status is not None:
            on_status(topic, answer.status, answer.reason)
        return answer.status

    async def subscribe() -> JSONResponse:
        return JSONResponse(settings.subscriptions())

    router.add_api_route(
        "/dapr/subscribe", subscribe, methods=["GET"], name="dapr_subscribe", summary="Dapr subscriptions"
    )

    async def single(topic: str, body: object) -> JSONResponse:
        event = _mapped(settings, topic, body)
        answer = event if isinstance(event, _Answer) else await _store_one(resolve, event)
        return JSONResponse({"status": answered(topic, answer)})

    async def bulk(topic: str, body: dict[str, Any]) -> JSONResponse:
        ids: list[str] = []
        answers: list[_Answer] = []
        pending: list[tuple[int, NewEvent]] = []
        for entry in body["entries"]:
            entry_id = entry.get("entryId", entry.get("entryID")) if isinstance(entry, dict) else None
            if not isinstance(entry_id, str) or not entry_id:
                # Without its id the entry cannot be answered (Dapr treats an unanswered entry as RETRY).
                logger.warning("meshlog: ignoring a bulk entry without entryId on %r", topic)
                answered(topic, _Answer("DROP", "no_entry_id"))
                continue
            result = _mapped(settings, topic, entry.get("event"))
            ids.append(entry_id)
            answers.append(result if isinstance(result, _Answer) else _RETRY)
            if isinstance(result, NewEvent):
                pending.append((len(answers) - 1, result))
        stored = await _store_many(resolve, [event for _, event in pending])
        for (index, _), answer in zip(pending, stored, strict=True):
            answers[index] = answer
        statuses = [
            {"entryId": entry_id, "status": answered(topic, answer)}
            for entry_id, answer in zip(ids, answers, strict=True)
        ]
        return JSONResponse({"statuses": statuses})

    def endpoint(topic: str) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def deliver(request: Request) -> JSONResponse:
            raw = await request.body()
            try:
                body = _parse_json(raw, "body")
            except ValidationError as exc:
                logger.warning("meshlog: dropping Dapr message on %r: %s", topic, exc)
                return JSONResponse({"status": answered(topic, _Answer("DROP", "not_json"))})
            if _is_bulk(body):
                return await bulk(topic, body)
            return await single(topic, body)

        return deliver

    for topic in settings.topics:
        router.add_api_route(
            settings.route(topic),
            endpoint(topic),
            methods=["POST"],
            name=f"dapr_topic_{topic}",
            summary=f"Dapr deliveries of topic {topic}",
        )
    return router
