"""``meshlog retention`` and ``meshlog archive``: remove old events after archiving them, and load archives back.

Thin commands over :mod:`meshlog.retention`; registered on the ``meshlog`` group when :mod:`meshlog.cli` is
imported.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from meshlog.cli import Console, _examples, _isatty, _print_json, _Settings, format_time, main
from meshlog.errors import ConfigurationError
from meshlog.log import resolve_url
from meshlog.retention import (
    ENCODINGS,
    Encoding,
    Progress,
    parse_keep,
    restore_archive,
    run_retention,
    verify_archive,
)

__all__ = ["archive", "retention"]


def _keep(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    try:
        return parse_keep(value)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None


def _url(ctx: click.Context, url: str | None) -> str:
    settings = ctx.find_object(_Settings)
    return resolve_url(url or (settings.url if settings else None))


@contextmanager
def _bars() -> Iterator[Progress | None]:
    """A rich progress bar per archive while it is written or read, only when stdout is a terminal."""
    if not _isatty(sys.stdout):
        yield None
        return
    from rich.console import Console as RichConsole
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=RichConsole(file=sys.stdout),
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(description: str, done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=done)

        yield update


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def _day(value: datetime) -> str:
    return format_time(value).replace("T00:00:00.000Z", "")


@main.command(
    short_help="Archive and remove events older than a window.",
    epilog=_examples(
        "meshlog retention --keep 90d --dry-run",
        "meshlog retention --keep 90d --archive /var/lib/meshlog/archive",
        "meshlog retention --url postgresql://owner@db/events --keep 26w --archive /mnt/cold --format parquet",
    ),
)
@click.option(
    "--keep",
    required=True,
    callback=_keep,
    metavar="AGE",
    help="Keep events recorded within this window: 90d, 12w or 36h.",
)
@click.option(
    "--archive",
    "archive_dir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Archive expired events to files in DIR (each verified) before removing them. Without it they are "
    "removed for good.",
)
@click.option(
    "--format",
    "encoding",
    type=click.Choice(ENCODINGS),
    default="jsonl.gz",
    show_default=True,
    help="Archive encoding; parquet needs pip install 'meshlog[archive]'.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be archived and removed; change nothing.")
@click.option("--no-vacuum", is_flag=True, help="SQLite: do not VACUUM afterwards (the file keeps its size).")
@click.option("--url", "command_url", metavar="URL", help="Store URL (overrides the group's --url).")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.pass_context
def retention(
    ctx: click.Context,
    keep: timedelta,
    archive_dir: Path | None,
    encoding: Encoding,
    dry_run: bool,
    no_vacuum: bool,
    command_url: str | None,
    as_json: bool,
) -> None:
    """Remove the events recorded before now minus --keep, archiving them first with --archive.

    PostgreSQL: drops each monthly partition whose whole range is older than the window (a partition with a
    newer event stays whole). SQLite: deletes the events older than the window, month by month, then VACUUMs.
    Each archive is read back and checked before anything is removed, with a manifest beside it. Stream
    versions stay: a stream continues at its version. Idempotency keys expire with their events.
    """
    url = _url(ctx, command_url)
    with _bars() as progress:
        report = run_retention(
            url,
            keep,
            archive_dir=archive_dir,
            encoding=encoding,
            dry_run=dry_run,
            vacuum=not no_vacuum,
            progress=progress,
        )
    if as_json:
        _print_json(report.to_dict())
        return
    out = Console()
    unit = "partition" if report.store == "postgres" else "chunk"
    out.print(f"events recorded before {format_time(report.cutoff)} expire")
    if report.chunks:
        sized = report.store == "postgres"
        rows = [
            (
                r.chunk.name,
                _day(r.chunk.lower),
                _day(r.chunk.upper),
                r.chunk.count,
                *((_size(r.chunk.size_bytes),) if sized else ()),
                "-" if r.archive is None else str(r.archive),
            )
            for r in report.chunks
        ]
        headers = [unit, "from", "to", "events", *(["size"] if sized else []), "archive"]
        out.table(headers, rows, numeric=(3, 4) if sized else (3,))
    verb = "would remove" if report.dry_run else "removed"
    keys = "would expire" if report.dry_run else "expired"
    out.print(
        f"{verb} {len(report.chunks)} {unit}{'' if len(report.chunks) == 1 else 's'}: "
        f"{sum(r.chunk.count for r in report.chunks)} events; {keys} {report.keys_expired} idempotency keys"
    )
    for chunk in report.kept:
        out.print(f"kept {chunk.name}: {chunk.count} events, some of them recorded within the window")
    if report.reclaimed_bytes is not None:
        out.print(f"VACUUM reclaimed {_size(report.reclaimed_bytes)}")
    for note in report.notes:
        click.echo(f"Warning: {note}", err=True)
    if report.dry_run:
        out.print("dry run: nothing changed", dim=True)


@main.group(
    short_help="Verify archives and load them back.",
    epilog=_examples(
        "meshlog archive verify /mnt/cold/meshlog.events_2026_01.jsonl.gz",
        "meshlog archive restore /mnt/cold/meshlog.events_2026_01.jsonl.gz",
    ),
)
def archive() -> None:
    """Verify the archives that 'meshlog retention --archive' wrote, and load them back into the store's
    archived_events table to query them with SQL."""


@archive.command(
    "verify",
    short_help="Check an archive against its manifest.",
    epilog=_examples(
        "meshlog archive verify /mnt/cold/meshlog.events_2026_01.jsonl.gz",
        "meshlog archive verify /mnt/cold/meshlog.events_2026_01.manifest.json --json",
    ),
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def archive_verify(file: Path, as_json: bool) -> None:
    """Check FILE (an archive or its manifest) against its manifest: the SHA-256 checksum, then every event
    read back (count, positions, time range). Exit code 1 when they differ."""
    manifest = verify_archive(file)
    if as_json:
        _print_json(manifest.to_dict())
        return
    Console().print(
        f"{manifest.file}: {manifest.count} events from {format_time(manifest.lower)} to "
        f"{format_time(manifest.upper)}, sha256 {manifest.sha256[:16]}…, verified"
    )


@archive.command(
    "restore",
    short_help="Load an archive into the archived_events table.",
    epilog=_examples(
        "meshlog archive restore /mnt/cold/meshlog.events_2026_01.jsonl.gz",
        "meshlog archive restore --url sqlite:///events.db events.events_20260101T000000Z_20260201T000000Z.jsonl.gz",
    ),
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", "command_url", metavar="URL", help="Store URL (overrides the group's --url).")
@click.option("--json", "as_json", is_flag=True, help='Print {"archive", "count", "inserted"} as JSON.')
@click.pass_context
def archive_restore(ctx: click.Context, file: Path, command_url: str | None, as_json: bool) -> None:
    """Verify FILE, then load its events into the archived_events table of the store (not into events:
    restored events are copies to query with SQL, they do not come back to life). Restoring a file twice adds
    nothing the second time."""
    url = _url(ctx, command_url)
    with _bars() as progress:
        report = restore_archive(file, url, progress=progress)
    if as_json:
        _print_json(report.to_dict())
        return
    Console().print(
        f"restored {report.inserted} of {report.count} events from {report.archive.name} into archived_events"
    )
