"""The message formats of NATS ingestion (no NATS needed): decoding, encoding, keys, and the CLI's help."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import meshlog
from meshlog.cli import main
from meshlog.errors import ConfigurationError, ValidationError
from meshlog.ingest import decode_message, encode_event
from meshlog.ingest.nats import IngestStats, serve_metrics
from meshlog.server.dapr import DaprSettings, map_cloud_event
from meshlog.server.schemas import SingleEventIn
from server_helpers import free_port

DOCS = Path(__file__).resolve().parent.parent / "docs"

CLOUD_EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "5929aaac-a5e2-4ca1-859c-edfe73f11565",
    "source": "orchestrator",
    "type": "com.dapr.event.sent",
    "datacontenttype": "application/json",
    "topic": "task-results",
    "pubsubname": "pubsub",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "time": "2026-03-01T09:30:00Z",
    "data": {"taskId": "42", "agentId": "api-coder", "success": False, "errorType": "Timeout"},
}


# -- decoding ------------------------------------------------------------------------------------------------------
def test_a_cloud_event_becomes_the_event_the_dapr_routes_make() -> None:
    decoded = decode_message(json.dumps(CLOUD_EVENT), subject="task-results", headers={"Nats-Msg-Id": "x"})
    assert decoded.kind == "cloudevent"
    assert decoded.events == (map_cloud_event(DaprSettings(), "task-results", CLOUD_EVENT),)
    (event,) = decoded.events
    assert event.type == "task.result.failure"
    assert (event.task_id, event.agent_id) == ("42", "api-coder")
    assert event.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert event.idempotency_key == f"dapr:orchestrator:{CLOUD_EVENT['id']}"  # not the header: the same either way
    assert event.occurred_at == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def test_a_cloud_event_of_another_topic_gets_a_dapr_type_from_its_topic_or_subject() -> None:
    envelope = {k: v for k, v in CLOUD_EVENT.items() if k != "topic"}
    (event,) = decode_message(json.dumps(envelope).encode(), subject="builds").events
    assert event.type == "dapr.builds"
    assert event.metadata == {"cloudevent": {**{k: v for k, v in envelope.items() if k != "data"}, "topic": "builds"}}
    custom = DaprSettings(topics={"builds": "build.finished"})
    (event,) = decode_message(json.dumps(envelope), subject="builds", dapr=custom).events
    assert event.type == "build.finished"


def test_a_meshlog_body_takes_the_msg_id_as_key_unless_it_has_its_own() -> None:
    body = {"type": "llm.call", "data": {"model": "m"}, "task_id": "42", "occurred_at": "2026-03-01T09:30:00+00:00"}
    decoded = decode_message(json.dumps(body), subject="s", headers={"Nats-Msg-Id": "m-1"}, default_key="nats:S:1")
    assert decoded.kind == "event" and decoded.expected_version is meshlog.ANY
    (event,) = decoded.events
    assert event == meshlog.NewEvent(
        type="llm.call",
        data={"model": "m"},
        task_id="42",
        idempotency_key="m-1",
        occurred_at=datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
    )
    (event,) = decode_message(json.dumps(body), subject="s", default_key="nats:S:1").events
    assert event.idempotency_key == "nats:S:1"
    (event,) = decode_message(json.dumps({**body, "idempotency_key": "own"}), subject="s", default_key="k").events
    assert event.idempotency_key == "own"


def test_a_batch_body_keys_each_event_and_keeps_its_expectation() -> None:
    body = {"events": [{"type": "a"}, {"type": "b", "idempotency_key": "mine"}, {"type": "c"}], "expected_version": 0}
    decoded = decode_message(json.dumps(body), subject="s", headers={"Nats-Msg-Id": "m"})
    assert decoded.kind == "batch" and decoded.expected_version == 0
    assert [e.idempotency_key for e in decoded.events] == ["m:0", "mine", "m:2"]
    single = decode_message(json.dumps({"type": "a", "expected_version": "no_stream"}), subject="s")
    assert single.expected_version is meshlog.NO_STREAM
    assert single.events[0].idempotency_key is None


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (b"not json", "json"),
        (b"\xff\xfe", "json"),
        (b"[1, 2]", "type"),
        (b'{"data": {}}', "required"),
        (b'{"type": "a", "typo": 1}', "unknown_field"),
        (b'{"type": "a", "occurred_at": "yesterday"}', "timestamp"),
        (b'{"type": "a", "occurred_at": 5}', "timestamp"),
        (b'{"type": "a", "related": "x"}', "type"),
        (b'{"type": "a", "external_parent": "yes"}', "type"),
        (b'{"type": "a", "expected_version": -1}', "expected_version"),
        (b'{"type": "a", "expected_version": true}', "expected_version"),
        (b'{"events": {"type": "a"}}', "type"),
        (b'{"events": ["a"]}', "type"),
        (b'{"events": [{"type": "a"}], "more": 1}', "unknown_field"),
        (b'{"events": [{"type": "a", "x": 1}]}', "unknown_field"),
        (b'{"specversion": "1.0", "id": "1", "source": "s"}', "cloudevent"),
        (b'{"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": [1]}', "data_object"),
        (b'{"specversion": "1.0", "id": "1", "source": "s", "type": "t", "topic": "a b", "data": {}}', "cloudevent"),
    ],
)
def test_malformed_bodies_are_refused_with_their_rule(body: bytes, rule: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_message(body, subject="s")
    assert caught.value.rule == rule, caught.value


def test_what_the_body_shape_allows_is_still_checked_by_meshlog_when_appended() -> None:
    decoded = decode_message(b'{"type": "bad type!", "version": "2"}', subject="s")
    with meshlog.connect("memory://") as log, pytest.raises(ValidationError):
        log.emit_batch(decoded.events)


# -- encoding ------------------------------------------------------------------------------------------------------
def test_encoded_events_are_post_v1_events_bodies_that_decode_to_the_same_event() -> None:
    parent = str(uuid.uuid4())
    event = meshlog.NewEvent(
        type="llm.call",
        data={"model": "gpt-4o", "text": "héllo"},
        metadata={"host": "a"},
        task_id="42",
        agent_id="api-coder",
        trace_id="t-1",
        parent_id=parent,
        related=(parent,),
        occurred_at=datetime(2026, 3, 1, tzinfo=UTC),
        external_parent=True,
        version=2,
    )
    encoded = encode_event(event)
    body = json.loads(encoded.body)
    SingleEventIn.model_validate(body)  # what POST /v1/events accepts
    assert body["id"] == encoded.id and body["idempotency_key"] == encoded.idempotency_key == f"nats:{encoded.id}"
    (back,) = decode_message(encoded.body, subject="s").events
    assert back == meshlog.NewEvent(
        type="llm.call",
        data={"model": "gpt-4o", "text": "héllo"},
        metadata={"host": "a"},
        stream="task:42",
        task_id="42",
        agent_id="api-coder",
        trace_id="t-1",
        parent_id=parent,
        related=(parent,),
        occurred_at=datetime(2026, 3, 1, tzinfo=UTC),
        external_parent=True,
        version=2,
        id=encoded.id,
        idempotency_key=encoded.idempotency_key,
    )


def test_encoding_keeps_a_given_key_and_gives_a_chosen_id_a_fresh_one() -> None:
    assert encode_event(meshlog.NewEvent(type="a", idempotency_key="k")).idempotency_key == "k"
    chosen = str(uuid.uuid4())
    first, second = (encode_event(meshlog.NewEvent(type="a", id=chosen)) for _ in range(2))
    assert first.id == second.id == chosen
    assert first.idempotency_key != second.idempotency_key


@pytest.mark.parametrize(
    "event",
    [
        meshlog.NewEvent(type="bad type!"),
        meshlog.NewEvent(type="a", data={"x": "\x00"}),
        meshlog.NewEvent(type="a", data={"x": "y" * 2_000_000}),
        meshlog.NewEvent(type="a", parent_id="not-a-uuid"),
    ],
)
def test_encoding_refuses_what_an_append_would_refuse(event: meshlog.NewEvent) -> None:
    with pytest.raises(ValidationError):
        encode_event(event)


def test_publishing_without_the_extra_or_a_server_fails_clearly() -> None:
    with pytest.raises((ConfigurationError, meshlog.StoreUnavailable)):
        meshlog.publish_nats("nats://127.0.0.1:1", "s", "a", {}, timeout=1)


# -- the command ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("words", [("ingest",), ("ingest", "nats")], ids=" ".join)
def test_ingest_help_is_in_the_docs_and_ends_with_examples(words: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*words, "--help"], prog_name="meshlog", terminal_width=80)
    assert result.exit_code == 0
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    examples = lines[lines.index("Examples:") + 1 :]
    assert examples
    assert all(line.startswith("meshlog ingest nats") for line in examples)
    assert result.stdout.strip() in (DOCS / "cli.md").read_text(encoding="utf-8")


def test_ingest_nats_refuses_bad_options_before_connecting() -> None:
    result = CliRunner().invoke(main, ["ingest", "nats", "--stream", "S", "--topic", "=x"])
    assert result.exit_code == 2
    result = CliRunner().invoke(
        main, ["ingest", "nats", "--stream", "S", "--subjects", "a.>", "--dead-letter", "a.dead"]
    )
    assert result.exit_code == 1
    assert "Error: ConfigurationError" in result.stderr and "would come back" in result.stderr
    result = CliRunner().invoke(main, ["ingest", "nats", "--stream", "S.x"])
    assert result.exit_code == 1 and "stream must be" in result.stderr


def test_ingest_nats_without_a_nats_server_exits_1_with_one_line() -> None:
    result = CliRunner().invoke(
        main, ["--url", "memory://", "ingest", "nats", "--url", "nats://127.0.0.1:1", "--stream", "S"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: StoreUnavailable: cannot connect to NATS at nats://127.0.0.1:1")


# -- metrics -------------------------------------------------------------------------------------------------------
def test_the_metrics_endpoint_serves_the_counts() -> None:
    stats = IngestStats(processed=7, duplicates=2, failures=1, dead_lettered=1)
    stats.count_malformed("not_json")
    port = free_port()
    server = serve_metrics(stats, port)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        stats.processed += 1
        again = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
        server.server_close()
    for line in (
        'meshlog_ingest_messages_total{outcome="stored"} 5.0',
        'meshlog_ingest_messages_total{outcome="duplicate"} 2.0',
        'meshlog_ingest_messages_total{outcome="malformed"} 1.0',
        'meshlog_ingest_messages_total{outcome="failed"} 1.0',
        'meshlog_ingest_malformed_total{reason="not_json"} 1.0',
        "meshlog_ingest_dead_letters_total 1.0",
    ):
        assert line in text.splitlines()
    assert 'meshlog_ingest_messages_total{outcome="stored"} 6.0' in again.splitlines()
