"""What the SQL stores promise beyond the shared contract: the database itself refuses changes to events,
acknowledged events survive ``kill -9``, several processes can share a store, migrations race safely."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import meshlog
from meshlog import NewEvent, StoreUnavailable

SQL_STORES = ("sqlite", "postgres")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=SQL_STORES)
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    request.applymarker(pytest.mark.postgres)
    url: str = request.getfixturevalue("pg_url")
    return url


def _raw(url: str, statement: str) -> None:
    """Run one statement on the store's database directly, outside meshlog."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            conn.execute(statement)
            conn.commit()
        finally:
            conn.close()
        return
    dsn, schema = url.split("?schema=")
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        pg.execute(statement.encode())


@pytest.mark.parametrize("statement", ["UPDATE events SET type = 'changed'", "DELETE FROM events"])
def test_database_refuses_update_and_delete(sql_url: str, statement: str) -> None:
    with meshlog.connect(sql_url) as log:
        event = log.emit("llm.call", {"model": "m"})
        with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
            _raw(sql_url, statement)
        assert log.get(event.id) == event


def test_postgres_refuses_truncate(pg_url: str) -> None:
    with meshlog.connect(pg_url) as log:
        log.emit("x")
        with pytest.raises(psycopg.Error, match="append-only"):
            _raw(pg_url, "TRUNCATE events")
        assert log.head_position() > 0


_WRITER = textwrap.dedent(
    """
    import sys, meshlog
    log = meshlog.connect(sys.argv[1])
    i = 0
    while True:
        if i % 4 == 0:
            events = log.emit_batch([meshlog.NewEvent(type="batch", data={"i": i, "j": j}) for j in range(5)])
        else:
            events = [log.emit("single", {"i": i}, idempotency_key=f"{sys.argv[2]}-{i}")]
        for e in events:
            sys.stdout.write(e.id + "\\n")
        sys.stdout.flush()
        i += 1
    """
)


def test_sigkill_loses_no_acknowledged_event(sql_url: str) -> None:
    meshlog.connect(sql_url).close()  # migrate first, so the writer starts emitting at once
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, sql_url, "w"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acknowledged: list[str] = []
    deadline = time.monotonic() + 60
    while len(acknowledged) < 300 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acknowledged.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)
    acknowledged.extend(line.strip() for line in proc.stdout.read().splitlines() if len(line.strip()) == 36)
    proc.stdout.close()
    proc.wait()
    assert len(acknowledged) >= 300
    with meshlog.connect(sql_url) as log:
        stored: set[str] = set()
        page = log.query(limit=1000)
        stored.update(e.id for e in page)
        while page.has_more:
            page = log.query(cursor=page.next_cursor, limit=1000)
            stored.update(e.id for e in page)
        missing = [i for i in acknowledged if i not in stored]
        assert missing == []


_PROCESS_WRITER = textwrap.dedent(
    """
    import sys, meshlog
    log = meshlog.connect(sys.argv[1], migrate=False)
    for i in range(int(sys.argv[3])):
        if i % 7 == 0:
            log.emit_batch([meshlog.NewEvent(type="p", data={"w": sys.argv[2], "i": i, "j": j}) for j in range(3)])
        else:
            log.emit("p", {"w": sys.argv[2], "i": i}, stream=f"w{sys.argv[2]}")
    """
)


def test_no_skip_with_writers_in_separate_processes(sql_url: str) -> None:
    writers, per_writer = 8 if "postgresql" in sql_url else 4, 60
    log = meshlog.connect(sql_url)
    start = log.head_position()
    procs = [
        subprocess.Popen([sys.executable, "-c", _PROCESS_WRITER, sql_url, str(w), str(per_writer)])
        for w in range(writers)
    ]
    expected_total = writers * sum(3 if i % 7 == 0 else 1 for i in range(per_writer))
    received = []
    try:
        for event in log.subscribe(after_position=start, poll_interval=0.05):
            received.append(event.position)
            if len(received) == expected_total:
                break
    finally:
        for p in procs:
            assert p.wait(timeout=120) == 0
    assert received == sorted(set(received))
    everything: list[int] = []
    page = log.query(after_position=start, limit=1000)
    everything.extend(e.position for e in page)
    while page.has_more:
        page = log.query(cursor=page.next_cursor, limit=1000)
        everything.extend(e.position for e in page)
    assert received == everything
    for w in range(writers):
        versions = [e.stream_position for e in log.read_stream(f"w{w}")]
        assert versions == list(range(1, len(versions) + 1))
    log.close()


def test_sqlite_is_in_wal_mode_with_the_chosen_durability(tmp_path: Path) -> None:
    for setting, expected in (("", 2), ("?synchronous=normal", 1)):
        path = tmp_path / f"d{expected}.db"
        with meshlog.connect(f"sqlite:///{path}{setting}") as log:
            conn = log.store.sync_store._writer if hasattr(log.store, "sync_store") else log.store._writer  # type: ignore[attr-defined]
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == expected


def test_sqlite_positions_are_never_reused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    with meshlog.connect(url) as log:
        first = log.emit("a")
        conn = sqlite3.connect(tmp_path / "p.db")
        conn.execute("SELECT 1")
        conn.close()
        second = log.emit("b")
    assert second.position == first.position + 1
    with sqlite3.connect(tmp_path / "p.db") as conn:
        assert "AUTOINCREMENT" in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()[0]


@pytest.mark.postgres
def test_concurrent_migrations_are_safe(pg_url: str) -> None:
    code = "import sys, meshlog; meshlog.connect(sys.argv[1]).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code, pg_url]) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: meshlog.connect(pg_url).close(), range(4)))
    dsn, schema = pg_url.split("?schema=")
    with psycopg.connect(dsn) as pg:
        rows = pg.execute(sql.SQL("SELECT version FROM {}.schema_migrations").format(sql.Identifier(schema))).fetchall()
    shipped = sorted((ROOT / "src/meshlog/stores/sql/postgres").glob("*.sql"))
    assert sorted(rows) == [(int(path.name.split("_")[0]),) for path in shipped]
    assert len(shipped) >= 2


@pytest.mark.postgres
def test_partitions_are_created_ahead(pg_url: str) -> None:
    with meshlog.connect(pg_url) as log:
        log.emit("x")
    dsn, schema = pg_url.split("?schema=")
    with psycopg.connect(dsn) as pg:
        names = {
            r[0]
            for r in pg.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
                "WHERE p.relname = 'events' AND n.nspname = %s",
                (schema,),
            )
        }
        default_rows = pg.execute(
            sql.SQL("SELECT count(*) FROM {}.events_default").format(sql.Identifier(schema))
        ).fetchone()
    now = datetime.now(UTC)
    months = [(now.year + (now.month - 1 + k) // 12, (now.month - 1 + k) % 12 + 1) for k in range(4)]
    assert {f"events_{y:04d}_{m:02d}" for y, m in months} <= names
    assert "events_default" in names
    assert default_rows == (0,)


@pytest.mark.postgres
def test_unreachable_postgres_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable):
        meshlog.connect("postgresql://postgres@127.0.0.1:1/test?connect_timeout=1")


def test_many_threads_share_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    logs = [meshlog.connect(url) for _ in range(3)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: logs[i % 3].emit_batch([NewEvent(type="t", data={"i": i})] * 2), range(60)))
    assert len({e.position for e in logs[0].query(limit=1000)}) == 120
    for log in logs:
        log.close()


@pytest.fixture
def closed_log(tmp_path: Path) -> meshlog.EventLog:
    log = meshlog.connect(f"sqlite:///{tmp_path / 'c.db'}")
    log.close()
    return log


def test_closed_store_raises_store_error(closed_log: meshlog.EventLog) -> None:
    with pytest.raises(meshlog.StoreError):
        closed_log.emit("x")


def test_sqlite_upgrade_keeps_related_links(tmp_path: Path) -> None:
    from meshlog.stores import sqlite as sqlite_store

    path = tmp_path / "old.db"
    version, script = sqlite_store._migrations()[0]
    with sqlite3.connect(path) as conn:  # a database written by meshlog's first schema version
        conn.execute("CREATE TABLE meshlog_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        for statement in sqlite_store._statements(script):
            conn.execute(statement)
        conn.execute("INSERT INTO meshlog_migrations VALUES (?, 0)", (version,))
        ids = [str(uuid.uuid4()) for _ in range(3)]
        for position, (event_id, related) in enumerate(zip(ids, [None, None, json.dumps([ids[0]])], strict=True), 1):
            conn.execute(
                "INSERT INTO events (position, id, tenant, stream, stream_position, type, version, data, "
                "metadata, root_id, depth, related, recorded_at) "
                "VALUES (?, ?, 'default', 's', ?, 't', 1, '{}', '{}', ?, 0, ?, 0)",
                (position, event_id, position, event_id, related),
            )
    with meshlog.connect(f"sqlite:///{path}") as log:
        assert {n.event.id for n in log.graph(ids[0]).nodes} == {ids[0], ids[2]}


@pytest.mark.postgres
def test_postgres_combines_a_group_and_still_answers_each_request_alone(pg_url: str) -> None:
    from meshlog._validation import AppendRequest, prepare_request
    from meshlog.stores import open_store

    store = open_store(pg_url)
    store.migrate()
    log = meshlog.EventLog(store)
    existing = log.emit("seed", {}, stream="versioned", idempotency_key="seen")

    def request(*events: NewEvent, expected: object = meshlog.ANY) -> AppendRequest:
        return prepare_request("default", list(events), expected_version=expected, max_event_bytes=10**6)

    requests = [
        request(NewEvent(type="a", data={"i": 0}, stream="s")),
        request(NewEvent(type="a", data={"i": 1}, stream="s"), NewEvent(type="b", data={}, stream="t")),
        request(NewEvent(type="retry", data={}, stream="versioned", idempotency_key="seen")),  # a conflict
        request(NewEvent(type="a", data={"i": 2}, stream="s")),
        request(NewEvent(type="v", data={}, stream="versioned"), expected=1),
        request(NewEvent(type="k", data={}, idempotency_key="fresh")),
        request(NewEvent(type="k", data={}, idempotency_key="fresh")),  # the same key again: a duplicate
        request(NewEvent(type="orphan", data={}, parent_id=str(uuid.uuid4()))),  # fails alone
        request(NewEvent(type="a", data={"i": 3}, stream="s")),
    ]
    outcomes = store.append(requests)
    assert isinstance(outcomes[2], meshlog.IdempotencyConflict)
    assert isinstance(outcomes[7], meshlog.ValidationError)
    written = [o for i, o in enumerate(outcomes) if i not in (2, 7)]
    assert all(isinstance(o, list) for o in written)
    assert [e.data.get("i") for e in log.read_stream("s")] == [0, 1, 2, 3]
    assert [e.stream_position for e in log.read_stream("versioned")] == [1, 2]
    assert outcomes[5] == outcomes[6]
    positions = [e.position for o in written if isinstance(o, list) for e in o]
    assert (len(positions), len(set(positions))) == (8, 7)  # the duplicate answers with the original
    for outcome in written:
        assert isinstance(outcome, list)
        for event in outcome:
            assert log.get(event.id) == event
    assert existing.stream_position == 1
    store.close()
