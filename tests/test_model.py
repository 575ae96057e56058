"""A hypothesis state machine: random emits, batches, idempotent retries and version checks, checked against
a plain in-memory model of what every store must answer, on every store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from meshlog import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    EventLog,
    ExpectedVersion,
    IdempotencyConflict,
    NewEvent,
    RecordedEvent,
    WrongExpectedVersion,
)
from meshlog.store import Store
from meshlog.stores import open_store

STREAMS = st.sampled_from(["a", "b", "c"])
KEYS = st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3", "k4"]))
DATA = st.fixed_dictionaries({"n": st.integers(0, 3)})
EXPECTATIONS = st.one_of(
    st.just(ANY), st.just(NO_STREAM), st.just(STREAM_EXISTS), st.integers(0, 4), st.just("current")
)


def make_machine(store: Store, examples: int) -> type[RuleBasedStateMachine]:
    class EventLogMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            # A fresh tenant per run: streams and keys start empty, on one shared store.
            self.log = EventLog(store, tenant=f"t{uuid.uuid4().hex[:10]}")
            self.streams: dict[str, list[dict[str, Any]]] = {}
            self.keys: dict[str, tuple[str, str, dict[str, Any], RecordedEvent]] = {}
            self.last_position = 0

        def _expected(self, stream: str, expectation: object) -> ExpectedVersion:
            if expectation == "current":
                return len(self.streams.get(stream, []))
            assert isinstance(expectation, (int, type(ANY)))
            return expectation

        def _version_ok(self, stream: str, expected: ExpectedVersion) -> bool:
            actual = len(self.streams.get(stream, []))
            if expected is ANY:
                return True
            if expected is NO_STREAM:
                return actual == 0
            if expected is STREAM_EXISTS:
                return actual > 0
            return actual == expected

        @rule(stream=STREAMS, data=DATA, key=KEYS, expectation=EXPECTATIONS)
        def emit(self, stream: str, data: dict[str, Any], key: str | None, expectation: object) -> None:
            expected = self._expected(stream, expectation)
            known = self.keys.get(key) if key else None
            try:
                event = self.log.emit("e", data, stream=stream, idempotency_key=key, expected_version=expected)
            except IdempotencyConflict:
                assert known is not None and (known[0], known[1], known[2]) != ("e", stream, data)
                return
            except WrongExpectedVersion as exc:
                actual = exc.actual
                assert known is None and not self._version_ok(stream, expected)
                assert actual == len(self.streams.get(stream, []))
                return
            if known is not None:
                assert (known[0], known[1], known[2]) == ("e", stream, data)
                assert event == known[3]
                return
            assert self._version_ok(stream, expected)
            self.streams.setdefault(stream, []).append(data)
            assert event.stream_position == len(self.streams[stream])
            assert event.position > self.last_position
            self.last_position = event.position
            if key:
                self.keys[key] = ("e", stream, data, event)

        @rule(items=st.lists(st.tuples(STREAMS, DATA), min_size=1, max_size=4))
        def batch(self, items: list[tuple[str, dict[str, Any]]]) -> None:
            events = self.log.emit_batch([NewEvent(type="b", data=d, stream=s) for s, d in items])
            assert [e.position for e in events] == list(range(events[0].position, events[0].position + len(items)))
            assert events[0].position > self.last_position
            self.last_position = events[-1].position
            for (stream, data), event in zip(items, events, strict=True):
                self.streams.setdefault(stream, []).append(data)
                assert event.stream_position == len(self.streams[stream])

        @invariant()
        def streams_match_the_model(self) -> None:
            for stream, expected in self.streams.items():
                stored = list(self.log.read_stream(stream))
                assert [e.data for e in stored] == expected
                assert [e.stream_position for e in stored] == list(range(1, len(expected) + 1))
                assert self.log.stream_version(stream) == len(expected)

    EventLogMachine.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=15,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    return EventLogMachine


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    s.migrate()
    yield s
    s.close()


def test_random_appends_match_the_model(store: Store, store_url: str) -> None:
    examples = 25 if store_url.startswith("postgresql") else 60
    make_machine(store, examples).TestCase().runTest()
