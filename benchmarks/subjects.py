"""The stores under test, behind one small interface, each in scratch space of its own.

- :class:`MeshlogSubject`: meshlog's public API on PostgreSQL (a fresh schema) or SQLite (a file in a fresh
  temporary directory).
- :class:`EventsourcingSubject`: the ``eventsourcing`` library's ``PostgresApplicationRecorder`` (its own
  table in a fresh schema). A meshlog stream is an eventsourcing aggregate (an ``originator_id``): the writer,
  batch, read and replay workloads use one aggregate where meshlog uses one stream, and "the last 100 events of
  an agent" is the last 100 events of that agent's aggregate.

Both sides serialize the payload per event inside the timed code (meshlog takes a dict, eventsourcing's
recorder takes the serialized ``state`` bytes), and reads return what each API returns: meshlog's
``RecordedEvent`` objects with their decoded ``data``, eventsourcing's ``StoredEvent`` objects with ``state``
left as bytes.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import Protocol

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

import meshlog
from benchmarks.common import (
    AGENTS,
    EVENT_TYPE,
    PAYLOAD,
    analyze,
    create_schema,
    drop_schema,
    meshlog_pg_url,
    pg_params,
    scratch_schema,
)

MESHLOG_PG = "meshlog-postgres"
MESHLOG_SQLITE = "meshlog-sqlite"
EVENTSOURCING_PG = "eventsourcing-postgres"
COPY_PG = "copy-postgres"

_NAMESPACE = uuid.UUID("6d65736c-6f67-4265-8e63-68000000beef")


class Subject(Protocol):
    """What the workloads need from a store."""

    label: str

    def emit_one(self, writer: int) -> None:
        """Append one event to writer ``writer``'s stream, on its own."""
        ...

    def emit_batch(self, writer: int, count: int) -> None:
        """Append ``count`` events to writer ``writer``'s batch stream, atomically."""
        ...

    def fill_stream(self, stream: str, count: int, batch: int) -> None:
        """Append ``count`` events to ``stream`` (untimed setup)."""
        ...

    def read_stream(self, stream: str) -> int:
        """Read the whole stream; returns the number of events read."""
        ...

    def last_of_agent(self, agent: int, limit: int) -> int:
        """Fetch the last ``limit`` events of agent ``agent``, newest first; returns how many came back."""
        ...

    def replay(self, stream: str, to_version: int) -> int:
        """Fold the stream up to ``to_version`` into the sum of its prompt tokens; returns events folded."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Subject: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def _tokens(state: int, event: meshlog.RecordedEvent) -> int:
    return state + int(event.data["prompt_tokens"])


_REPLAY = meshlog.FunctionProjection(lambda: 0, _tokens)


class MeshlogSubject:
    """meshlog on PostgreSQL (``kind="postgres"``, in a fresh schema) or SQLite (in a fresh temp dir)."""

    def __init__(self, kind: str, name: str, dsn: str) -> None:
        self.kind = kind
        self._dsn = dsn
        self._tmp: Path | None = None
        self.schema: str | None = None
        if kind == "postgres":
            self.label = MESHLOG_PG
            self.schema = scratch_schema(name)
            self.url = meshlog_pg_url(dsn, self.schema)
        elif kind == "sqlite":
            self.label = MESHLOG_SQLITE
            self._tmp = Path(tempfile.mkdtemp(prefix=f"meshlog-bench-{name}-"))
            self.url = f"sqlite:///{self._tmp / 'bench.db'}"
        else:
            raise ValueError(f"unknown meshlog store kind {kind!r}")
        try:
            self.log = meshlog.connect(self.url)
        except BaseException:
            self._cleanup()
            raise

    def _cleanup(self) -> None:
        if self.schema is not None:
            drop_schema(self._dsn, self.schema)
            self.schema = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def analyze(self) -> None:
        """Refresh the planner's statistics (as autovacuum, or a periodic ANALYZE, would)."""
        if self.schema is not None:
            analyze(self._dsn, self.schema)
        elif self._tmp is not None:
            with closing(sqlite3.connect(self._tmp / "bench.db")) as conn:
                conn.execute("ANALYZE")

    def close(self) -> None:
        try:
            self.log.close()
        finally:
            self._cleanup()

    def __enter__(self) -> MeshlogSubject:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def emit_one(self, writer: int) -> None:
        self.log.emit(
            EVENT_TYPE, PAYLOAD, stream=f"writer-{writer}", agent_id=f"agent-{writer}", task_id=f"task-{writer}"
        )

    def emit_batch(self, writer: int, count: int) -> None:
        stream = f"batch-{writer}"
        self.log.emit_batch(
            [
                meshlog.NewEvent(
                    type=EVENT_TYPE, data=PAYLOAD, stream=stream, agent_id=f"agent-{i % AGENTS}", task_id=stream
                )
                for i in range(count)
            ]
        )

    def fill_stream(self, stream: str, count: int, batch: int) -> None:
        for start in range(0, count, batch):
            self.log.emit_batch(
                [
                    meshlog.NewEvent(type=EVENT_TYPE, data=PAYLOAD, stream=stream, agent_id="agent-0")
                    for _ in range(min(batch, count - start))
                ]
            )

    def read_stream(self, stream: str) -> int:
        count = 0
        for _ in self.log.read_stream(stream):
            count += 1
        return count

    def last_of_agent(self, agent: int, limit: int) -> int:
        return len(self.log.query(agent_id=f"agent-{agent}", order="desc", limit=limit))

    def replay(self, stream: str, to_version: int) -> int:
        return self.log.replay(stream, _REPLAY, to_version=to_version).events_replayed


class EventsourcingSubject:
    """eventsourcing's PostgreSQL application recorder, with its table in a fresh schema."""

    label = EVENTSOURCING_PG

    def __init__(self, name: str, dsn: str, *, pool_size: int = 8) -> None:
        self._dsn = dsn
        self.schema: str | None = scratch_schema(f"es_{name}")
        create_schema(dsn, self.schema)
        p = pg_params(dsn)
        try:
            self.datastore = PostgresDatastore(
                p.dbname, p.host, p.port, p.user, p.password, schema=self.schema, pool_size=pool_size
            )
            self.recorder = PostgresApplicationRecorder(self.datastore, events_table_name="stored_events")
            self.recorder.create_table()
        except BaseException:
            drop_schema(dsn, self.schema)
            raise
        self._versions: dict[uuid.UUID, int] = {}

    def close(self) -> None:
        try:
            self.datastore.close()
        finally:
            if self.schema is not None:
                drop_schema(self._dsn, self.schema)
                self.schema = None

    def __enter__(self) -> EventsourcingSubject:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @staticmethod
    def originator(key: str) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, key)

    def _next(self, originator: uuid.UUID, count: int) -> int:
        """Reserve ``count`` versions of ``originator``; returns the first (each writer owns its aggregates)."""
        first = self._versions.get(originator, 0) + 1
        self._versions[originator] = first + count - 1
        return first

    @staticmethod
    def _state() -> bytes:
        return json.dumps(PAYLOAD, separators=(",", ":")).encode("utf-8")

    def _insert(self, events: Sequence[StoredEvent]) -> None:
        self.recorder.insert_events(events)

    def emit_one(self, writer: int) -> None:
        originator = self.originator(f"writer-{writer}")
        version = self._next(originator, 1)
        self._insert([StoredEvent(originator, version, EVENT_TYPE, self._state())])

    def emit_batch(self, writer: int, count: int) -> None:
        originator = self.originator(f"batch-{writer}")
        first = self._next(originator, count)
        self._insert([StoredEvent(originator, first + i, EVENT_TYPE, self._state()) for i in range(count)])

    def fill_stream(self, stream: str, count: int, batch: int) -> None:
        originator = self.originator(stream)
        for start in range(0, count, batch):
            n = min(batch, count - start)
            first = self._next(originator, n)
            self._insert([StoredEvent(originator, first + i, EVENT_TYPE, self._state()) for i in range(n)])

    def fill_agents(self, count: int, batch: int, agents: int = AGENTS) -> None:
        """``count`` events spread round-robin over ``agents`` aggregates, ``batch`` per insert (untimed)."""
        originators = [self.originator(f"agent-{a}") for a in range(agents)]
        for start in range(0, count, batch):
            events = []
            for i in range(start, min(start + batch, count)):
                originator = originators[i % agents]
                events.append(StoredEvent(originator, self._next(originator, 1), EVENT_TYPE, self._state()))
            self._insert(events)

    def read_stream(self, stream: str) -> int:
        return len(self.recorder.select_events(self.originator(stream)))

    def read_stream_decoded(self, stream: str) -> int:
        """Read the aggregate and decode each ``state`` to a dict (what meshlog's read returns)."""
        return len([json.loads(e.state) for e in self.recorder.select_events(self.originator(stream))])

    def last_of_agent(self, agent: int, limit: int) -> int:
        return len(self.recorder.select_events(self.originator(f"agent-{agent}"), desc=True, limit=limit))

    def replay(self, stream: str, to_version: int) -> int:
        total = 0
        count = 0
        for event in self.recorder.select_events(self.originator(stream), lte=to_version):
            total += int(json.loads(event.state)["prompt_tokens"])
            count += 1
        return count
