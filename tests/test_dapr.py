"""The Dapr pub/sub routes against a real uvicorn and real stores (SQLite file, PostgreSQL schema).

Requests carry the envelopes a Dapr sidecar sends: structured CloudEvents (``application/cloudevents+json``)
and bulk deliveries. Storage outages are real: a write lock held by another connection, not a mock.
"""

from __future__ import annotations

import contextlib
import copy
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from psycopg import sql

import meshlog
from meshlog.errors import ConfigurationError, StoreUnavailable, ValidationError
from meshlog.server.dapr import (
    DEFAULT_TOPICS,
    DaprMetricsHook,
    DaprSettings,
    DaprStats,
    DaprStatus,
    dapr_router,
    map_cloud_event,
)
from server_helpers import running_app, running_server

CLOUDEVENTS = {"Content-Type": "application/cloudevents+json"}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def cloud_event(topic: str, data: Any, *, id: str = "5929aaac-a5e2-4ca1-859c-edfe73f11565") -> dict[str, Any]:
    """A CloudEvent as a Dapr sidecar delivers it for an app that published ``data`` as JSON."""
    return {
        "topic": topic,
        "pubsubname": "pubsub",
        "traceid": TRACEPARENT,
        "traceparent": TRACEPARENT,
        "tracestate": "",
        "data": data,
        "id": id,
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "source": "orchestrator",
        "type": "com.dapr.event.sent",
        "time": "2025-03-14T09:26:53.123456789Z",
    }


def bulk(topic: str, events: list[tuple[str, Any]]) -> dict[str, Any]:
    """A bulk delivery (``bulkSubscribe`` enabled) of ``(entryId, event)`` pairs."""
    return {
        "entries": [
            {"entryId": entry_id, "event": event, "contentType": "application/cloudevents+json", "metadata": {}}
            for entry_id, event in events
        ],
        "id": "7a4c7a55-2a3f-4e07-9a59-0ef1c2a5b0d1",
        "metadata": {},
        "pubsubname": "pubsub",
        "topic": topic,
        "type": "com.dapr.event.sent.bulk",
    }


RESULT = {
    "taskId": "0b6f3d2e-6a1c-4f0e-9d55-3a7c2b1e9f10",
    "agentId": "api-coder",
    "traceId": "run-17",
    "success": True,
    "capability": "code",
    "durationMs": 5123,
    "result": {"files": ["api/limits.py"]},
}
FAILURE = {
    "taskId": "1c2d3e4f-0000-4000-8000-000000000002",
    "agentId": "tester",
    "success": False,
    "errorType": "timeout",
    "durationMs": 120000,
    "capability": "testing",
}
PROGRESS = {"taskId": "1c2d3e4f-0000-4000-8000-000000000002", "agentId": "tester", "status": "running"}


# -- a small app serving only the Dapr routes -----------------------------------------------------------------
@dataclass
class Served:
    http: httpx.Client
    stats: DaprStats

    def deliver(self, topic: str, body: Any, *, raw: bytes | None = None) -> DaprStatus:
        content = raw if raw is not None else httpx.Request("POST", "/", json=body).content
        response = self.http.post(f"/dapr/events/{topic}", content=content, headers=CLOUDEVENTS)
        assert response.status_code == 200, response.text
        status: DaprStatus = response.json()["status"]
        return status

    def deliver_bulk(self, topic: str, body: dict[str, Any]) -> dict[str, str]:
        response = self.http.post(f"/dapr/events/{topic}", json=body)
        assert response.status_code == 200, response.text
        return {s["entryId"]: s["status"] for s in response.json()["statuses"]}


@contextlib.contextmanager
def serve(
    url: str,
    settings: DaprSettings | None = None,
    on_status: DaprMetricsHook | None = None,
    *,
    opened: threading.Event | None = None,
) -> Iterator[Served]:
    """Serve the Dapr routes over the log of ``url``; with ``opened``, through an ``async`` getter that raises
    ``StoreUnavailable`` until the event is set (as an app whose store was down at startup)."""
    logs: list[meshlog.AsyncEventLog] = []

    async def open_log() -> meshlog.AsyncEventLog:
        if opened is not None and not opened.is_set():
            raise StoreUnavailable("the store is not reachable yet")
        return logs[0]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logs.append(await meshlog.connect_async(url, types=["agent-mesh"]))
        try:
            yield
        finally:
            await logs[0].close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    stats = DaprStats()
    get_log = open_log if opened is not None else lambda: logs[0]
    app.include_router(dapr_router(get_log, settings, stats=stats, on_status=on_status))
    with running_app(app) as base, httpx.Client(base_url=base, timeout=10) as http:
        yield Served(http, stats)


def stored(url: str, *types: str) -> list[meshlog.RecordedEvent]:
    with meshlog.connect(url, migrate=False) as log:
        return list(log.query(types=list(types) or None, limit=1000))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    request.applymarker(pytest.mark.postgres)
    url: str = request.getfixturevalue("pg_url")
    return url


# -- subscription ---------------------------------------------------------------------------------------------
def test_subscribe_lists_each_topic_with_its_route_and_bulk_subscribe(tmp_path: Path) -> None:
    settings = DaprSettings(pubsub_name="mesh-pubsub", max_messages_count=50).with_topics(["deploys=deploy.done"])
    with serve(f"sqlite:///{tmp_path / 'e.db'}", settings) as app:
        response = app.http.get("/dapr/subscribe")
    assert response.status_code == 200
    bulk_options = {"enabled": True, "maxMessagesCount": 50, "maxAwaitDurationMs": 1000}
    assert response.json() == [
        {
            "pubsubname": "mesh-pubsub",
            "topic": topic,
            "route": f"/dapr/events/{topic}",
            "bulkSubscribe": bulk_options,
        }
        for topic in ("task-results", "task-progress", "deploys")
    ]


# -- mapping ------------------------------------------------------------------------------------------------------
def test_task_results_and_progress_become_events(store_url: str) -> None:
    with serve(store_url) as app:
        assert app.deliver("task-results", cloud_event("task-results", RESULT, id="r-1")) == "SUCCESS"
        assert app.deliver("task-results", cloud_event("task-results", FAILURE, id="r-2")) == "SUCCESS"
        assert app.deliver("task-progress", cloud_event("task-progress", PROGRESS, id="p-1")) == "SUCCESS"
        assert app.stats.to_dict() == {"success": 3, "retry": 0, "drop": 0, "drop_reasons": {}}

    ok, failed, progress = stored(store_url)
    assert (ok.type, ok.task_id, ok.agent_id, ok.trace_id) == ("task.result", RESULT["taskId"], "api-coder", "run-17")
    assert ok.stream == f"task:{RESULT['taskId']}"
    assert ok.data == {
        "success": True,
        "status": "succeeded",
        "capability": "code",
        "duration_ms": 5123,
        "result": {"files": ["api/limits.py"]},
    }
    assert ok.metadata["cloudevent"] == {
        "id": "r-1",
        "source": "orchestrator",
        "type": "com.dapr.event.sent",
        "specversion": "1.0",
        "time": "2025-03-14T09:26:53.123456789Z",
        "datacontenttype": "application/json",
        "topic": "task-results",
        "pubsubname": "pubsub",
        "traceparent": TRACEPARENT,
    }
    assert ok.occurred_at == datetime(2025, 3, 14, 9, 26, 53, 123456, tzinfo=UTC)
    assert ok.idempotency_key == "dapr:orchestrator:r-1"

    assert failed.type == "task.result.failure"
    assert failed.data == {
        "success": False,
        "status": "failed",
        "error": "timeout",
        "error_type": "timeout",
        "duration_ms": 120000,
        "capability": "testing",
    }
    # No traceId in the payload: the trace is the W3C trace id of the CloudEvent's traceparent.
    assert failed.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert (progress.type, progress.data, progress.stream) == ("task.progress", {"status": "running"}, failed.stream)


def test_mapping_of_other_topics_and_correlation_values() -> None:
    settings = DaprSettings().with_topics(["audit", "deploys=deploy.finished"])
    audit = map_cloud_event(settings, "audit", cloud_event("audit", {"task_id": 42, "who": "ops"}))
    assert (audit.type, audit.task_id, audit.trace_id, dict(audit.data)) == (
        "dapr.audit",
        "42",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        {"who": "ops"},
    )
    envelope = cloud_event("deploys", None)
    del envelope["data"], envelope["traceparent"], envelope["traceid"]
    envelope["data_base64"] = "eyJzZXJ2aWNlIjogImFwaSJ9"  # {"service": "api"}
    deploy = map_cloud_event(settings, "deploys", envelope)
    assert (deploy.type, dict(deploy.data), deploy.trace_id) == ("deploy.finished", {"service": "api"}, None)
    as_text = cloud_event("deploys", '{"service": "web"}')  # JSON data a publisher serialized itself
    assert dict(map_cloud_event(settings, "deploys", as_text).data) == {"service": "web"}
    with pytest.raises(ValidationError) as caught:
        map_cloud_event(settings, "audit", cloud_event("audit", {"agentId": ["a", "b"]}))
    assert (caught.value.field, caught.value.rule) == ("data.agentId", "type")
    assert set(DEFAULT_TOPICS) == {"task-results", "task-progress"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"topics": {"a b": None}}, "topic must match"),
        ({"topics": {"ok": "not a type!"}}, "not a valid event type"),
        ({"topics": {}}, "at least one topic"),
        ({"route_prefix": "dapr/"}, "route_prefix"),
        ({"max_messages_count": 0}, "max_messages_count"),
    ],
)
def test_settings_refuse_what_cannot_be_served(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        DaprSettings(**options)


# -- idempotency --------------------------------------------------------------------------------------------------
def test_a_redelivery_stores_nothing_twice(store_url: str) -> None:
    first = cloud_event("task-results", RESULT, id="same-id")
    again = copy.deepcopy(first)
    with serve(store_url) as app:
        assert app.deliver("task-results", first) == "SUCCESS"
        assert app.deliver("task-results", again) == "SUCCESS"
        # The same message again, in a bulk delivery next to a new one: the batch mixes a known and a new key.
        other = cloud_event("task-results", FAILURE, id="other-id")
        statuses = app.deliver_bulk("task-results", bulk("task-results", [("e1", again), ("e2", other)]))
        assert statuses == {"e1": "SUCCESS", "e2": "SUCCESS"}
    events = stored(store_url)
    assert [e.idempotency_key for e in events] == ["dapr:orchestrator:same-id", "dapr:orchestrator:other-id"]


# -- storage failures ---------------------------------------------------------------------------------------------
def test_sqlite_outage_answers_retry_and_the_redelivery_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    url = f"sqlite:///{path}?busy_timeout=0.2"
    message = cloud_event("task-results", RESULT, id="during-outage")
    with serve(url) as app:
        locker = sqlite3.connect(path, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")  # another process holds SQLite's write lock
            assert app.deliver("task-results", message) == "RETRY"
            entries = bulk("task-results", [("b1", cloud_event("task-results", FAILURE, id="bulk-1"))])
            assert app.deliver_bulk("task-results", entries) == {"b1": "RETRY"}
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert stored(url) == []
        assert app.deliver("task-results", message) == "SUCCESS"  # Dapr's redelivery
        assert app.deliver_bulk("task-results", entries) == {"b1": "SUCCESS"}
        assert (app.stats.retry, app.stats.success) == (2, 2)
    assert [e.idempotency_key for e in stored(url)] == ["dapr:orchestrator:during-outage", "dapr:orchestrator:bulk-1"]


def test_a_log_not_open_yet_answers_retry(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    opened = threading.Event()
    message = cloud_event("task-results", RESULT, id="early")
    with serve(url, opened=opened) as app:
        assert app.deliver("task-results", message) == "RETRY"
        assert app.deliver_bulk("task-results", bulk("task-results", [("1", message)])) == {"1": "RETRY"}
        opened.set()
        assert app.deliver("task-results", message) == "SUCCESS"
    assert [e.idempotency_key for e in stored(url)] == ["dapr:orchestrator:early"]


@pytest.mark.postgres
def test_postgres_outage_answers_retry_and_the_redelivery_is_stored(pg_dsn: str, pg_url: str, pg_schema: str) -> None:
    url = f"{pg_url}&options=-c%20lock_timeout%3D300"  # give up waiting for a lock after 0.3 s
    message = cloud_event("task-progress", PROGRESS, id="during-outage")
    with serve(url) as app:
        with psycopg.connect(pg_dsn) as locker:
            locker.execute(sql.SQL("LOCK TABLE {}.events IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(pg_schema)))
            assert app.deliver("task-progress", message) == "RETRY"
            locker.rollback()
        assert stored(url) == []
        assert app.deliver("task-progress", message) == "SUCCESS"
    (event,) = stored(url)
    assert (event.type, event.idempotency_key) == ("task.progress", "dapr:orchestrator:during-outage")


# -- malformed messages -------------------------------------------------------------------------------------------
def test_malformed_messages_are_dropped_and_counted(store_url: str) -> None:
    registry = CollectorRegistry()
    messages = Counter("dapr_messages", "Dapr messages by topic and status.", ["topic", "status"], registry=registry)

    def on_status(topic: str, status: DaprStatus, reason: str | None) -> None:
        messages.labels(topic, status).inc()

    not_cloud_event = cloud_event("task-results", RESULT)
    del not_cloud_event["specversion"]
    text_data = cloud_event("task-results", "hello", id="text")
    text_data["datacontenttype"] = "text/plain"
    with serve(store_url, on_status=on_status) as app:
        assert app.deliver("task-results", None, raw=b"{not json") == "DROP"
        assert app.deliver("task-results", None, raw=b"\xff\xfe") == "DROP"
        assert app.deliver("task-results", [RESULT]) == "DROP"
        assert app.deliver("task-results", RESULT) == "DROP"  # a raw payload, not a CloudEvent
        assert app.deliver("task-results", not_cloud_event) == "DROP"
        assert app.deliver("task-results", text_data) == "DROP"
        assert app.deliver("task-results", cloud_event("task-results", [1, 2], id="list")) == "DROP"
        nul = {**RESULT, "summary": "a NUL \x00 here"}
        assert app.deliver("task-results", cloud_event("task-results", nul, id="nul")) == "DROP"
        # The catalogue's schema (agent-mesh): a progress report needs its status.
        assert app.deliver("task-progress", cloud_event("task-progress", {"taskId": "t"}, id="p")) == "DROP"
        assert app.deliver("task-results", cloud_event("task-results", RESULT, id="dup")) == "SUCCESS"
        changed = {**RESULT, "durationMs": 1}
        assert app.deliver("task-results", cloud_event("task-results", changed, id="dup")) == "DROP"
        assert app.stats.to_dict() == {
            "success": 1,
            "retry": 0,
            "drop": 10,
            "drop_reasons": {
                "not_json": 2,
                "not_cloudevent": 3,
                "data_not_object": 2,
                "invalid_event": 2,
                "idempotency_conflict": 1,
            },
        }
    assert registry.get_sample_value("dapr_messages_total", {"topic": "task-results", "status": "DROP"}) == 9
    assert registry.get_sample_value("dapr_messages_total", {"topic": "task-progress", "status": "DROP"}) == 1
    assert [e.idempotency_key for e in stored(store_url)] == ["dapr:orchestrator:dup"]


def test_bulk_delivery_with_bad_entries_stores_the_good_ones(store_url: str) -> None:
    good = cloud_event("task-results", RESULT, id="g1")
    also_good = cloud_event("task-results", FAILURE, id="g2")
    data_not_object = cloud_event("task-results", "oops", id="b1")
    invalid = cloud_event("task-results", {**RESULT, "note": "\x00"}, id="b2")  # refused by the store's checks
    body = bulk("task-results", [("1", good), ("2", data_not_object), ("3", invalid), ("4", also_good)])
    body["entries"].append({"event": good})  # no entryId: cannot be answered
    with serve(store_url) as app:
        statuses = app.deliver_bulk("task-results", body)
        assert statuses == {"1": "SUCCESS", "2": "DROP", "3": "DROP", "4": "SUCCESS"}
        assert app.stats.drop_reasons == {"data_not_object": 1, "invalid_event": 1, "no_entry_id": 1}
        # All valid: one atomic batch.
        more = [(f"m{i}", cloud_event("task-progress", {**PROGRESS, "step": i}, id=f"m{i}")) for i in range(5)]
        assert set(app.deliver_bulk("task-progress", bulk("task-progress", more)).values()) == {"SUCCESS"}
    assert [e.idempotency_key for e in stored(store_url, "task.result", "task.result.failure")] == [
        "dapr:orchestrator:g1",
        "dapr:orchestrator:g2",
    ]
    assert [e.data["step"] for e in stored(store_url, "task.progress")] == [0, 1, 2, 3, 4]


# -- inside the meshlog server --------------------------------------------------------------------------------------
def test_the_meshlog_server_serves_the_dapr_routes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    with running_server(url, dapr=True) as base, httpx.Client(base_url=base, timeout=10) as http:
        topics = [s["topic"] for s in http.get("/dapr/subscribe").json()]
        assert topics == ["task-results", "task-progress"]
        response = http.post("/dapr/events/task-results", json=cloud_event("task-results", RESULT), headers=CLOUDEVENTS)
        assert response.json() == {"status": "SUCCESS"}
    (event,) = stored(url)
    assert (event.type, event.agent_id) == ("task.result", "api-coder")
