"""Retention and archives on real SQLite files and a real PostgreSQL schema.

Events recorded long ago are made the only way there is: rows inserted with SQL (the append-only triggers allow
INSERT) into the events table, with their stream versions and idempotency keys, as the store itself would have
written them at that time. On PostgreSQL the old monthly partitions are created the same way.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

import meshlog
from meshlog.cli import main
from meshlog.errors import ConfigurationError, StoreError, WrongExpectedVersion
from meshlog.retention import (
    ArchiveError,
    Manifest,
    manifest_path,
    parse_keep,
    restore_archive,
    run_retention,
    verify_archive,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
KEEP = timedelta(days=90)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def month_start(value: datetime) -> datetime:
    return value.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def previous_month(value: datetime) -> datetime:
    return month_start(month_start(value) - timedelta(days=1))


def next_month(value: datetime) -> datetime:
    return month_start(month_start(value) + timedelta(days=32))


@dataclass(frozen=True)
class Months:
    """The months around the cutoff (now - 90 days): ``b`` and ``a`` wholly older, ``p`` holds the cutoff."""

    cutoff: datetime
    b: datetime
    a: datetime
    p: datetime

    @classmethod
    def now(cls) -> Months:
        cutoff = datetime.now(UTC) - KEEP
        p = month_start(cutoff)
        a = previous_month(p)
        return cls(cutoff, previous_month(a), a, p)

    def inside_window_in_p(self) -> datetime:
        """A moment in the cutoff's month that is still within the window."""
        return self.cutoff + (next_month(self.p) - self.cutoff) / 2


# -- SQLite ------------------------------------------------------------------------------------------------------
def us(value: datetime) -> int:
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def sqlite_old_event(
    path: Path,
    recorded_at: datetime,
    *,
    stream: str = "task:old",
    key: str | None = None,
    related: list[str] | None = None,
    tenant: str = "default",
) -> str:
    """Insert an event recorded at ``recorded_at`` as the store would have, advancing its stream's version."""
    event_id = str(uuid.uuid4())
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT version FROM streams WHERE tenant = ? AND stream = ?", (tenant, stream)).fetchone()
        version = (row[0] if row else 0) + 1
        cur = conn.execute(
            "INSERT INTO events (id, tenant, stream, stream_position, type, version, data, metadata, root_id, depth, "
            "related, idempotency_key, recorded_at) VALUES (?, ?, ?, ?, 'llm.call', 1, ?, '{}', ?, 0, ?, ?, ?)",
            (
                event_id,
                tenant,
                stream,
                version,
                json.dumps({"model": "gpt-4o", "prompt_tokens": 812}),
                event_id,
                json.dumps(related) if related else None,
                key,
                us(recorded_at),
            ),
        )
        position = cur.lastrowid
        for target in related or ():
            conn.execute(
                "INSERT INTO event_links (tenant, target_id, source_id) VALUES (?, ?, ?)", (tenant, target, event_id)
            )
        conn.execute(
            "INSERT INTO streams (tenant, stream, version, last_position, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, stream) DO UPDATE SET version = excluded.version, "
            "last_position = excluded.last_position, updated_at = excluded.updated_at",
            (tenant, stream, version, position, us(recorded_at), us(recorded_at)),
        )
    return event_id


@pytest.fixture
def sqlite_store(tmp_path: Path) -> tuple[str, Path, Months]:
    """A SQLite store with 5 events of stream task:old recorded 4 and 3 months before the window (2 with
    idempotency keys), one older than the window in the cutoff's month, and 3 recent events."""
    path = tmp_path / "events.db"
    url = f"sqlite:///{path}"
    months = Months.now()
    meshlog.connect(url).close()
    first = sqlite_old_event(path, months.b + timedelta(hours=1))
    sqlite_old_event(path, months.b + timedelta(days=3), related=[first])
    sqlite_old_event(path, months.b + timedelta(days=9))
    sqlite_old_event(path, months.a + timedelta(days=2), key="old-key-1")
    sqlite_old_event(path, months.a + timedelta(days=20), key="old-key-2")
    sqlite_old_event(path, months.cutoff - timedelta(hours=1), stream="task:edge")
    with meshlog.connect(url) as log:
        for i in range(3):
            log.emit("task.progress", {"step": i}, task_id="new", idempotency_key=f"new-key-{i}")
    return url, path, months


def sqlite_count(path: Path, table: str = "events") -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_sqlite_retention_archives_then_deletes_old_events(
    sqlite_store: tuple[str, Path, Months], tmp_path: Path
) -> None:
    url, path, months = sqlite_store
    archive_dir = tmp_path / "archive"
    report = run_retention(url, KEEP, archive_dir=archive_dir)

    assert report.events_removed == 6
    assert report.keys_expired == 2
    assert [r.chunk.count for r in report.chunks] == [3, 2, 1]
    assert all(r.removed and r.archive is not None and r.archive.exists() for r in report.chunks)
    assert report.reclaimed_bytes is not None and report.reclaimed_bytes >= 0
    assert sqlite_count(path) == 3
    assert sqlite_count(path, "event_links") == 0

    manifests = [verify_archive(r.archive) for r in report.chunks if r.archive is not None]
    assert [m.count for m in manifests] == [3, 2, 1]
    assert manifests[0].lower == months.b and manifests[-1].upper == report.cutoff
    assert all(m.schema_version >= 5 and m.store == "sqlite" and len(m.sha256) == 64 for m in manifests)

    with meshlog.connect(url) as log:
        # The stream continues at its version although its events are gone.
        assert log.stream_version("task:old") == 5
        with pytest.raises(WrongExpectedVersion):
            log.emit("llm.call", {}, stream="task:old", expected_version=0)
        nxt = log.emit("llm.call", {}, stream="task:old", expected_version=5)
        assert nxt.stream_position == 6
        assert [e.stream_position for e in log.read_stream("task:old")] == [6]
        # An expired key is free again: the same key writes a new event.
        again = log.emit("llm.call", {"model": "other"}, stream="task:x", idempotency_key="old-key-1")
        assert again.position > nxt.position
        # A recent key still deduplicates.
        first = log.query(task_id="new", limit=1).events[0]
        assert log.emit("task.progress", {"step": 0}, task_id="new", idempotency_key="new-key-0").id == first.id

    # The append-only trigger is back.
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM events")


def test_sqlite_dry_run_changes_nothing(sqlite_store: tuple[str, Path, Months], tmp_path: Path) -> None:
    url, path, _ = sqlite_store
    archive_dir = tmp_path / "archive"
    report = run_retention(url, KEEP, archive_dir=archive_dir, dry_run=True)
    assert report.dry_run
    assert [r.chunk.count for r in report.chunks] == [3, 2, 1]
    assert report.keys_expired == 2
    assert not any(r.removed for r in report.chunks)
    assert sqlite_count(path) == 9
    assert not archive_dir.exists()


def test_sqlite_without_archive_and_nothing_to_do(sqlite_store: tuple[str, Path, Months]) -> None:
    url, path, _ = sqlite_store
    report = run_retention(url, KEEP)
    assert report.events_removed == 6
    assert all(r.archive is None for r in report.chunks)
    again = run_retention(url, KEEP)
    assert again.chunks == [] and again.reclaimed_bytes is None
    assert sqlite_count(path) == 3


def test_a_failed_archive_write_removes_nothing(sqlite_store: tuple[str, Path, Months], tmp_path: Path) -> None:
    url, path, months = sqlite_store
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    # The first archive's partial file is the kernel's full device: writing it fails with ENOSPC.
    name = f"events.events_{months.b:%Y%m%dT%H%M%SZ}_{months.a:%Y%m%dT%H%M%SZ}.jsonl.gz.partial"
    (archive_dir / name).symlink_to("/dev/full")
    with pytest.raises(ArchiveError, match="cannot write the archive"):
        run_retention(url, KEEP, archive_dir=archive_dir)
    assert sqlite_count(path) == 9
    assert list(archive_dir.iterdir()) == []

    file = tmp_path / "a-file"
    file.write_text("")
    with pytest.raises(ConfigurationError, match="not a directory"):
        run_retention(url, KEEP, archive_dir=file)
    assert sqlite_count(path) == 9


def test_verify_detects_a_damaged_archive(sqlite_store: tuple[str, Path, Months], tmp_path: Path) -> None:
    url, _, _ = sqlite_store
    report = run_retention(url, KEEP, archive_dir=tmp_path / "archive")
    archive = report.chunks[0].archive
    assert archive is not None
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="checksum"):
        verify_archive(archive)
    with pytest.raises(ArchiveError, match="checksum"):
        restore_archive(archive, url)

    # A file that matches its checksum but lies about its count is refused too.
    second = report.chunks[1].archive
    assert second is not None
    mpath = manifest_path(second)
    manifest = json.loads(mpath.read_text())
    manifest["count"] += 1
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ArchiveError, match="holds 2 events, its manifest says 3"):
        verify_archive(second)


def test_jsonl_archive_content(sqlite_store: tuple[str, Path, Months], tmp_path: Path) -> None:
    url, _, months = sqlite_store
    report = run_retention(url, KEEP, archive_dir=tmp_path / "archive")
    archive = report.chunks[1].archive
    assert archive is not None and archive.name.endswith(".jsonl.gz")
    with gzip.open(archive, "rt", encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    assert [line["idempotency_key"] for line in lines] == ["old-key-1", "old-key-2"]
    assert lines[0]["data"] == {"model": "gpt-4o", "prompt_tokens": 812}
    assert lines[0]["stream"] == "task:old" and lines[0]["stream_position"] == 4
    assert datetime.fromisoformat(lines[0]["recorded_at"]) == months.a + timedelta(days=2)
    manifest = json.loads(manifest_path(archive).read_text())
    assert manifest["format"] == "meshlog-archive" and manifest["count"] == 2
    assert Manifest.from_dict(manifest).file == archive.name


@pytest.mark.parametrize("encoding", ["jsonl.gz", "parquet"])
def test_sqlite_archive_restores_into_archived_events(
    sqlite_store: tuple[str, Path, Months], tmp_path: Path, encoding: Any
) -> None:
    url, path, _ = sqlite_store
    report = run_retention(url, KEEP, archive_dir=tmp_path / "archive", encoding=encoding)
    archive = report.chunks[0].archive
    assert archive is not None and archive.name.endswith(encoding)
    assert verify_archive(archive).encoding == encoding
    restored = restore_archive(archive, url)
    assert (restored.count, restored.inserted) == (3, 3)
    assert restore_archive(manifest_path(archive), url).inserted == 0
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT stream, stream_position, data, related, archive FROM archived_events ORDER BY position"
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("task:old", 1), ("task:old", 2), ("task:old", 3)]
    assert json.loads(rows[0][2]) == {"model": "gpt-4o", "prompt_tokens": 812}
    assert rows[1][3] is not None and len(json.loads(rows[1][3])) == 1
    assert rows[0][4] == archive.name


def test_parse_keep() -> None:
    assert parse_keep("90d") == timedelta(days=90)
    assert parse_keep("12w") == timedelta(weeks=12)
    assert parse_keep("36h") == timedelta(hours=36)
    for bad in ("", "0d", "90", "3m", "-1d", "d"):
        with pytest.raises(ConfigurationError):
            parse_keep(bad)


def test_retention_refuses_other_stores() -> None:
    with pytest.raises(ConfigurationError, match="sqlite:// and postgresql://"):
        run_retention("memory://", KEEP)


# -- the CLI ----------------------------------------------------------------------------------------------------
def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_retention_and_restore(sqlite_store: tuple[str, Path, Months], tmp_path: Path) -> None:
    url, path, _ = sqlite_store
    archive_dir = tmp_path / "archive"
    dry = cli("--url", url, "retention", "--keep", "90d", "--dry-run", "--archive", str(archive_dir))
    assert dry.exit_code == 0, dry.output
    assert "would remove 3 chunks: 6 events; would expire 2 idempotency keys" in dry.stdout
    assert "dry run: nothing changed" in dry.stdout
    assert sqlite_count(path) == 9

    done = cli("retention", "--url", url, "--keep", "90d", "--archive", str(archive_dir), "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["events_removed"] == 6 and result["keys_expired"] == 2 and not result["dry_run"]
    first = result["chunks"][0]["archive"]

    verified = cli("archive", "verify", first)
    assert verified.exit_code == 0 and "3 events" in verified.stdout and "verified" in verified.stdout
    restored = cli("--url", url, "archive", "restore", first, "--json")
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout) == {"archive": first, "count": 3, "inserted": 3}


def test_cli_rejects_a_bad_window(sqlite_store: tuple[str, Path, Months]) -> None:
    url, path, _ = sqlite_store
    result = cli("--url", url, "retention", "--keep", "3 months")
    assert result.exit_code == 2
    assert "90d, 12w or 36h" in result.output
    assert sqlite_count(path) == 9


def test_cli_reports_a_damaged_archive(sqlite_store: tuple[str, Path, Months], tmp_path: Path) -> None:
    url, _, _ = sqlite_store
    report = run_retention(url, KEEP, archive_dir=tmp_path / "archive")
    archive = report.chunks[0].archive
    assert archive is not None
    archive.write_bytes(archive.read_bytes() + b"x")
    result = cli("archive", "verify", str(archive))
    assert result.exit_code == 1
    assert "ArchiveError" in result.output and "checksum" in result.output


@pytest.mark.parametrize("words", [("retention",), ("archive",), ("archive", "verify"), ("archive", "restore")])
def test_help_is_in_the_docs_and_ends_with_examples(words: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*words, "--help"], prog_name="meshlog", terminal_width=80)
    assert result.exit_code == 0
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    examples = lines[lines.index("Examples:") + 1 :]
    assert examples and all(line.startswith("meshlog " + " ".join(words)) for line in examples)
    assert result.stdout.strip() in DOCS.read_text(encoding="utf-8"), f"docs/cli.md lacks {' '.join(words)} --help"


# -- PostgreSQL --------------------------------------------------------------------------------------------------
class Pg:
    """Direct SQL on a test schema, as the superuser (old partitions and rows as the store would have made)."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.name = schema
        self.schema = sql.Identifier(schema)

    def t(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(self.schema, sql.Identifier(name))

    def partition(self, month: datetime) -> None:
        self.conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                self.t(f"events_{month:%Y_%m}"), self.t("events"), sql.Literal(month), sql.Literal(next_month(month))
            )
        )

    def exists(self, name: str) -> bool:
        row = self.conn.execute("SELECT to_regclass(%s)", (f"{self.name}.{name}",)).fetchone()
        return row is not None and row[0] is not None

    def scalar(self, query: str, *params: object) -> Any:
        row = self.conn.execute(sql.SQL(query).format(s=self.schema), params).fetchone()
        assert row is not None
        return row[0]

    def old_event(self, recorded_at: datetime, *, stream: str = "task:old", key: str | None = None) -> str:
        event_id = str(uuid.uuid4())
        with self.conn.transaction():
            version = self.scalar("SELECT coalesce(max(version), 0) + 1 FROM {s}.streams WHERE stream = %s", stream)
            position = self.scalar("SELECT nextval(%s)", f"{self.name}.events_position")
            self.conn.execute(
                sql.SQL(
                    "INSERT INTO {s}.events (position, recorded_at, id, tenant, stream, stream_position, type, "
                    "version, data, metadata, root_id, depth, idempotency_key) VALUES "
                    "(%s, %s, %s, 'default', %s, %s, 'llm.call', 1, %s, '{{}}', %s, 0, %s)"
                ).format(s=self.schema),
                (position, recorded_at, event_id, stream, version, json.dumps({"model": "gpt-4o"}), event_id, key),
            )
            self.conn.execute(
                sql.SQL(
                    "INSERT INTO {s}.streams (tenant, stream, version, last_position, created_at, updated_at) "
                    "VALUES ('default', %s, %s, %s, %s, %s) ON CONFLICT (tenant, stream) DO UPDATE SET "
                    "version = excluded.version, last_position = excluded.last_position"
                ).format(s=self.schema),
                (stream, version, position, recorded_at, recorded_at),
            )
            if key is not None:
                self.conn.execute(
                    sql.SQL(
                        "INSERT INTO {s}.idempotency_keys (tenant, key, event_id, position, recorded_at) "
                        "VALUES ('default', %s, %s, %s, %s)"
                    ).format(s=self.schema),
                    (key, event_id, position, recorded_at),
                )
        return event_id


@pytest.fixture
def pg_store(pg_url: str, pg_dsn: str, pg_schema: str) -> Iterator[tuple[str, Pg, Months]]:
    """Like ``sqlite_store``: partitions b (3 events) and a (2, with keys) wholly older than the window; the
    cutoff's partition p with one event older and one newer than the cutoff; 3 recent events."""
    months = Months.now()
    meshlog.connect(pg_url).close()
    pg = Pg(pg_dsn, pg_schema)
    try:
        for month in (months.b, months.a, months.p):
            pg.partition(month)
        pg.old_event(months.b + timedelta(hours=1))
        pg.old_event(months.b + timedelta(days=3))
        pg.old_event(months.b + timedelta(days=9))
        pg.old_event(months.a + timedelta(days=2), key="old-key-1")
        pg.old_event(months.a + timedelta(days=20), key="old-key-2")
        pg.old_event(months.p + timedelta(seconds=1), stream="task:edge", key="edge-key")
        pg.old_event(months.inside_window_in_p(), stream="task:edge")
        with meshlog.connect(pg_url) as log:
            for i in range(3):
                log.emit("task.progress", {"step": i}, task_id="new", idempotency_key=f"new-key-{i}")
        yield pg_url, pg, months
    finally:
        pg.conn.close()


def test_pg_retention_archives_and_drops_exactly_the_expired_partitions(
    pg_store: tuple[str, Pg, Months], tmp_path: Path
) -> None:
    url, pg, months = pg_store
    b, a, p = (f"events_{m:%Y_%m}" for m in (months.b, months.a, months.p))
    report = run_retention(url, KEEP, archive_dir=tmp_path / "archive")

    assert [r.chunk.name for r in report.chunks] == [b, a]
    assert [r.chunk.count for r in report.chunks] == [3, 2]
    assert all(r.removed for r in report.chunks)
    assert [c.name for c in report.kept] == [p]
    assert report.keys_expired == 2
    assert not pg.exists(b) and not pg.exists(a)
    assert pg.exists(p) and pg.exists("events_default")
    assert pg.scalar("SELECT count(*) FROM {s}.events") == 5
    assert pg.scalar("SELECT count(*) FROM {s}.idempotency_keys WHERE key LIKE 'old-key-%%'") == 0
    assert pg.scalar("SELECT count(*) FROM {s}.idempotency_keys WHERE key = 'edge-key'") == 1

    for r in report.chunks:
        assert r.archive is not None
        manifest = verify_archive(r.archive)
        assert (manifest.store, manifest.source, manifest.name) == ("postgres", pg.name, r.chunk.name)
        assert manifest.lower == r.chunk.lower and manifest.upper == r.chunk.upper
        assert manifest.schema_version >= 5

    with meshlog.connect(url) as log:
        assert log.stream_version("task:old") == 5
        nxt = log.emit("llm.call", {}, stream="task:old", expected_version=5)
        assert nxt.stream_position == 6
        assert [e.stream_position for e in log.read_stream("task:old")] == [6]
        again = log.emit("llm.call", {"model": "other"}, stream="task:x", idempotency_key="old-key-1")
        assert again.stream_position == 1 and again.position > nxt.position
        first = log.query(task_id="new", limit=1).events[0]
        assert log.emit("task.progress", {"step": 0}, task_id="new", idempotency_key="new-key-0").id == first.id
        assert log.query(stream="task:edge").events[0].idempotency_key == "edge-key"

    # Nothing else is expired on a second run, and the triggers still refuse DELETE.
    assert run_retention(url, KEEP).chunks == []
    with pytest.raises(psycopg.errors.RestrictViolation):
        pg.conn.execute(sql.SQL("DELETE FROM {s}.events").format(s=pg.schema))


def test_pg_archive_restores_into_a_queryable_table(
    pg_store: tuple[str, Pg, Months], pg_schema: str, tmp_path: Path
) -> None:
    url, pg, _ = pg_store
    report = run_retention(url, KEEP, archive_dir=tmp_path / "archive")
    archive = report.chunks[1].archive
    assert archive is not None
    restored = restore_archive(archive, url)
    assert (restored.count, restored.inserted) == (2, 2)
    assert restore_archive(archive, url).inserted == 0
    rows = pg.conn.execute(
        sql.SQL(
            "SELECT stream, stream_position, idempotency_key, data ->> 'model', archive FROM {s}.archived_events "
            "ORDER BY position"
        ).format(s=pg.schema)
    ).fetchall()
    assert rows == [
        ("task:old", 4, "old-key-1", "gpt-4o", archive.name),
        ("task:old", 5, "old-key-2", "gpt-4o", archive.name),
    ]
    # The archive table has the same tenant isolation as the others.
    assert pg.scalar(
        "SELECT relforcerowsecurity FROM pg_class WHERE oid = %s::regclass", f"{pg_schema}.archived_events"
    )


def test_pg_parquet_archive(pg_store: tuple[str, Pg, Months], tmp_path: Path) -> None:
    url, pg, _ = pg_store
    report = run_retention(url, KEEP, archive_dir=tmp_path / "archive", encoding="parquet")
    archives = [r.archive for r in report.chunks]
    assert all(a is not None and a.name.endswith(".parquet") for a in archives)
    assert archives[0] is not None
    assert restore_archive(archives[0], url).inserted == 3
    assert pg.scalar("SELECT count(*) FROM {s}.archived_events WHERE stream = 'task:old'") == 3


def test_pg_dry_run_changes_nothing(pg_store: tuple[str, Pg, Months], tmp_path: Path) -> None:
    url, pg, months = pg_store
    report = run_retention(url, KEEP, archive_dir=tmp_path / "archive", dry_run=True)
    assert [r.chunk.count for r in report.chunks] == [3, 2]
    assert report.keys_expired == 2 and not any(r.removed for r in report.chunks)
    assert all(r.chunk.size_bytes for r in report.chunks)
    assert pg.exists(f"events_{months.b:%Y_%m}") and pg.exists(f"events_{months.a:%Y_%m}")
    assert pg.scalar("SELECT count(*) FROM {s}.events") == 10
    assert pg.scalar("SELECT count(*) FROM {s}.idempotency_keys") == 6
    assert not (tmp_path / "archive").exists()


def test_pg_failed_archive_write_leaves_the_partition(pg_store: tuple[str, Pg, Months], tmp_path: Path) -> None:
    url, pg, months = pg_store
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    name = f"events_{months.a:%Y_%m}"
    (archive_dir / f"{pg.name}.{name}.jsonl.gz.partial").symlink_to("/dev/full")
    with pytest.raises(ArchiveError, match="cannot write the archive"):
        run_retention(url, KEEP, archive_dir=archive_dir)
    # The first partition was archived and dropped; the second failed and stays whole, with its keys.
    assert not pg.exists(f"events_{months.b:%Y_%m}")
    assert pg.exists(name)
    assert pg.scalar("SELECT count(*) FROM {s}.events") == 7
    assert pg.scalar("SELECT count(*) FROM {s}.idempotency_keys WHERE key LIKE 'old-key-%%'") == 2
    # The partial file is gone; the first partition's archive and manifest are complete.
    assert sorted(p.name for p in archive_dir.iterdir()) == [
        f"{pg.name}.events_{months.b:%Y_%m}.jsonl.gz",
        f"{pg.name}.events_{months.b:%Y_%m}.manifest.json",
    ]
    report = run_retention(url, KEEP, archive_dir=archive_dir)
    assert [r.chunk.name for r in report.chunks] == [name]


def test_pg_retention_as_the_owner_under_row_level_security(
    pg_store: tuple[str, Pg, Months], pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """Run as an ordinary role that owns the schema: FORCE ROW LEVEL SECURITY binds it, so retention sees and
    expires every tenant's rows only because it says meshlog.tenant = '*'."""
    url, pg, _ = pg_store
    role = f"meshlog_owner_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(role)
    pg.conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS").format(ident))
    try:
        pg.conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(pg.schema, ident))
        owned = pg.conn.execute(
            "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'S')",
            (pg_schema,),
        ).fetchall()
        for (name,) in owned:
            pg.conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(pg.t(name), ident))
        functions = pg.conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
            "WHERE n.nspname = %s",
            (pg_schema,),
        ).fetchall()
        for (signature,) in functions:
            pg.conn.execute(sql.SQL("ALTER FUNCTION " + signature + " OWNER TO {}").format(ident))
        forced = pg.scalar("SELECT relforcerowsecurity FROM pg_class WHERE oid = %s::regclass", f"{pg_schema}.events")
        if not forced:
            pytest.skip("this schema has no row-level security yet")
        parts = urlsplit(url)
        role_url = parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}").geturl()
        with psycopg.connect(pg_dsn.replace(parts.netloc, f"{role}@{parts.hostname}:{parts.port or 5432}")) as c:
            assert c.execute("SELECT current_user").fetchone() == (role,)
        report = run_retention(role_url, KEEP, archive_dir=tmp_path / "archive")
        assert [r.chunk.count for r in report.chunks] == [3, 2]
        assert report.keys_expired == 2
        assert pg.scalar("SELECT count(*) FROM {s}.idempotency_keys WHERE key LIKE 'old-key-%%'") == 0
        archive = report.chunks[0].archive
        assert archive is not None
        assert restore_archive(archive, role_url).inserted == 3
    finally:
        pg.conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO CURRENT_USER").format(pg.schema))
        pg.conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(ident))
        pg.conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        pg.conn.execute(sql.SQL("DROP ROLE {}").format(ident))


def test_pg_one_retention_run_at_a_time(pg_store: tuple[str, Pg, Months], pg_dsn: str) -> None:
    url, pg, _ = pg_store
    with psycopg.connect(pg_dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(1835365227, hashtext(%s))", (pg.name,))
        with pytest.raises(StoreError, match="another retention run"):
            run_retention(url, KEEP)
        # A dry run takes no lock.
        assert len(run_retention(url, KEEP, dry_run=True).chunks) == 2
