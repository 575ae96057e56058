"""Retention: archive events older than a window to files, verify the files, then remove the events.

``run_retention(url, keep=timedelta(days=90), archive_dir=...)`` (the ``meshlog retention`` command) works in
chunks:

- **PostgreSQL**: a chunk is a monthly partition of ``events`` (``events_YYYY_MM``). Only partitions *wholly*
  older than the window expire (their upper bound is at or before ``now - keep``); a partition that still holds
  one event inside the window is kept whole. An expired partition is archived, the archive is read back and
  checked against the partition (count and sum of positions) and against its checksum, and only then is the
  partition detached and dropped, in one transaction with its idempotency keys. Dropping a partition is the
  only way events leave PostgreSQL: the append-only triggers refuse UPDATE, DELETE and TRUNCATE.
- **SQLite**: a chunk is the events of one calendar month recorded before ``now - keep`` (the last one cut at
  that instant). Each is archived and checked the same way, then deleted in one transaction that lifts the
  append-only trigger for that statement only; space is reclaimed with VACUUM at the end.

Stream versions survive: the ``streams`` table keeps each stream's version, so a stream whose old events are
gone continues at its version (the next event of a stream at version 12 is number 13, and ``expected_version=12``
still holds). Idempotency keys expire with their events.

Archives are JSON Lines compressed with gzip (``encoding="jsonl.gz"``, the default) or Parquet
(``encoding="parquet"``, needs the ``archive`` extra: pyarrow). Beside each archive file lies a manifest
(``<name>.manifest.json``) with the range, the count, the positions, the SHA-256 of the file and the schema
version. ``restore_archive(path, url)`` (``meshlog archive restore``) loads a file into the store's
``archived_events`` table to be queried with SQL; ``verify_archive(path)`` checks a file against its manifest.

``run_periodically(url, keep, ...)`` runs retention on a schedule inside an asyncio program such as the server
(off unless something calls it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import importlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final, Literal, Protocol

from meshlog.errors import ConfigurationError, MeshlogError, StoreError

__all__ = [
    "ARCHIVE_FORMAT",
    "ArchiveError",
    "Chunk",
    "ChunkResult",
    "Manifest",
    "RestoreReport",
    "RetentionReport",
    "manifest_path",
    "open_backend",
    "parse_keep",
    "restore_archive",
    "run_periodically",
    "run_retention",
    "verify_archive",
    "write_archive",
]

logger = logging.getLogger("meshlog")

ARCHIVE_FORMAT: Final = "meshlog-archive"
"""The ``format`` of every manifest."""
FORMAT_VERSION: Final = 1
Encoding = Literal["jsonl.gz", "parquet"]
ENCODINGS: Final[tuple[Encoding, ...]] = ("jsonl.gz", "parquet")

_KEEP_RE: Final = re.compile(r"\s*(\d+)\s*([hdw])\s*")
_KEEP_UNITS: Final = {"h": "hours", "d": "days", "w": "weeks"}
_PROGRESS_EVERY: Final = 2000

Row = tuple[Any, ...]
"""One event as the backends read and write it, in ``EVENT_COLUMNS`` order: position, id, tenant, stream,
stream_position, type, version, data (JSON text), metadata (JSON text), trace_id, task_id, agent_id, parent_id,
root_id, depth, related (list of ids or None), idempotency_key, occurred_at (datetime or None), recorded_at."""

Progress = Callable[[str, int, int], None]
"""Called as ``progress(description, done, total)`` while an archive is written or restored."""


class ArchiveError(StoreError):
    """An archive could not be written, read or verified; nothing was removed."""


def parse_keep(text: str) -> timedelta:
    """A retention window such as ``90d``, ``12w`` or ``36h``. Raises ConfigurationError."""
    match = _KEEP_RE.fullmatch(text)
    if not match or int(match.group(1)) <= 0:
        raise ConfigurationError(f"a retention window looks like 90d, 12w or 36h (a positive number), got {text!r}")
    return timedelta(**{_KEEP_UNITS[match.group(2)]: int(match.group(1))})


# -- what retention works on -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Chunk:
    """Events removed together: a PostgreSQL partition, or an SQLite month (cut at the window)."""

    name: str
    lower: datetime
    """Inclusive lower bound of ``recorded_at``."""
    upper: datetime
    """Exclusive upper bound of ``recorded_at``."""
    count: int
    position_sum: int
    size_bytes: int | None = None
    """Space it takes in the database (PostgreSQL: the partition with its indexes), when known."""


@dataclass(frozen=True, slots=True)
class Plan:
    expired: list[Chunk]
    kept: list[Chunk]
    """Partitions that hold events older than the window but also newer ones (PostgreSQL)."""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ChunkResult:
    chunk: Chunk
    archive: Path | None
    removed: bool
    keys_expired: int


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What a retention run did (or, with ``dry_run``, would do)."""

    store: str
    cutoff: datetime
    dry_run: bool
    chunks: list[ChunkResult]
    kept: list[Chunk]
    notes: list[str]
    reclaimed_bytes: int | None = None
    """SQLite: how much smaller the file got after VACUUM."""

    @property
    def events_removed(self) -> int:
        return sum(r.chunk.count for r in self.chunks if r.removed)

    @property
    def keys_expired(self) -> int:
        return sum(r.keys_expired for r in self.chunks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "cutoff": self.cutoff.isoformat(),
            "dry_run": self.dry_run,
            "chunks": [
                {
                    "name": r.chunk.name,
                    "from": r.chunk.lower.isoformat(),
                    "to": r.chunk.upper.isoformat(),
                    "events": r.chunk.count,
                    "bytes": r.chunk.size_bytes,
                    "archive": None if r.archive is None else str(r.archive),
                    "removed": r.removed,
                    "keys_expired": r.keys_expired,
                }
                for r in self.chunks
            ],
            "kept": [
                {"name": c.name, "from": c.lower.isoformat(), "to": c.upper.isoformat(), "events": c.count}
                for c in self.kept
            ],
            "events_removed": self.events_removed,
            "keys_expired": self.keys_expired,
            "reclaimed_bytes": self.reclaimed_bytes,
            "notes": self.notes,
        }


@dataclass(frozen=True, slots=True)
class RestoreReport:
    archive: Path
    count: int
    inserted: int
    """Rows added to ``archived_events`` (fewer than ``count`` when the file was restored before)."""

    def to_dict(self) -> dict[str, Any]:
        return {"archive": str(self.archive), "count": self.count, "inserted": self.inserted}


class Backend(Protocol):
    """A store's side of retention (``meshlog.stores.postgres_retention``, ``meshlog.stores.sqlite_retention``)."""

    kind: str
    source: str
    """Names the archives: the PostgreSQL schema, or the SQLite file's stem."""

    def lock(self) -> None:
        """Keep other retention runs out until :meth:`close` (or fail at once when one is running)."""
        ...

    def schema_version(self) -> int: ...

    def plan(self, cutoff: datetime) -> Plan: ...

    def rows(self, chunk: Chunk) -> Iterator[Row]: ...

    def expiring_keys(self, chunk: Chunk) -> int: ...

    def remove(self, chunk: Chunk) -> int:
        """Remove the chunk's events (and their idempotency keys) in one transaction, after checking that its
        count and sum of positions are still ``chunk.count`` and ``chunk.position_sum``; returns the number of
        idempotency keys expired. Raises StoreError and removes nothing when the check fails."""
        ...

    def finish(self) -> int | None: ...

    def restore(self, rows: Iterable[Row], archive: str) -> int: ...

    def close(self) -> None: ...


def open_backend(url: str) -> Backend:
    """The retention backend for a store URL (PostgreSQL or SQLite)."""
    from meshlog.stores import parse_url

    parsed = parse_url(url)
    if parsed.kind == "sqlite":
        from meshlog.stores.sqlite_retention import SqliteRetention

        return SqliteRetention(parsed.target, busy_timeout=float(parsed.options.get("busy_timeout", 30.0)))
    if parsed.kind == "postgres":
        try:
            from meshlog.stores.postgres_retention import PostgresRetention
        except ImportError as exc:
            raise ConfigurationError(
                f"PostgreSQL stores need psycopg 3: pip install 'meshlog[postgres]' ({exc})"
            ) from exc
        return PostgresRetention(parsed.target, schema=parsed.options.get("schema", "meshlog"))
    raise ConfigurationError(f"retention works on sqlite:// and postgresql:// stores, not {parsed.kind}:// ones")


# -- manifests ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Manifest:
    """What an archive file holds, written beside it as ``<name>.manifest.json``."""

    store: str
    source: str
    name: str
    file: str
    encoding: Encoding
    schema_version: int
    lower: datetime
    upper: datetime
    count: int
    position_sum: int
    first_position: int | None
    last_position: int | None
    first_recorded_at: datetime | None
    last_recorded_at: datetime | None
    sha256: str
    size_bytes: int
    created_at: datetime
    meshlog_version: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ARCHIVE_FORMAT,
            "format_version": FORMAT_VERSION,
            "meshlog_version": self.meshlog_version,
            "schema_version": self.schema_version,
            "store": self.store,
            "source": self.source,
            "name": self.name,
            "file": self.file,
            "encoding": self.encoding,
            "range": {"from": self.lower.isoformat(), "to": self.upper.isoformat()},
            "count": self.count,
            "position_sum": self.position_sum,
            "positions": {"first": self.first_position, "last": self.last_position},
            "recorded_at": {"first": _iso(self.first_recorded_at), "last": _iso(self.last_recorded_at)},
            "sha256": self.sha256,
            "bytes": self.size_bytes,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Manifest:
        if value.get("format") != ARCHIVE_FORMAT:
            raise ArchiveError(f"not a meshlog archive manifest (format {value.get('format')!r})")
        if value.get("format_version") != FORMAT_VERSION:
            raise ArchiveError(f"archive format version {value.get('format_version')!r} is not supported")
        try:
            encoding = value["encoding"]
            if encoding not in ENCODINGS:
                raise ArchiveError(f"unknown archive encoding {encoding!r}")
            return cls(
                store=str(value["store"]),
                source=str(value["source"]),
                name=str(value["name"]),
                file=str(value["file"]),
                encoding=encoding,
                schema_version=int(value["schema_version"]),
                lower=datetime.fromisoformat(value["range"]["from"]),
                upper=datetime.fromisoformat(value["range"]["to"]),
                count=int(value["count"]),
                position_sum=int(value["position_sum"]),
                first_position=value["positions"]["first"],
                last_position=value["positions"]["last"],
                first_recorded_at=_from_iso(value["recorded_at"]["first"]),
                last_recorded_at=_from_iso(value["recorded_at"]["last"]),
                sha256=str(value["sha256"]),
                size_bytes=int(value["bytes"]),
                created_at=datetime.fromisoformat(value["created_at"]),
                meshlog_version=str(value["meshlog_version"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchiveError(f"the archive manifest is incomplete or malformed: {exc!r}") from exc


def manifest_path(archive: Path) -> Path:
    """The manifest beside an archive file (``x.jsonl.gz`` → ``x.manifest.json``)."""
    name = archive.name
    for encoding in ENCODINGS:
        if name.endswith("." + encoding):
            return archive.with_name(name[: -len(encoding) - 1] + ".manifest.json")
    return archive.with_name(name + ".manifest.json")


def read_manifest(path: Path) -> tuple[Manifest, Path]:
    """The manifest and the archive file, given either of them."""
    if path.name.endswith(".manifest.json"):
        mpath = path
    else:
        mpath = manifest_path(path)
    try:
        value = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArchiveError(f"no manifest {mpath} beside the archive") from None
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"cannot read the manifest {mpath}: {exc}") from exc
    if not isinstance(value, dict):
        raise ArchiveError(f"the manifest {mpath} is not a JSON object")
    manifest = Manifest.from_dict(value)
    return manifest, mpath.with_name(manifest.file)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _from_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


# -- archive files -----------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Tally:
    """Accumulates what the manifest says about the rows, while they are written and again when read back."""

    count: int = 0
    position_sum: int = 0
    first_position: int | None = None
    last_position: int | None = None
    first_recorded_at: datetime | None = None
    last_recorded_at: datetime | None = None

    def add(self, row: Row) -> None:
        position: int = row[0]
        recorded_at: datetime = row[18]
        self.count += 1
        self.position_sum += position
        if self.first_position is None or position < self.first_position:
            self.first_position = position
        if self.last_position is None or position > self.last_position:
            self.last_position = position
        if self.first_recorded_at is None or recorded_at < self.first_recorded_at:
            self.first_recorded_at = recorded_at
        if self.last_recorded_at is None or recorded_at > self.last_recorded_at:
            self.last_recorded_at = recorded_at


_HEAD_FIELDS: Final = (
    "position", "id", "tenant", "stream", "stream_position", "type", "version", None, None, "trace_id",
    "task_id", "agent_id", "parent_id", "root_id", "depth", "related", "idempotency_key", "occurred_at",
    "recorded_at",
)  # fmt: skip


def _json_line(row: Row) -> bytes:
    head: dict[str, Any] = {}
    for name, value in zip(_HEAD_FIELDS, row, strict=True):
        if name is None:
            continue
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        head[name] = value
    text = json.dumps(head, ensure_ascii=False, separators=(",", ":"))
    # data and metadata are spliced in as stored: they are JSON objects already.
    return f'{text[:-1]},"data":{row[7]},"metadata":{row[8]}}}\n'.encode()


def _row_from_json(value: dict[str, Any]) -> Row:
    occurred = value.get("occurred_at")
    related = value.get("related")
    return (
        int(value["position"]), value["id"], value["tenant"], value["stream"], int(value["stream_position"]),
        value["type"], int(value["version"]), json.dumps(value["data"], ensure_ascii=False, separators=(",", ":")),
        json.dumps(value["metadata"], ensure_ascii=False, separators=(",", ":")), value.get("trace_id"),
        value.get("task_id"), value.get("agent_id"), value.get("parent_id"), value["root_id"], int(value["depth"]),
        list(related) if related else None, value.get("idempotency_key"),
        None if occurred is None else datetime.fromisoformat(occurred), datetime.fromisoformat(value["recorded_at"]),
    )  # fmt: skip


class _HashingWriter:
    """A binary file that hashes what passes through (gzip writes into it)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def _file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _pyarrow() -> Any:
    try:
        pyarrow = importlib.import_module("pyarrow")
        importlib.import_module("pyarrow.parquet")
    except ImportError as exc:
        raise ConfigurationError(f"Parquet archives need pyarrow: pip install 'meshlog[archive]' ({exc})") from exc
    return pyarrow


def _arrow_schema(pa: Any) -> Any:
    ts = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            ("position", pa.int64()), ("id", pa.string()), ("tenant", pa.string()), ("stream", pa.string()),
            ("stream_position", pa.int64()), ("type", pa.string()), ("version", pa.int32()), ("data", pa.string()),
            ("metadata", pa.string()), ("trace_id", pa.string()), ("task_id", pa.string()),
            ("agent_id", pa.string()), ("parent_id", pa.string()), ("root_id", pa.string()), ("depth", pa.int32()),
            ("related", pa.list_(pa.string())), ("idempotency_key", pa.string()), ("occurred_at", ts),
            ("recorded_at", ts),
        ]
    )  # fmt: skip


def _write_rows(path: Path, encoding: Encoding, rows: Iterable[Row], tally: _Tally, tick: Callable[[], None]) -> None:
    """Write ``rows`` to ``path`` (created or truncated), fsynced when this returns."""
    if encoding == "jsonl.gz":
        with path.open("wb") as raw:
            hashing = _HashingWriter(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=hashing, compresslevel=6, mtime=0) as gz:
                for row in rows:
                    gz.write(_json_line(row))
                    tally.add(row)
                    tick()
            raw.flush()
            os.fsync(raw.fileno())
        return
    pa = _pyarrow()
    schema = _arrow_schema(pa)
    batch: list[Row] = []
    with path.open("wb") as raw:
        with pa.parquet.ParquetWriter(raw, schema, compression="zstd") as writer:

            def flush() -> None:
                columns = list(zip(*batch, strict=True))
                writer.write_table(
                    pa.Table.from_arrays(
                        [pa.array(c, t) for c, t in zip(columns, schema.types, strict=True)], schema=schema
                    )
                )
                batch.clear()

            for row in rows:
                batch.append(row)
                tally.add(row)
                tick()
                if len(batch) >= 10_000:
                    flush()
            if batch:
                flush()
        raw.flush()
        os.fsync(raw.fileno())


def _read_rows(path: Path, encoding: Encoding) -> Iterator[Row]:
    if encoding == "jsonl.gz":
        with gzip.open(path, "rb") as gz:
            for number, line in enumerate(gz, 1):
                try:
                    yield _row_from_json(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    raise ArchiveError(f"{path}: line {number} is not a meshlog event: {exc!r}") from exc
        return
    pa = _pyarrow()
    parquet_file = pa.parquet.ParquetFile(path)
    for batch in parquet_file.iter_batches(batch_size=10_000):
        columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        for values in zip(*columns, strict=True):
            row = list(values)
            row[17] = None if row[17] is None else row[17].astimezone(UTC)
            row[18] = row[18].astimezone(UTC)
            yield tuple(row)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_archive(
    backend: Backend,
    chunk: Chunk,
    directory: Path,
    encoding: Encoding,
    *,
    progress: Progress | None = None,
) -> tuple[Manifest, Path]:
    """Write the chunk's events to ``directory`` with a manifest, then verify the file against the chunk.

    The file is written under a ``.partial`` name, fsynced and renamed, so an archive that exists is complete;
    a failure removes the partial file and raises ArchiveError.
    """
    import meshlog

    if encoding == "parquet":
        _pyarrow()  # fail before anything is written when the extra is missing
    name = f"{backend.source}.{chunk.name}"
    target = directory / f"{name}.{encoding}"
    partial = directory / f"{name}.{encoding}.partial"
    tally = _Tally()
    done = 0
    description = f"archiving {chunk.name}"

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None and done % _PROGRESS_EVERY == 0:
            progress(description, done, chunk.count)

    rows = backend.rows(chunk)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_rows(partial, encoding, rows, tally, tick)
        os.replace(partial, target)
        _fsync_dir(directory)
        digest, size = _file_digest(target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise ArchiveError(f"cannot write the archive of {chunk.name} to {directory}: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()  # ends the backend's read (its transaction) now, also when writing failed
    if progress is not None:
        progress(description, done, chunk.count)
    manifest = Manifest(
        store=backend.kind,
        source=backend.source,
        name=chunk.name,
        file=target.name,
        encoding=encoding,
        schema_version=backend.schema_version(),
        lower=chunk.lower,
        upper=chunk.upper,
        count=tally.count,
        position_sum=tally.position_sum,
        first_position=tally.first_position,
        last_position=tally.last_position,
        first_recorded_at=tally.first_recorded_at,
        last_recorded_at=tally.last_recorded_at,
        sha256=digest,
        size_bytes=size,
        created_at=datetime.now(UTC),
        meshlog_version=meshlog.__version__,
    )
    mpath = manifest_path(target)
    try:
        tmp = mpath.with_name(mpath.name + ".partial")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(manifest.to_dict(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, mpath)
        _fsync_dir(directory)
    except OSError as exc:
        raise ArchiveError(f"cannot write the manifest {mpath}: {exc}") from exc
    if (manifest.count, manifest.position_sum) != (chunk.count, chunk.position_sum):
        raise ArchiveError(
            f"the archive of {chunk.name} holds {manifest.count} events but the partition {chunk.count}: "
            "events were added while it was written; nothing removed"
        )
    verify_archive(target, expect=chunk)
    return manifest, target


def verify_archive(path: Path | str, *, expect: Chunk | None = None) -> Manifest:
    """Check an archive file against its manifest (and against ``expect``, the chunk it was made of): the
    SHA-256 and size of the file, then every row read back: the count, the sum and range of positions and the
    range of ``recorded_at``. Returns the manifest; raises ArchiveError on any difference."""
    manifest, archive = read_manifest(Path(path))
    try:
        digest, size = _file_digest(archive)
    except OSError as exc:
        raise ArchiveError(f"cannot read the archive {archive}: {exc}") from exc
    if digest != manifest.sha256 or size != manifest.size_bytes:
        raise ArchiveError(f"{archive} does not match its manifest's checksum (the file changed or is damaged)")
    tally = _Tally()
    try:
        for row in _read_rows(archive, manifest.encoding):
            tally.add(row)
            if not manifest.lower <= row[18] < manifest.upper:
                raise ArchiveError(f"{archive}: event {row[1]} was recorded outside the archive's range")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"cannot read the archive {archive}: {exc}") from exc
    except Exception as exc:
        if isinstance(exc, MeshlogError):
            raise
        raise ArchiveError(f"cannot read the archive {archive}: {exc!r}") from exc
    found = (tally.count, tally.position_sum, tally.first_position, tally.last_position)
    stated = (manifest.count, manifest.position_sum, manifest.first_position, manifest.last_position)
    if found != stated:
        raise ArchiveError(f"{archive} holds {tally.count} events, its manifest says {manifest.count}")
    if expect is not None and (tally.count, tally.position_sum) != (expect.count, expect.position_sum):
        raise ArchiveError(f"{archive} does not hold the events of {expect.name} in the store")
    return manifest


# -- running -----------------------------------------------------------------------------------------------------
def run_retention(
    url: str,
    keep: timedelta,
    *,
    archive_dir: Path | str | None = None,
    encoding: Encoding = "jsonl.gz",
    dry_run: bool = False,
    vacuum: bool = True,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> RetentionReport:
    """Archive (when ``archive_dir`` is given) and remove the events of ``url`` recorded more than ``keep`` ago.

    Each chunk is archived and verified before it is removed; an archive that cannot be written or verified
    raises ArchiveError and leaves that chunk, and every later one, in place (chunks removed before stay
    removed, with their archives). ``dry_run`` reads what would expire and changes nothing, not even files.
    """
    if keep <= timedelta(0):
        raise ConfigurationError("the retention window must be positive")
    if encoding not in ENCODINGS:
        raise ConfigurationError(f"archive encoding must be one of {list(ENCODINGS)}, got {encoding!r}")
    if encoding == "parquet" and archive_dir is not None:
        _pyarrow()
    directory = None if archive_dir is None else Path(archive_dir)
    if directory is not None and directory.exists() and not directory.is_dir():
        raise ConfigurationError(f"the archive directory {directory} is not a directory")
    cutoff = (now or datetime.now(UTC)) - keep
    backend = open_backend(url)
    try:
        if not dry_run:
            backend.lock()
        plan = backend.plan(cutoff)
        results: list[ChunkResult] = []
        for chunk in plan.expired:
            if dry_run:
                target = None if directory is None else directory / f"{backend.source}.{chunk.name}.{encoding}"
                results.append(ChunkResult(chunk, target, removed=False, keys_expired=backend.expiring_keys(chunk)))
                continue
            archive = None
            if directory is not None and chunk.count:
                _, archive = write_archive(backend, chunk, directory, encoding, progress=progress)
            keys = backend.remove(chunk)
            logger.info("meshlog retention: removed %s (%d events)", chunk.name, chunk.count)
            results.append(ChunkResult(chunk, archive, removed=True, keys_expired=keys))
        reclaimed = None
        if not dry_run and vacuum and results:
            reclaimed = backend.finish()
        return RetentionReport(
            store=backend.kind,
            cutoff=cutoff,
            dry_run=dry_run,
            chunks=results,
            kept=plan.kept,
            notes=plan.notes,
            reclaimed_bytes=reclaimed,
        )
    finally:
        backend.close()


def restore_archive(path: Path | str, url: str, *, progress: Progress | None = None) -> RestoreReport:
    """Verify an archive, then load it into the ``archived_events`` table of ``url`` (created by migration if
    missing). Restoring the same file twice adds nothing the second time."""
    from meshlog.stores import open_store

    manifest = verify_archive(path)
    _, archive = read_manifest(Path(path))
    store = open_store(url)
    try:
        store.migrate()
    finally:
        store.close()
    backend = open_backend(url)
    done = 0
    description = f"restoring {manifest.name}"

    def rows() -> Iterator[Row]:
        nonlocal done
        for row in _read_rows(archive, manifest.encoding):
            yield row
            done += 1
            if progress is not None and done % _PROGRESS_EVERY == 0:
                progress(description, done, manifest.count)

    try:
        inserted = backend.restore(rows(), manifest.file)
    finally:
        backend.close()
    if progress is not None:
        progress(description, done, manifest.count)
    return RestoreReport(archive=archive, count=manifest.count, inserted=inserted)


async def run_periodically(
    url: str,
    keep: timedelta,
    *,
    archive_dir: Path | str | None = None,
    encoding: Encoding = "jsonl.gz",
    interval: timedelta = timedelta(hours=24),
    stop: asyncio.Event | None = None,
) -> None:
    """Run retention now and then every ``interval`` until ``stop`` is set (or the task is cancelled), in a
    worker thread. A failed run is logged and tried again at the next interval; nothing else is affected.

    Off unless started: a server that wants it runs ``asyncio.create_task(run_periodically(...))`` in its
    lifespan. Several replicas may run it: PostgreSQL retention takes an advisory lock, so one run at a time
    does the work and the others find nothing left to do or wait for the lock.
    """
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            report = await asyncio.to_thread(run_retention, url, keep, archive_dir=archive_dir, encoding=encoding)
            if report.chunks:
                logger.info("meshlog retention: removed %d events", report.events_removed)
        except MeshlogError as exc:
            logger.error("meshlog retention failed (trying again in %s): %s", interval, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval.total_seconds())
