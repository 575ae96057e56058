"""The conformance tests (see :mod:`meshlog.testing`)."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest

from meshlog import (
    NO_STREAM,
    STREAM_EXISTS,
    EventFilter,
    EventLog,
    EventTooLarge,
    FunctionProjection,
    IdempotencyConflict,
    InvalidCursor,
    NewEvent,
    NotFound,
    RecordedEvent,
    ValidationError,
    WrongExpectedVersion,
)
from meshlog.instances import Instances
from meshlog.stats import event_tokens
from meshlog.types import Mode, TypeRegistry, registry_of


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"k": value}
    return value


class LogFactory(Protocol):
    def __call__(self, tenant: str = "default") -> EventLog: ...


def _payload(i: int = 0) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "prompt_tokens": 100 + i, "text": f"call number {i}"}


def _everything(log: EventLog) -> list[RecordedEvent]:
    out: list[RecordedEvent] = []
    page = log.query(limit=1000)
    out.extend(page)
    while page.has_more:
        page = log.query(cursor=page.next_cursor, limit=1000)
        out.extend(page)
    return out


class StoreConformance:
    """The store contract as tests. Subclasses provide the ``make_log`` fixture."""

    @pytest.fixture
    def log(self, make_log: LogFactory) -> EventLog:
        return make_log()

    # -- the envelope --------------------------------------------------------------------------------------------
    def test_emit_returns_the_recorded_event(self, log: EventLog) -> None:
        before = datetime.now(UTC) - timedelta(seconds=5)
        e = log.emit(
            "task.started",
            {"capability": "code", "nested": {"list": [1, 2.5, None, True, "ü"]}},
            task_id="42",
            agent_id="api-coder",
            trace_id="t-1",
            metadata={"host": "odin"},
        )
        assert uuid.UUID(e.id).version == 7
        assert e.position > 0
        assert (e.stream, e.stream_position, e.type, e.version) == ("task:42", 1, "task.started", 1)
        assert e.data == {"capability": "code", "nested": {"list": [1, 2.5, None, True, "ü"]}}
        assert e.metadata == {"host": "odin"}
        assert (e.task_id, e.agent_id, e.trace_id, e.tenant) == ("42", "api-coder", "t-1", "default")
        assert e.root_id == e.id and e.depth == 0 and e.parent_id is None
        assert before <= e.recorded_at <= datetime.now(UTC) + timedelta(seconds=5)
        assert log.get(e.id) == e

    def test_default_stream_rule(self, log: EventLog) -> None:
        assert log.emit("a", task_id="7", trace_id="t", agent_id="x").stream == "task:7"
        assert log.emit("a", trace_id="t", agent_id="x").stream == "trace:t"
        assert log.emit("a", agent_id="x").stream == "agent:x"
        assert log.emit("a").stream == "default"
        assert log.emit("a", stream="mine", task_id="7").stream == "mine"

    def test_positions_increase_and_streams_are_gapless(self, log: EventLog) -> None:
        events = [log.emit("tick", {"i": i}, stream=f"s{i % 3}") for i in range(12)]
        positions = [e.position for e in events]
        assert positions == sorted(positions) and len(set(positions)) == 12
        for s in ("s0", "s1", "s2"):
            assert [e.stream_position for e in log.read_stream(s)] == [1, 2, 3, 4]
            assert log.stream_version(s) == 4
        assert log.stream_version("nothing") == 0

    def test_occurred_at_and_related_are_kept(self, log: EventLog) -> None:
        first = log.emit("a")
        when = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
        e = log.emit("b", occurred_at=when, related=[first.id])
        got = log.get(e.id)
        assert got.occurred_at == when
        assert got.related == (first.id,)

    def test_caller_given_id_is_kept_and_unique(self, log: EventLog) -> None:
        given = str(uuid.uuid4())
        assert log.emit("a", id=given).id == given
        head = log.head_position()
        with pytest.raises(ValidationError) as info:
            log.emit("a", id=given)
        assert info.value.rule == "unique"
        assert log.head_position() == head

    def test_returned_data_is_a_copy(self, log: EventLog) -> None:
        data: dict[str, Any] = {"items": [1]}
        e = log.emit("a", data)
        data["items"].append(2)
        e.data["items"].append(3)
        assert log.get(e.id).data == {"items": [1]}

    # -- invariant 8: bad input writes nothing ---------------------------------------------------------------
    @pytest.mark.parametrize(
        ("kwargs", "rule"),
        [
            ({"type": "llm.call", "data": ["not", "an", "object"]}, "json_object"),
            ({"type": "llm.call", "data": "text"}, "json_object"),
            ({"type": "llm.call", "data": {"s": "nul \x00 here"}}, "no_nul"),
            ({"type": "llm.call", "data": {"k\x00": 1}}, "no_nul"),
            ({"type": "llm.call", "data": {}, "metadata": {"m": ["\x00"]}}, "no_nul"),
            ({"type": "llm.call", "data": {"x": float("nan")}}, "finite"),
            ({"type": "llm.call", "data": {1: "int key"}}, "string_keys"),
            ({"type": "llm.call", "data": {"when": datetime.now(UTC)}}, "json_value"),
            ({"type": "", "data": {}}, "pattern"),
            ({"type": "has space", "data": {}}, "pattern"),
            ({"type": "ok", "data": {}, "version": 0}, "min"),
            ({"type": "ok", "data": {}, "task_id": ""}, "non_empty"),
            ({"type": "ok", "data": {}, "stream": "a\x00b"}, "no_nul"),
            ({"type": "llm\x00call", "data": {}}, "no_nul"),
            ({"type": "ok", "data": {}, "parent_id": "not-a-uuid"}, "uuid"),
            ({"type": "ok", "data": {}, "related": "not-a-list"}, "type"),
            ({"type": "ok", "data": {}, "occurred_at": datetime(2026, 1, 1)}, "aware"),
            ({"type": "ok", "data": {}, "expected_version": -3}, "expected_version"),
            ({"type": "ok", "data": {}, "parent_id": "00000000-0000-7000-8000-000000000000"}, "parent_exists"),
            ({"type": "ok", "data": {}, "agent_id": "lone \ud800 surrogate"}, "utf8"),
            ({"type": "ok", "data": {"s": "lone \udfff"}}, "utf8"),
            ({"type": "ok", "data": {}, "version": 2**31}, "min"),
            ({"type": "ok", "data": {}, "expected_version": 2**63}, "expected_version"),
            ({"type": "ok", "data": _nested(65)}, "max_depth"),
        ],
    )
    def test_bad_input_is_rejected_and_writes_nothing(self, log: EventLog, kwargs: dict[str, Any], rule: str) -> None:
        log.emit("before")
        head = log.head_position()
        kwargs = dict(kwargs)
        type_ = kwargs.pop("type")
        data = kwargs.pop("data")
        with pytest.raises(ValidationError) as info:
            log.emit(type_, data, **kwargs)
        assert info.value.rule == rule
        assert info.value.field
        assert log.head_position() == head

    def test_size_limit(self, make_log: LogFactory) -> None:
        log = make_log()
        log.max_event_bytes = 1000
        log.emit("fits", {"s": "x" * 900})
        head = log.head_position()
        with pytest.raises(EventTooLarge) as info:
            log.emit("too.big", {"s": "ü" * 600})  # 1,200 bytes in UTF-8
        assert info.value.limit == 1000 and info.value.size > 1000
        assert log.head_position() == head

    # -- invariant 5: atomic batches --------------------------------------------------------------------------
    def test_batch_is_written_in_order(self, log: EventLog) -> None:
        events = log.emit_batch([NewEvent(type="step", data={"i": i}, stream=f"b{i % 2}") for i in range(5)])
        assert [e.data["i"] for e in events] == [0, 1, 2, 3, 4]
        assert [e.position for e in events] == list(range(events[0].position, events[0].position + 5))
        assert [e.stream_position for e in events] == [1, 1, 2, 2, 3]

    def test_bad_event_fails_the_whole_batch(self, log: EventLog) -> None:
        head = log.head_position()
        with pytest.raises(ValidationError) as info:
            log.emit_batch([NewEvent(type="ok", data={}), NewEvent(type="bad", data={"x": "\x00"})])
        assert info.value.field == "events[1].data.x"
        missing_parent = str(uuid.uuid4())
        with pytest.raises(ValidationError):
            log.emit_batch([NewEvent(type="ok", data={}), NewEvent(type="child", data={}, parent_id=missing_parent)])
        with pytest.raises(ValidationError):
            log.emit_batch([])
        assert log.head_position() == head
        assert log.query().events == []

    def test_batch_version_check_is_all_or_nothing(self, log: EventLog) -> None:
        log.emit("first", stream="s")
        with pytest.raises(WrongExpectedVersion) as info:
            log.emit_batch([NewEvent(type="x", data={}, stream="s")] * 3, expected_version=0)
        assert info.value.actual == 1
        assert log.stream_version("s") == 1
        written = log.emit_batch([NewEvent(type="x", data={}, stream="s")] * 3, expected_version=1)
        assert [e.stream_position for e in written] == [2, 3, 4]
        with pytest.raises(ValidationError):
            log.emit_batch(
                [NewEvent(type="x", data={}, stream="s"), NewEvent(type="x", data={}, stream="t")], expected_version=4
            )

    # -- invariant 3: consistent streams -------------------------------------------------------------------------
    def test_expected_version(self, log: EventLog) -> None:
        assert log.emit("a", stream="s", expected_version=NO_STREAM).stream_position == 1
        with pytest.raises(WrongExpectedVersion) as info:
            log.emit("a", stream="s", expected_version=NO_STREAM)
        assert (info.value.actual, info.value.stream) == (1, "s")
        assert log.emit("a", stream="s", expected_version=1).stream_position == 2
        assert log.emit("a", stream="s", expected_version=STREAM_EXISTS).stream_position == 3
        with pytest.raises(WrongExpectedVersion):
            log.emit("a", stream="new", expected_version=STREAM_EXISTS)
        with pytest.raises(WrongExpectedVersion) as info:
            log.emit("a", stream="s", expected_version=1)
        assert info.value.actual == 3
        assert log.stream_version("s") == 3 and log.stream_version("new") == 0

    def test_concurrent_appends_with_one_expected_version(self, log: EventLog) -> None:
        log.emit("created", stream="race")
        barrier = threading.Barrier(8)

        def attempt(i: int) -> str:
            barrier.wait()
            try:
                log.emit("claimed", {"by": i}, stream="race", expected_version=1)
            except WrongExpectedVersion:
                return "lost"
            return "won"

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(attempt, range(8)))
        assert results.count("won") == 1
        assert [e.stream_position for e in log.read_stream("race")] == [1, 2]

    # -- invariant 4: idempotency -------------------------------------------------------------------------------
    def test_retry_with_same_key_returns_the_original(self, log: EventLog) -> None:
        first = log.emit("llm.call", _payload(), task_id="42", idempotency_key="call-7")
        again = log.emit("llm.call", _payload(), task_id="42", idempotency_key="call-7")
        assert again == first
        assert len(log.query(task_id="42").events) == 1

    def test_same_key_different_content_conflicts(self, log: EventLog) -> None:
        first = log.emit("llm.call", _payload(1), idempotency_key="k")
        with pytest.raises(IdempotencyConflict) as info:
            log.emit("llm.call", _payload(2), idempotency_key="k")
        assert info.value.existing_id == first.id and info.value.reason == "data"
        with pytest.raises(IdempotencyConflict) as info:
            log.emit("llm.response", _payload(1), idempotency_key="k")
        assert info.value.reason == "type"
        assert log.head_position() == first.position

    def test_retry_of_a_version_checked_append_is_not_a_version_error(self, log: EventLog) -> None:
        first = log.emit("a", stream="s", expected_version=NO_STREAM, idempotency_key="once")
        assert log.emit("a", stream="s", expected_version=NO_STREAM, idempotency_key="once") == first

    def test_batch_retry_returns_the_originals(self, log: EventLog) -> None:
        batch = [NewEvent(type="t", data={"i": i}, idempotency_key=f"b-{i}") for i in range(3)]
        first = log.emit_batch(batch)
        assert log.emit_batch(batch) == first
        head = log.head_position()
        with pytest.raises(IdempotencyConflict):
            log.emit_batch([batch[0], NewEvent(type="t", data={"i": 9}, idempotency_key="new")])
        with pytest.raises(ValidationError):
            log.emit_batch([batch[0], batch[0]])
        assert log.head_position() == head

    def test_idempotency_tells_booleans_from_numbers(self, log: EventLog) -> None:
        log.emit("flag", {"on": 1, "n": 2}, idempotency_key="flag")
        assert log.emit("flag", {"on": 1, "n": 2.0}, idempotency_key="flag").data == {"on": 1, "n": 2}
        with pytest.raises(IdempotencyConflict):
            log.emit("flag", {"on": True, "n": 2}, idempotency_key="flag")

    def test_concurrent_emits_with_one_key_store_one_event(self, log: EventLog) -> None:
        barrier = threading.Barrier(16)

        def attempt(_: int) -> RecordedEvent:
            barrier.wait()
            return log.emit("llm.call", _payload(), idempotency_key="same")

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(attempt, range(16)))
        assert len({(e.id, e.position) for e in results}) == 1
        assert len(log.query(types=["llm.call"]).events) == 1

    def test_keys_are_per_tenant(self, make_log: LogFactory) -> None:
        a, b = make_log("tenant-a"), make_log("tenant-b")
        ea = a.emit("x", {"v": 1}, idempotency_key="shared")
        eb = b.emit("x", {"v": 1}, idempotency_key="shared")
        assert ea.id != eb.id

    # -- tenants ----------------------------------------------------------------------------------------------
    def test_tenants_do_not_see_each_other(self, make_log: LogFactory) -> None:
        a, b = make_log("tenant-a"), make_log("tenant-b")
        ea = a.emit("secret", {"v": 1}, stream="shared-name", agent_id="agent")
        b.emit("other", {"v": 2}, stream="shared-name", agent_id="agent")
        assert [e.type for e in b.query(agent_id="agent")] == ["other"]
        assert [e.type for e in b.read_stream("shared-name")] == ["other"]
        assert b.stream_version("shared-name") == 1
        assert [s.stream for s in b.list_streams()] == ["shared-name"]
        with pytest.raises(NotFound):
            b.get(ea.id)
        with pytest.raises(ValidationError):
            b.emit("child", parent_id=ea.id)
        # Each tenant's head is its own last event, so a subscriber never waits on another tenant's writes.
        later = a.emit("secret", {"v": 3}, stream="shared-name")
        assert a.head_position() == later.position
        assert b.head_position() < later.position

    def test_a_tenant_view_shares_the_store(self, make_log: LogFactory) -> None:
        a = make_log("tenant-a")
        b = a.for_tenant("tenant-b")
        eb = b.emit("x", {"v": 1})
        assert b.tenant == "tenant-b" and b.get(eb.id).tenant == "tenant-b"
        with pytest.raises(NotFound):
            a.get(eb.id)
        b.close()  # a view leaves the store open
        assert a.emit("y").tenant == "tenant-a"
        with pytest.raises(ValidationError):
            a.for_tenant("*")

    # -- lineage ----------------------------------------------------------------------------------------------
    def test_lineage_is_derived(self, log: EventLog) -> None:
        root = log.emit("task.dispatched")
        call = log.emit("llm.call", parent_id=root.id)
        chain = log.emit_batch(
            [
                NewEvent(type="llm.response", data={}, parent_id=call.id, id=(rid := str(uuid.uuid4()))),
                NewEvent(type="tool.call", data={}, parent_id=rid),
                NewEvent(type="unrelated", data={}),
            ]
        )
        assert (call.root_id, call.depth) == (root.id, 1)
        assert [(e.root_id, e.depth) for e in chain[:2]] == [(root.id, 2), (root.id, 3)]
        assert (chain[2].root_id, chain[2].depth) == (chain[2].id, 0)
        with pytest.raises(ValidationError) as info:
            log.emit_batch(
                [
                    NewEvent(type="child", data={}, parent_id=(later := str(uuid.uuid4())), external_parent=True),
                    NewEvent(type="parent", data={}, id=later),
                ]
            )
        assert info.value.rule == "parent_first"
        outside = str(uuid.uuid4())
        external = log.emit("from.elsewhere", parent_id=outside, external_parent=True)
        assert (external.root_id, external.depth, external.parent_id) == (outside, 1, outside)
        assert log.get(chain[1].id).root_id == root.id

    # -- reading ----------------------------------------------------------------------------------------------
    def test_query_filters(self, log: EventLog) -> None:
        t0 = datetime.now(UTC) - timedelta(seconds=1)
        log.emit("llm.call", {"text": "Refactor the Parser"}, agent_id="coder", trace_id="t1", task_id="1")
        log.emit("llm.response", {"out": {"deep": ["parser done"]}}, agent_id="coder", trace_id="t1", task_id="1")
        log.emit("tool.call", {"n": 5}, agent_id="tester", trace_id="t2", task_id="2")
        log.emit("llm.call", {"text": "other"}, agent_id="tester", trace_id="t2", task_id="2", stream="custom")
        t1 = datetime.now(UTC) + timedelta(seconds=1)

        def types(**kw: Any) -> list[str]:
            return [e.type for e in log.query(**kw)]

        assert types(agent_id="coder") == ["llm.call", "llm.response"]
        assert types(types=["llm.call"]) == ["llm.call", "llm.call"]
        assert types(types="tool.call") == ["tool.call"]
        assert types(types=["llm.call", "tool.call"], trace_id="t2") == ["tool.call", "llm.call"]
        assert types(task_id="2", stream="custom") == ["llm.call"]
        assert types(text="PARSER") == ["llm.call", "llm.response"]
        assert types(text="5") == []  # numbers are not text
        assert len(types(since=t0, until=t1)) == 4
        assert types(until=t0) == [] and types(since=t1) == []
        everything = log.query().events
        assert types(after_position=everything[1].position) == ["tool.call", "llm.call"]
        assert types(before_position=everything[1].position) == ["llm.call"]
        assert log.query(agent_id="tester", total_count=True).total_count == 2

    def test_last_n_with_desc_order_and_cursor_paging(self, log: EventLog) -> None:
        log.emit_batch([NewEvent(type="e", data={"i": i}, agent_id="a" if i % 2 else "b") for i in range(25)])
        last = log.query(agent_id="a", order="desc", limit=5)
        assert [e.data["i"] for e in last] == [23, 21, 19, 17, 15]
        assert last.has_more and last.next_cursor

        seen: list[int] = []
        page = log.query(agent_id="a", order="desc", limit=5)
        seen.extend(e.data["i"] for e in page)
        while page.has_more:
            assert page.next_cursor is not None
            page = log.query(cursor=page.next_cursor, limit=5)
            seen.extend(e.data["i"] for e in page)
        assert seen == list(range(23, 0, -2))

        asc = log.query(limit=10)
        more = log.query(cursor=asc.next_cursor, limit=10)
        rest = log.query(cursor=more.next_cursor, limit=10)
        assert [e.data["i"] for e in [*asc, *more, *rest]] == list(range(25))
        assert not rest.has_more and rest.next_cursor is None

    def test_text_search_folds_ascii_only(self, log: EventLog) -> None:
        log.emit("a", {"s": "Élan Vital"})
        log.emit("b", {"s": "élan vital"})
        assert [e.type for e in log.query(text="VITAL")] == ["a", "b"]
        assert [e.type for e in log.query(text="élan")] == ["b"]

    def test_position_bounds_are_checked(self, log: EventLog) -> None:
        for bad in (-1, 2**63):
            with pytest.raises(ValidationError):
                log.query(after_position=bad)

    def test_cursor_and_limit_validation(self, log: EventLog) -> None:
        log.emit_batch([NewEvent(type="e", data={}) for _ in range(3)])
        page = log.query(limit=1, agent_id=None)
        assert page.next_cursor is not None
        with pytest.raises(InvalidCursor):
            log.query(cursor="not-a-cursor")
        with pytest.raises(InvalidCursor):
            log.query(cursor=page.next_cursor, agent_id="someone-else")
        for bad in (0, 1001, -1):
            with pytest.raises(ValidationError):
                log.query(limit=bad)
        with pytest.raises(ValidationError):
            log.query(order="sideways")  # type: ignore[arg-type]
        latest = log.query(order="desc", limit=1)
        assert [e.position for e in log.query(cursor=latest.next_cursor, limit=1)] == [page[0].position + 1]
        with pytest.raises(InvalidCursor):
            log.query(cursor=latest.next_cursor, order="asc")

    def test_read_stream_ranges_and_direction(self, log: EventLog) -> None:
        log.emit_batch([NewEvent(type="e", data={"i": i}, stream="long") for i in range(1, 1201)])
        forward = [e.stream_position for e in log.read_stream("long")]
        assert forward == list(range(1, 1201))
        assert [e.stream_position for e in log.read_stream("long", from_version=1190)] == list(range(1190, 1201))
        assert [e.stream_position for e in log.read_stream("long", from_version=5, to_version=7)] == [5, 6, 7]
        backwards = [e.stream_position for e in log.read_stream("long", backwards=True)]
        assert backwards == list(range(1200, 0, -1))
        assert [e.stream_position for e in log.read_stream("long", to_version=3, backwards=True)] == [3, 2, 1]
        assert list(log.read_stream("missing")) == []

    def test_replay(self, log: EventLog) -> None:
        for i in range(10):
            log.emit("tokens", {"n": i}, stream="session")
        projection = FunctionProjection(lambda: 0, lambda total, e: total + int(e.data["n"]))
        full = log.replay("session", projection)
        assert (full.state, full.events_replayed, full.last_version) == (45, 10, 10)
        assert full.duration_ms >= 0
        part = log.replay("session", projection, to_version=4)
        assert (part.state, part.events_replayed, part.last_version) == (6, 4, 4)
        empty = log.replay("nothing", projection)
        assert (empty.state, empty.events_replayed, empty.last_version) == (0, 0, 0)

    def test_get_unknown(self, log: EventLog) -> None:
        with pytest.raises(NotFound):
            log.get(str(uuid.uuid4()))
        with pytest.raises(NotFound):
            log.get("not-a-uuid")

    def test_list_streams(self, log: EventLog) -> None:
        for s in ("task:2", "task:1", "agent:x", "task:1"):
            log.emit("e", stream=s)
        streams = log.list_streams()
        assert [(s.stream, s.version) for s in streams] == [("agent:x", 1), ("task:1", 2), ("task:2", 1)]
        assert [s.stream for s in log.list_streams(prefix="task:")] == ["task:1", "task:2"]
        assert [s.stream for s in log.list_streams(after="task:1")] == ["task:2"]
        assert streams[1].last_position == log.query(stream="task:1", order="desc", limit=1)[0].position

    # -- invariant 2: subscribers never skip ------------------------------------------------------------------
    def test_subscribe_catches_up_then_follows_live(self, log: EventLog) -> None:
        log.emit_batch([NewEvent(type="old", data={"i": i}) for i in range(3)])
        got: list[RecordedEvent] = []

        def later() -> None:
            for i in range(3):
                log.emit("new", {"i": i})

        writer = threading.Timer(0.2, later)
        writer.start()
        for event in log.subscribe(poll_interval=0.05):
            got.append(event)
            if len(got) == 6:
                break
        writer.join()
        assert [e.type for e in got] == ["old"] * 3 + ["new"] * 3
        filtered = log.subscribe(filter=EventFilter(types=("new",)), poll_interval=0.05)
        assert [next(filtered).data["i"] for _ in range(3)] == [0, 1, 2]

    def test_no_skip_with_concurrent_writers(self, log: EventLog) -> None:
        writers, per_writer = 8, 40
        start = log.head_position()
        received: list[RecordedEvent] = []
        done = threading.Event()

        def subscriber() -> None:
            for event in log.subscribe(after_position=start, poll_interval=0.02):
                received.append(event)
                if len(received) == writers * per_writer:
                    break
            done.set()

        reader = threading.Thread(target=subscriber)
        reader.start()

        def write(w: int) -> None:
            for i in range(per_writer):
                if i % 5 == 0:
                    log.emit_batch([NewEvent(type="w", data={"w": w, "i": i}), NewEvent(type="w2", data={})])
                    continue
                log.emit("w", {"w": w, "i": i})

        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(write, range(writers)))
        assert done.wait(30), f"subscriber got {len(received)} events"
        reader.join()
        committed = [e for e in _everything(log) if e.position > start][: writers * per_writer]
        assert [e.position for e in received] == [e.position for e in committed]
        assert len({e.position for e in received}) == len(received)

    def test_checkpoints(self, log: EventLog) -> None:
        events = [log.emit("e", {"i": i}) for i in range(5)]
        assert log.checkpoint("indexer") is None
        log.save_checkpoint("indexer", events[2].position)
        assert log.checkpoint("indexer") == events[2].position
        resumed = log.subscribe(consumer="indexer", poll_interval=0.01)
        assert [next(resumed).data["i"] for _ in range(2)] == [3, 4]
        log.save_checkpoint("indexer", events[4].position)
        assert log.checkpoint("indexer") == events[4].position

    # -- stats --------------------------------------------------------------------------------------------------
    def test_stats_count_per_bucket_type_and_agent(self, log: EventLog) -> None:
        kinds = [
            ("llm.call", "coder"),
            ("llm.response", "coder"),
            ("llm.call", "tester"),
            ("llm.error", "tester"),
            ("task.result.failure", "tester"),
            ("deployment_failed", None),
            ("task.progress", "coder"),
            ("llm.call", None),
        ]
        for kind, agent in kinds[:4]:
            log.emit(kind, agent_id=agent)
        time.sleep(0.02)
        for kind, agent in kinds[4:]:
            log.emit(kind, agent_id=agent)
        events = _everything(log)
        assert len(events) == len(kinds)
        # A bucket boundary on the fifth event's own recorded_at: the first four fall before it, the rest after.
        cut = events[4].recorded_at
        since = cut - timedelta(seconds=1)
        until = events[-1].recorded_at + timedelta(seconds=1)
        stats = log.stats(since=since, until=until, bucket=timedelta(seconds=1))
        assert (stats.since, stats.until, stats.bucket_seconds) == (since, until, 1)
        expected = [0] * len(stats.timeline)
        for e in events:
            expected[(e.recorded_at - since) // timedelta(seconds=1)] += 1
        assert [n for _, n in stats.timeline] == expected
        assert [start for start, _ in stats.timeline] == [since + timedelta(seconds=i) for i in range(len(expected))]
        assert stats.timeline[1][1] >= 4 and stats.total == len(kinds)
        assert stats.by_type == (
            ("llm.call", 3),
            ("deployment_failed", 1),
            ("llm.error", 1),
            ("llm.response", 1),
            ("task.progress", 1),
            ("task.result.failure", 1),
        )
        assert stats.by_agent == (("coder", 3), ("tester", 3), (None, 2))
        assert stats.failures == 3
        assert stats.failures_by_type == (("deployment_failed", 1), ("llm.error", 1), ("task.result.failure", 1))

    def test_stats_window_bounds_are_since_inclusive_until_exclusive(self, log: EventLog) -> None:
        first = log.emit("a")
        time.sleep(0.01)
        second = log.emit("b")
        only_first = log.stats(since=first.recorded_at, until=second.recorded_at)
        assert (only_first.total, only_first.by_type) == (1, (("a", 1),))
        assert [n for _, n in only_first.timeline] == [1]
        only_second = log.stats(since=second.recorded_at, until=second.recorded_at + timedelta(microseconds=1))
        assert (only_second.total, only_second.by_type) == (1, (("b", 1),))

    def test_stats_default_to_the_last_hour(self, log: EventLog) -> None:
        log.emit("a", agent_id="x")
        before = datetime.now(UTC)
        stats = log.stats()
        assert stats.until - stats.since == timedelta(hours=1)
        assert before - timedelta(seconds=5) <= stats.until <= datetime.now(UTC) + timedelta(seconds=5)
        assert stats.bucket_seconds == 60 and len(stats.timeline) == 60
        assert (stats.total, stats.by_agent) == (1, (("x", 1),))

    def test_stats_of_an_empty_window_have_zero_buckets(self, log: EventLog) -> None:
        log.emit("a")
        since = datetime(2020, 1, 1, tzinfo=UTC)
        stats = log.stats(since=since, until=since + timedelta(minutes=5, seconds=30), bucket=timedelta(minutes=1))
        assert stats.timeline == tuple((since + timedelta(minutes=i), 0) for i in range(6))
        assert (stats.total, stats.by_type, stats.by_agent, stats.failures, stats.failures_by_type) == (
            0,
            (),
            (),
            0,
            (),
        )

    def test_stats_stay_in_the_tenant(self, make_log: LogFactory) -> None:
        a, b = make_log("tenant-a"), make_log("tenant-b")
        a.emit("llm.error", agent_id="secret-agent")
        a.emit("x", agent_id="secret-agent")
        b.emit("y", agent_id="mine")
        stats = b.stats()
        assert (stats.total, stats.by_type, stats.by_agent, stats.failures) == (1, (("y", 1),), (("mine", 1),), 0)
        assert a.stats().total == 2

    @pytest.mark.parametrize(
        ("kwargs", "field", "rule"),
        [
            ({"since": datetime(2026, 1, 1)}, "since", "aware"),
            ({"since": datetime(2026, 1, 2, tzinfo=UTC), "until": datetime(2026, 1, 1, tzinfo=UTC)}, "until", None),
            ({"since": datetime(2026, 1, 1, tzinfo=UTC), "until": datetime(2026, 1, 1, tzinfo=UTC)}, "until", None),
            ({"since": datetime(2026, 1, 1, tzinfo=UTC), "until": datetime(2026, 1, 9, tzinfo=UTC)}, "since", None),
            ({"bucket": timedelta(0)}, "bucket", "min"),
            ({"bucket": timedelta(seconds=-60)}, "bucket", "min"),
            ({"bucket": timedelta(seconds=1.5)}, "bucket", "whole_seconds"),
            (
                {
                    "since": datetime(2026, 1, 1, tzinfo=UTC),
                    "until": datetime(2026, 1, 1, 3, tzinfo=UTC),
                    "bucket": timedelta(seconds=1),
                },
                "bucket",
                "max_buckets",
            ),
        ],
    )
    def test_stats_validate_the_window(
        self, log: EventLog, kwargs: dict[str, Any], field: str, rule: str | None
    ) -> None:
        with pytest.raises(ValidationError) as info:
            log.stats(**kwargs)
        assert info.value.field == field
        if rule is not None:
            assert info.value.rule == rule

    # -- traces -------------------------------------------------------------------------------------------------
    def test_traces_sum_up_each_trace_last_active_first(self, log: EventLog) -> None:
        written = [
            ("plan", "llm.call", "orchestrator"),
            ("plan", "llm.response", "orchestrator"),
            ("build", "llm.call", "coder"),
            ("build", "tool.call", "coder"),
            ("build", "llm.error", "coder"),
            ("build", "Build-Failed", None),
            ("plan", "task.result.failure", "tester"),
            ("deploy", "deployment_failed", "deployer"),
            ("deploy", "llm.call", None),
            (None, "llm.error", "coder"),  # no trace: left out
            ("build", "task.progress", "reviewer"),
        ]
        events = [log.emit(kind, trace_id=trace, agent_id=agent) for trace, kind, agent in written]
        since = events[0].recorded_at
        until = events[-1].recorded_at + timedelta(seconds=1)
        traces = log.traces(since=since, until=until)
        last = {t: max(e.recorded_at for e in events if e.trace_id == t) for t in ("plan", "build", "deploy")}
        expected_order = sorted(sorted(last), key=lambda t: last[t], reverse=True)
        assert [t.trace_id for t in traces] == expected_order
        by_id = {t.trace_id: t for t in traces}
        for trace_id in expected_order:
            mine = [e for e in events if e.trace_id == trace_id]
            summary = by_id[trace_id]
            assert (summary.started, summary.last, summary.events) == (
                min(e.recorded_at for e in mine),
                max(e.recorded_at for e in mine),
                len(mine),
            )
        got = {t.trace_id: (t.events, t.agents, t.llm_calls, t.failures) for t in traces}
        assert got == {
            "plan": (3, ("orchestrator", "tester"), 1, 1),
            "build": (5, ("coder", "reviewer"), 1, 2),
            "deploy": (2, ("deployer",), 1, 1),
        }

    def test_traces_count_failures_by_type_as_stats_do(self, log: EventLog) -> None:
        kinds = [
            "llm.error", "task.result.failure", "deployment_failed", "Build-Failed", "tool:ERROR", "job/failure",
            "error", "Error.Occurred", "deploy.failed",
            "errors", "failed", "terror", "llm.errors", "failure_count", "llm.call", "error.handled",
        ]  # fmt: skip
        log.emit_batch([NewEvent(type=kind, trace_id="mixed") for kind in kinds])
        (summary,) = log.traces()
        assert (summary.events, summary.llm_calls, summary.failures) == (len(kinds), 1, 9)
        assert summary.failures == log.stats().failures

    def test_traces_add_up_the_tokens_of_llm_responses(self, log: EventLog) -> None:
        written: list[tuple[str, dict[str, Any], int]] = [
            ("llm.call", {"total_tokens": 999}, 0),  # a call's payload does not count
            ("llm.response", {"total_tokens": 120, "input_tokens": 100, "output_tokens": 1}, 120),
            ("llm.response", {"input_tokens": 30, "output_tokens": 12}, 42),
            ("llm.error", {"total_tokens": 5}, 5),
            ("llm.response", {"total_tokens": -3, "input_tokens": 1, "output_tokens": 2}, 3),
            ("llm.response", {"total_tokens": None, "input_tokens": 4, "output_tokens": 4.5}, 8),
            ("llm.response", {"total_tokens": 7.9}, 7),
            ("llm.response", {"total_tokens": "100"}, 0),
            ("llm.response", {"total_tokens": True, "input_tokens": 10}, 0),
            ("llm.response", {"total_tokens": {"n": 1}}, 0),
            ("tool.result", {"total_tokens": 50}, 0),
        ]
        log.emit_batch([NewEvent(type=kind, data=data, trace_id="tokens") for kind, data, _ in written])
        log.emit("llm.call", {"model": "m"}, trace_id="no-tokens")
        by_id = {t.trace_id: t for t in log.traces()}
        assert by_id["tokens"].tokens == sum(n for _, _, n in written) == 185
        assert by_id["tokens"].tokens == sum(event_tokens(kind, data) for kind, data, _ in written)
        assert (by_id["no-tokens"].tokens, by_id["no-tokens"].llm_calls) == (0, 1)

    def test_traces_window_is_since_inclusive_until_exclusive(self, log: EventLog) -> None:
        first = log.emit("step", trace_id="long", agent_id="early")
        time.sleep(0.01)
        second = log.emit("step", trace_id="long", agent_id="late")
        (head,) = log.traces(since=first.recorded_at, until=second.recorded_at)
        assert (head.started, head.last, head.events, head.agents) == (
            first.recorded_at,
            first.recorded_at,
            1,
            ("early",),
        )
        (tail,) = log.traces(since=second.recorded_at, until=second.recorded_at + timedelta(microseconds=1))
        assert (tail.started, tail.last, tail.events, tail.agents) == (
            second.recorded_at,
            second.recorded_at,
            1,
            ("late",),
        )
        old = datetime(2020, 1, 1, tzinfo=UTC)
        assert log.traces(since=old, until=old + timedelta(days=7)) == []

    def test_traces_default_to_the_last_hour(self, log: EventLog) -> None:
        e = log.emit("a", trace_id="now")
        assert [(t.trace_id, t.started) for t in log.traces()] == [("now", e.recorded_at)]
        assert log.traces(until=e.recorded_at - timedelta(hours=2)) == []

    def test_traces_of_an_agent(self, log: EventLog) -> None:
        log.emit("x", trace_id="t1", agent_id="coder")
        log.emit("llm.call", trace_id="t1", agent_id="tester")
        log.emit("x", trace_id="t2", agent_id="tester")
        log.emit("x", trace_id="t3", agent_id="coder")
        log.emit("x", agent_id="tester")  # no trace
        tester = log.traces(agent_id="tester")
        assert [t.trace_id for t in tester] == [t.trace_id for t in log.traces() if t.trace_id in ("t1", "t2")]
        t1 = next(t for t in tester if t.trace_id == "t1")
        assert (t1.events, t1.agents, t1.llm_calls) == (2, ("coder", "tester"), 1)  # every agent's events count
        assert log.traces(agent_id="nobody") == []

    def test_traces_limit_keeps_the_last_active(self, log: EventLog) -> None:
        for i in range(6):
            log.emit("x", trace_id=f"run-{i}")
        log.emit_batch([NewEvent(type="x", trace_id=t) for t in ("tie-c", "tie-a", "tie-b")])
        every = log.traces()
        assert len(every) == 9
        assert [t.last for t in every] == sorted((t.last for t in every), reverse=True)
        for newer, older in itertools.pairwise(every):
            assert newer.last > older.last or newer.trace_id < older.trace_id  # ties by trace id
        assert log.traces(limit=4) == every[:4]
        assert log.traces(limit=1) == every[:1]

    def test_traces_name_at_most_ten_agents(self, log: EventLog) -> None:
        agents = [f"agent-{i:02d}" for i in range(12, 0, -1)]
        log.emit_batch([NewEvent(type="x", trace_id="crowd", agent_id=a) for a in agents for _ in range(2)])
        (crowd,) = log.traces()
        assert crowd.agents == tuple(sorted(agents)[:10]) and crowd.events == 24

    def test_traces_stay_in_the_tenant(self, make_log: LogFactory) -> None:
        a, b = make_log("tenant-a"), make_log("tenant-b")
        a.emit("llm.error", agent_id="secret-agent", trace_id="shared")
        a.emit("x", trace_id="only-a")
        b.emit("y", agent_id="mine", trace_id="shared")
        (theirs,) = b.traces()
        assert (theirs.trace_id, theirs.events, theirs.agents, theirs.failures) == ("shared", 1, ("mine",), 0)
        assert b.traces(agent_id="secret-agent") == []
        assert sorted(t.trace_id for t in a.traces()) == ["only-a", "shared"]

    @pytest.mark.parametrize(
        ("kwargs", "field", "rule"),
        [
            ({"since": datetime(2026, 1, 1)}, "since", "aware"),
            ({"until": datetime(2026, 1, 1)}, "until", "aware"),
            ({"since": datetime(2026, 1, 2, tzinfo=UTC), "until": datetime(2026, 1, 1, tzinfo=UTC)}, "until", None),
            ({"since": datetime(2026, 1, 1, tzinfo=UTC), "until": datetime(2026, 1, 1, tzinfo=UTC)}, "until", None),
            ({"since": datetime(2026, 1, 1, tzinfo=UTC), "until": datetime(2026, 1, 9, tzinfo=UTC)}, "since", None),
            ({"limit": 0}, "limit", "range"),
            ({"limit": 501}, "limit", "range"),
            ({"limit": True}, "limit", "range"),
            ({"agent_id": ""}, "agent_id", "non_empty"),
            ({"agent_id": "a\x00b"}, "agent_id", "no_nul"),
        ],
    )
    def test_traces_validate_their_arguments(
        self, log: EventLog, kwargs: dict[str, Any], field: str, rule: str | None
    ) -> None:
        with pytest.raises(ValidationError) as info:
            log.traces(**kwargs)
        assert info.value.field == field
        if rule is not None:
            assert info.value.rule == rule


class LineageConformance:
    """Lineage, related-event graphs, outcomes and snapshots. Subclasses provide ``make_log``."""

    @pytest.fixture
    def log(self, make_log: LogFactory) -> EventLog:
        return make_log()

    def test_lineage_lists_ancestors_and_descendants(self, log: EventLog) -> None:
        root = log.emit("user_message", {"content": "implement auth"})
        spawn = log.emit("spawn", {"subagent": "coder"}, parent_id=root.id)
        call, other = log.emit_batch(
            [
                NewEvent(type="llm.call", data={}, parent_id=spawn.id),
                NewEvent(type="commit", data={}, parent_id=root.id),
            ]
        )
        reply = log.emit("llm.response", {}, parent_id=call.id)
        log.emit("unrelated")
        lineage = log.lineage(call.id)
        assert lineage.event == call
        assert [e.id for e in lineage.ancestors] == [root.id, spawn.id]
        assert [e.id for e in lineage.descendants] == [reply.id]
        assert lineage.root == root
        whole = log.lineage(root.id)
        assert whole.ancestors == []
        assert [e.id for e in whole.descendants] == [spawn.id, call.id, other.id, reply.id]
        assert [e.type for e in log.query(parent_id=root.id)] == ["spawn", "commit"]
        with pytest.raises(NotFound):
            log.lineage(str(uuid.uuid4()))

    def test_graph_follows_parent_and_related_links_both_ways_without_looping(self, log: EventLog) -> None:
        a = log.emit("widget.created", {"n": "a"})
        b = log.emit("provider.connected", {"n": "b"}, related=[a.id])
        c = log.emit("automation.triggered", {"n": "c"}, parent_id=b.id)
        d = log.emit("workflow.completed", {"n": "d"}, related=[c.id, a.id])
        far = log.emit("error.occurred", {"n": "far"}, parent_id=d.id)
        graph = log.graph(b.id, max_depth=1)
        assert {n.event.id: n.distance for n in graph.nodes} == {b.id: 0, a.id: 1, c.id: 1}
        assert {(e.source, e.target, e.kind) for e in graph.edges} == {(b.id, a.id, "related"), (c.id, b.id, "parent")}
        wide = log.graph(b.id, max_depth=2)
        assert {n.event.id: n.distance for n in wide.nodes} == {b.id: 0, a.id: 1, c.id: 1, d.id: 2}
        everything = log.graph(a.id, max_depth=10)
        assert {n.event.id: n.distance for n in everything.nodes} == {a.id: 0, b.id: 1, d.id: 1, c.id: 2, far.id: 2}
        assert [n.distance for n in everything.nodes] == sorted(n.distance for n in everything.nodes)
        assert [n.event.id for n in log.graph(a.id, max_depth=0).nodes] == [a.id]

    def test_graph_keeps_the_nearest_events_up_to_its_limit(self, log: EventLog) -> None:
        root = log.emit("run.started")
        children = log.emit_batch([NewEvent(type="step", data={"n": n}, parent_id=root.id) for n in range(5)])
        grandchild = log.emit("step.detail", parent_id=children[0].id)
        whole = log.graph(root.id, max_depth=2)
        assert len(whole.nodes) == 7 and not whole.truncated
        assert whole.to_dict()["truncated"] is False
        cut = log.graph(root.id, max_depth=2, limit=4)
        assert [n.event.id for n in cut.nodes] == [root.id, *(c.id for c in children[:3])]
        assert cut.truncated and cut.to_dict()["truncated"] is True
        assert {(e.source, e.target) for e in cut.edges} == {(c.id, root.id) for c in children[:3]}
        exact = log.graph(root.id, max_depth=2, limit=7)
        assert exact.nodes[-1].event.id == grandchild.id and not exact.truncated
        for bad in (0, 10_001, True, "5"):
            with pytest.raises(ValidationError):
                log.graph(root.id, limit=bad)  # type: ignore[arg-type]

    def test_graph_does_not_bridge_through_unrecorded_ids(self, log: EventLog) -> None:
        outside = str(uuid.uuid4())
        first = log.emit("x", parent_id=outside, external_parent=True)
        second = log.emit("y", parent_id=outside, external_parent=True)
        third = log.emit("z", related=[outside])
        for start in (first, second, third):
            assert [n.event.id for n in log.graph(start.id, max_depth=5).nodes] == [start.id]

    def test_graph_stays_in_the_tenant(self, make_log: LogFactory) -> None:
        a, b = make_log("tenant-a"), make_log("tenant-b")
        mine = a.emit("x")
        theirs = b.emit("y", related=[mine.id])
        assert [n.event.id for n in a.graph(mine.id, max_depth=3).nodes] == [mine.id]
        with pytest.raises(NotFound):
            b.graph(mine.id)
        assert [n.event.id for n in b.graph(theirs.id).nodes] == [theirs.id]

    def test_outcomes_are_new_events_folded_in_on_request(self, log: EventLog) -> None:
        widget = log.emit("widget.created", {"name": "failures"}, task_id="7")
        assert log.get(widget.id, with_outcome=True).outcome is None
        first = log.record_outcome(widget.id, {"status": "pending"})
        log.record_outcome(widget.id, {"status": "success", "notes": "dashboard shows failures < 1 min"})
        assert (first.type, first.parent_id, first.related, first.stream) == (
            "outcome.recorded",
            widget.id,
            (widget.id,),
            widget.stream,
        )
        folded = log.get(widget.id, with_outcome=True)
        assert folded.outcome == {"status": "success", "notes": "dashboard shows failures < 1 min"}
        assert folded._replace(outcome=None) == widget
        assert log.get(widget.id) == widget
        with pytest.raises(NotFound):
            log.record_outcome(str(uuid.uuid4()), {"status": "x"})

    def test_snapshots_let_replay_skip_what_they_cover(self, log: EventLog) -> None:
        class Total:
            name = "total"
            version = 1

            def initial(self) -> int:
                return 0

            def apply(self, state: int, event: RecordedEvent) -> int:
                return state + int(event.data["n"])

            def to_snapshot(self, state: int) -> dict[str, Any]:
                return {"total": state}

            def from_snapshot(self, data: dict[str, Any]) -> int:
                return int(data["total"])

        log.emit_batch([NewEvent(type="n", data={"n": i}, stream="counter") for i in range(1, 101)])
        first = log.replay("counter", Total(), snapshot_every=50)
        assert (first.state, first.events_replayed, first.snapshot_version) == (5050, 100, None)
        second = log.replay("counter", Total(), snapshot_every=50)
        assert (second.state, second.events_replayed, second.snapshot_version, second.last_version) == (
            5050,
            0,
            100,
            100,
        )
        log.emit_batch([NewEvent(type="n", data={"n": 1}, stream="counter") for _ in range(10)])
        third = log.replay("counter", Total(), snapshot_every=50)
        assert (third.state, third.events_replayed, third.snapshot_version) == (5060, 10, 100)
        early = log.replay("counter", Total(), snapshot_every=50, to_version=20)
        assert (early.state, early.events_replayed, early.snapshot_version) == (210, 20, None)
        plain = log.replay("counter", Total())
        assert (plain.state, plain.events_replayed) == (5060, 110)


class TypesConformance:
    """Type validation at emit, upcasting at read, on a real store. Subclasses provide ``make_log``."""

    @pytest.fixture
    def typed(self, make_log: LogFactory) -> Callable[..., EventLog]:
        store = make_log().store

        def build(*catalogues: str, validation: Mode = "known", registry: TypeRegistry | None = None) -> EventLog:
            return EventLog(store, types=registry or registry_of(catalogues), validation=validation)

        return build

    def test_known_types_are_validated_and_nothing_is_written_on_failure(self, typed: Callable[..., EventLog]) -> None:
        log = typed("agent-mesh", "session")
        log.emit("epic_started", {"epic_id": "epic-003", "feature_name": "auth", "estimated_hours": 60})
        log.emit("something.custom", {"anything": True})  # unknown types pass in "known" mode
        head = log.head_position()
        with pytest.raises(ValidationError) as info:
            log.emit("llm.call", {"prompt_length": 10})  # no model
        assert (info.value.field, info.value.rule) == ("data.model", "required")
        with pytest.raises(ValidationError) as info:
            log.emit_batch(
                [NewEvent(type="llm.call", data={"model": "m"}), NewEvent(type="epic_started", data={"epic_id": 3})]
            )
        assert info.value.field is not None and info.value.field.startswith("events[1].data")
        assert log.head_position() == head

    def test_strict_rejects_unknown_types_and_off_checks_nothing(self, typed: Callable[..., EventLog]) -> None:
        strict = typed("session", validation="strict")
        with pytest.raises(ValidationError) as info:
            strict.emit("not.in.catalogue", {})
        assert info.value.rule == "unknown_type"
        assert strict.emit("commit", {"message": "feat: auth", "files_changed": 7}).type == "commit"
        assert strict.record_outcome(strict.query(types=["commit"])[0].id, {"status": "merged"}).type == (
            "outcome.recorded"
        )
        off = typed("agent-mesh", validation="off")
        assert off.emit("llm.call", {"not": "validated"}).data == {"not": "validated"}

    def test_important_types_are_marked_unless_overridden(self, typed: Callable[..., EventLog]) -> None:
        log = typed("documentable")
        marked = log.emit("widget.created", {"widget_id": "w1", "widget_type": "chart"})
        assert log.get(marked.id).metadata.get("important") is True
        kept = log.emit("widget.created", {"widget_id": "w2", "widget_type": "chart"}, metadata={"important": False})
        assert log.get(kept.id).metadata["important"] is False

    def test_reads_upcast_old_versions_and_raw_reads_do_not(self, typed: Callable[..., EventLog]) -> None:
        registry = TypeRegistry()
        schema_v1 = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
        schema_v2 = {"type": "object", "properties": {"full_name": {"type": "string"}}, "required": ["full_name"]}
        registry.register("user.renamed", schema=schema_v1, category="user", description="v1")
        registry.register("user.renamed", schema=schema_v2, category="user", description="v2", version=2)
        registry.add_upcaster("user.renamed", 1, lambda data: {"full_name": data["name"]})
        log = typed(registry=registry)
        old = log.emit("user.renamed", {"name": "Ada"}, version=1, stream="user:1")
        new = log.emit("user.renamed", {"full_name": "Grace"}, version=2, stream="user:1")
        assert (log.get(old.id).version, log.get(old.id).data) == (2, {"full_name": "Ada"})
        assert log.get(old.id, raw=True) == old
        assert [e.data["full_name"] for e in log.read_stream("user:1")] == ["Ada", "Grace"]
        assert [e.version for e in log.read_stream("user:1", raw=True)] == [1, 2]
        assert [e.version for e in log.query(stream="user:1")] == [2, 2]
        assert log.query(stream="user:1", raw=True)[0] == old
        assert log.replay("user:1", FunctionProjection(list, lambda s, e: [*s, e.data["full_name"]])).state == [
            "Ada",
            "Grace",
        ]
        assert new.version == 2
        with pytest.raises(ValidationError) as info:
            log.emit("user.renamed", {"full_name": "x"}, version=3)
        assert info.value.rule == "unknown_version"

    def test_event_types_lists_what_the_log_knows(self, typed: Callable[..., EventLog]) -> None:
        listed = {t.name: t.to_dict() for t in typed("session").event_types()}
        assert set(listed["epic_started"]) == {
            "type", "description", "category", "required_fields", "optional_fields", "version", "important"
        }  # fmt: skip
        assert listed["epic_started"]["category"] == "epic"
        assert "epic_id" in listed["epic_started"]["required_fields"]
        assert "outcome.recorded" in listed


class SessionConformance:
    """Resume suggestions and narratives read back from a real store. Subclasses provide ``make_log``."""

    @pytest.fixture
    def log(self, make_log: LogFactory) -> EventLog:
        return make_log()

    def test_resume_reads_the_stream_back_and_suggests_what_next(self, log: EventLog) -> None:
        start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
        steps: list[tuple[str, dict[str, Any]]] = [
            ("instance_registered", {"instance_id": "odin3-ps"}),
            ("epic_started", {"epic_id": "epic-003", "feature_name": "authentication-oauth"}),
            ("test_passed", {"epic_id": "epic-003", "passed_count": 45, "failed_count": 0, "test_count": 45}),
            ("epic_completed", {"epic_id": "epic-003", "tests_passed": 45}),
            ("prd_updated", {"epic_id": "epic-003"}),
        ]
        for i, (type_, data) in enumerate(steps):
            log.emit(type_, data, stream="instance:odin3-ps", occurred_at=start + timedelta(minutes=i))
        first = log.resume("instance:odin3-ps", now=start + timedelta(hours=1), snapshot_every=2)
        assert first.text == "epic-003 is complete: 45 tests passed, PRD updated. Ready for the next epic."
        assert first.last_version == 5
        assert first.state.to_final_state()["last_epic"] == "epic-003"
        log.emit("deployment_started", {"service": "api"}, stream="instance:odin3-ps", occurred_at=start)
        again = log.resume("instance:odin3-ps", now=start + timedelta(hours=2), snapshot_every=2)
        assert "deployment of api started" in again.text and "never finished" in again.text
        assert again.last_version == 6
        assert again.state.total_events_replayed == 6
        assert log.resume("instance:nobody").suggestion.rule == "nothing_recorded"

    def test_narrative_tells_a_trace(self, log: EventLog) -> None:
        ask = log.emit("user_message", {"content": "add rate limiting"}, trace_id="run-1", agent_id="user")
        dispatch = log.emit("task.dispatched", {"capability": "code"}, trace_id="run-1", task_id="t1",
                            agent_id="orchestrator", parent_id=ask.id)  # fmt: skip
        log.emit("llm.error", {"model": "gpt-4o", "error_type": "timeout"}, trace_id="run-1", task_id="t1",
                 agent_id="api-coder", parent_id=dispatch.id)  # fmt: skip
        done = log.emit("task.result", {"status": "succeeded"}, trace_id="run-1", task_id="t1", agent_id="api-coder",
                        parent_id=dispatch.id)  # fmt: skip
        log.record_outcome(done.id, {"status": "merged"})
        log.emit("elsewhere", {}, trace_id="run-2")
        text = log.narrative(trace_id="run-1")
        assert text.startswith("#") and "run-1" in text
        for expected in ("api-coder", "orchestrator", "task.result", "timeout", "merged"):
            assert expected in text
        assert "elsewhere" not in text
        assert "task.dispatched" in log.narrative(stream="task:t1")
        with pytest.raises(ValidationError):
            log.narrative()


class TokenConformance:
    """API tokens: issued per tenant, stored as digests, authenticated across tenants, revocable."""

    def test_issue_authenticate_and_revoke(self, make_log: LogFactory) -> None:
        a, b = make_log("tenant-a"), make_log("tenant-b")
        assert not a.has_tokens()
        text, record = a.create_token("write", name="ci agent")
        assert text.startswith("mlk_") and record.id in text
        assert record.tenant == "tenant-a" and record.scopes == ("write",) and record.name == "ci agent"
        assert text.split("_", 2)[2] not in repr(record)  # only the digest is kept
        assert a.has_tokens() and b.has_tokens()
        found = b.authenticate(text)  # any tenant's log authenticates any token: it says whose it is
        assert found is not None and found.tenant == "tenant-a" and found.allows("read") and not found.allows("admin")
        assert a.authenticate(text[:-1] + ("A" if text[-1] != "A" else "B")) is None  # wrong secret
        assert a.authenticate("mlk_0000000000000000_" + "x" * 43) is None  # unknown id
        assert a.authenticate("Bearer nonsense") is None
        assert [t.id for t in a.tokens()] == [record.id] and b.tokens() == []
        with pytest.raises(NotFound):
            b.revoke_token(record.id)  # another tenant's token
        a.revoke_token(record.id)
        assert a.authenticate(text) is None
        assert not a.has_tokens()
        (listed,) = a.tokens()
        assert listed.revoked_at is not None
        with pytest.raises(NotFound):
            a.revoke_token(record.id)

    def test_expired_tokens_do_not_authenticate(self, make_log: LogFactory) -> None:
        log = make_log()
        text, _ = log.create_token(["read"], expires_in=timedelta(microseconds=1))
        time.sleep(0.01)
        assert log.authenticate(text) is None
        assert not log.has_tokens()

    @pytest.mark.parametrize(
        ("scopes", "kwargs"),
        [("root", {}), ([], {}), ("read", {"expires_in": timedelta(0)}), ("read", {"name": "x" * 201})],
    )
    def test_bad_token_requests_store_nothing(self, make_log: LogFactory, scopes: Any, kwargs: dict[str, Any]) -> None:
        log = make_log()
        with pytest.raises(ValidationError):
            log.create_token(scopes, **kwargs)
        assert log.tokens() == []
        with pytest.raises(ValidationError):
            log.revoke_token("not-an-id")


class _Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def _types_of(log: EventLog, stream: str) -> list[str]:
    return [e.type for e in log.read_stream(stream)]


class InstanceConformance:
    """The instance registry: rows per tenant, heartbeats, coalesced heartbeat events, stale detection once per
    lapse (also with concurrent detectors), recovery and closing. Tests whose name ends in ``_with_a_clock``
    drive time by hand and detect stale instances in the store itself: stores that do neither (a remote server
    keeps its own clock and detector) skip them."""

    def test_register_get_list_and_reregister(self, make_log: LogFactory) -> None:
        log = make_log()
        instances = log.instances
        first = instances.register("odin3-ps", name="Odin", project="shop", host="odin3", metadata={"model": "m1"})
        assert (first.id, first.status, first.name, first.project, first.host) == (
            "odin3-ps",
            "active",
            "Odin",
            "shop",
            "odin3",
        )
        assert dict(first.metadata) == {"model": "m1"} and first.last_heartbeat == first.registered_at
        got = instances.get("odin3-ps")
        assert (got.id, got.status, got.project, dict(got.metadata)) == ("odin3-ps", "active", "shop", {"model": "m1"})
        assert got.registered_at == first.registered_at
        instances.register("b-2", project="other")
        instances.register("a-1", project="shop")
        assert [i.id for i in instances.list()] == ["a-1", "b-2", "odin3-ps"]
        assert [i.id for i in instances.list(project="shop")] == ["a-1", "odin3-ps"]
        assert [i.id for i in instances.list(after="a-1", limit=1)] == ["b-2"]
        again = instances.register("odin3-ps", project="shop-2")
        assert again.project == "shop-2" and again.name is None and instances.get("odin3-ps").project == "shop-2"
        events = list(log.read_stream("instance:odin3-ps"))
        assert [e.type for e in events] == ["instance_registered", "instance_registered"]
        assert events[0].data == {
            "instance_id": "odin3-ps",
            "name": "Odin",
            "project": "shop",
            "hostname": "odin3",
            "metadata": {"model": "m1"},
        }

    def test_heartbeat_close_and_errors(self, make_log: LogFactory) -> None:
        log = make_log()
        instances = log.instances
        with pytest.raises(NotFound):
            instances.heartbeat("ghost")
        with pytest.raises(NotFound):
            instances.get("ghost")
        with pytest.raises(NotFound):
            instances.close("ghost")
        for bad in ("", "has space", "-dash-first", "x" * 201, "a/b"):
            with pytest.raises(ValidationError):
                instances.register(bad)
        with pytest.raises(ValidationError):
            instances.register("ok", metadata=[1, 2])  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            instances.list(status="sleeping")
        assert instances.list() == [] and log.query().events == []
        registered = instances.register("odin3-ps")
        beat = instances.heartbeat("odin3-ps", {"current_epic": "epic-003"})
        assert beat.status == "active" and beat.last_heartbeat >= registered.last_heartbeat
        closed = instances.close("odin3-ps", reason="done")
        assert closed.status == "closed" and closed.closed_at is not None
        assert instances.close("odin3-ps").status == "closed"  # again: no change, no event
        with pytest.raises(ValidationError, match="closed"):
            instances.heartbeat("odin3-ps")
        assert [i.id for i in instances.list(status="closed")] == ["odin3-ps"]
        assert instances.list(status="active") == []
        events = list(log.read_stream("instance:odin3-ps"))
        assert [e.type for e in events] == ["instance_registered", "instance_heartbeat", "instance_closed"]
        assert events[1].data == {"current_epic": "epic-003", "instance_id": "odin3-ps"}
        assert events[2].data == {"instance_id": "odin3-ps", "reason": "done"}
        assert instances.register("odin3-ps").status == "active"  # registering again reopens it

    def test_instances_belong_to_their_tenant(self, make_log: LogFactory) -> None:
        a, b = make_log("tenant-a"), make_log("tenant-b")
        a.instances.register("shared-id", project="a")
        with pytest.raises(NotFound):
            b.instances.get("shared-id")
        with pytest.raises(NotFound):
            b.instances.heartbeat("shared-id")
        assert b.instances.list() == []
        b.instances.register("shared-id", project="b")
        assert a.instances.get("shared-id").project == "a" and b.instances.get("shared-id").project == "b"
        assert len(list(a.read_stream("instance:shared-id"))) == 1

    def test_heartbeat_events_are_coalesced_with_a_clock(self, make_log: LogFactory) -> None:
        log, clock = make_log(), _Clock()
        instances = Instances(log, heartbeat_event_every=60, clock=clock)
        instances.register("odin3-ps")
        for step in (1, 10, 20, 30):  # t = 1, 11, 31, 61: only the first and the one 60 s after it
            clock.advance(step)
            assert instances.heartbeat("odin3-ps", {"n": step}).last_heartbeat == clock.now
        beats = [e for e in log.read_stream("instance:odin3-ps") if e.type == "instance_heartbeat"]
        assert [e.data["n"] for e in beats] == [1, 30]
        assert instances.get("odin3-ps").last_heartbeat == clock.now  # every heartbeat counts

    def test_stale_once_per_lapse_then_recovered_with_a_clock(self, make_log: LogFactory) -> None:
        log, clock = make_log(), _Clock()
        instances = Instances(log, stale_after=300, clock=clock)
        instances.register("odin3-ps")
        instances.register("busy")
        instances.register("gone")
        instances.close("gone")
        clock.advance(200)
        instances.heartbeat("busy")
        assert instances.detect_stale() == []
        clock.advance(101)  # odin3-ps silent 301 s, busy 101 s
        assert [i.id for i in instances.detect_stale()] == ["odin3-ps"]
        assert instances.detect_stale() == [] and instances.detect_stale(now=clock.advance(60)) == []
        assert instances.get("odin3-ps").status == "stale" and instances.get("busy").status == "active"
        assert [i.id for i in instances.list(status="stale")] == ["odin3-ps"]
        back = instances.heartbeat("odin3-ps")
        assert back.status == "active"
        assert _types_of(log, "instance:odin3-ps") == [
            "instance_registered",
            "instance_stale",
            "instance_recovered",
            "instance_heartbeat",
        ]
        stale = list(log.read_stream("instance:odin3-ps"))[1]
        assert stale.data["last_heartbeat_at"] == "2026-03-01T09:00:00+00:00"
        assert stale.data["stale_after_seconds"] == 300
        clock.advance(301)  # a second lapse is a second stale event
        assert [i.id for i in instances.detect_stale()] == ["busy", "odin3-ps"]
        assert _types_of(log, "instance:odin3-ps")[-1] == "instance_stale"
        assert _types_of(log, "instance:gone") == ["instance_registered", "instance_closed"]

    def test_concurrent_detectors_record_a_lapse_once_with_a_clock(self, make_log: LogFactory) -> None:
        log, clock = make_log(), _Clock()
        for n in range(5):
            Instances(log, clock=clock).register(f"i-{n}")
        clock.advance(3600)
        detectors = [Instances(make_log(), stale_after=300, clock=clock) for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda d: d.detect_stale(), detectors))
        assert sorted(i.id for found in results for i in found) == [f"i-{n}" for n in range(5)]
        for n in range(5):
            assert _types_of(log, f"instance:i-{n}") == ["instance_registered", "instance_stale"]

    def test_concurrent_heartbeats_write_one_event_per_interval_with_a_clock(self, make_log: LogFactory) -> None:
        log, clock = make_log(), _Clock()
        Instances(log, clock=clock).register("odin3-ps")
        clock.advance(5)
        beaters = [Instances(make_log(), heartbeat_event_every=60, clock=clock) for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda b: b.heartbeat("odin3-ps"), beaters))
        assert _types_of(log, "instance:odin3-ps") == ["instance_registered", "instance_heartbeat"]

    def test_the_detector_of_all_tenants_writes_in_each_tenant_with_a_clock(self, make_log: LogFactory) -> None:
        clock = _Clock()
        a, b = make_log("tenant-a"), make_log("tenant-b")
        Instances(a, clock=clock).register("x")
        Instances(b, clock=clock).register("y")
        clock.advance(600)
        assert Instances(a, clock=clock).detect_stale() != []  # its own tenant only
        assert b.instances.get("y").status == "active"
        marked = Instances(a, clock=clock).detect_stale(all_tenants=True)
        assert [(i.tenant, i.id) for i in marked] == [("tenant-b", "y")]
        assert _types_of(b, "instance:y") == ["instance_registered", "instance_stale"]
        assert list(a.read_stream("instance:y")) == []
