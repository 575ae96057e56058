"""The ``meshlog`` command: emit, query, replay and list events from a shell.

Every command opens the store named by ``--url`` (else ``$MESHLOG_URL``, ``$DATABASE_URL``,
``$PG_PRIMARY_URL``, else ``sqlite:///./meshlog.db``) the way :func:`meshlog.connect` does, schema migration
included, and closes it when done. ``demo`` is the exception: it writes into ``sqlite:///meshlog-demo.db``
unless ``--url`` is given on its command line, never into the store of an environment variable.

Exit codes:

- ``0``: done.
- ``1``: meshlog could not do it: the store is unreachable or failed (``StoreError``), a concurrency conflict
  (``WrongExpectedVersion``, ``IdempotencyConflict``), a store URL or option meshlog cannot use
  (``ConfigurationError``), no such event (``NotFound``).
- ``2``: the input is invalid and nothing was written: an unknown option or bad option value (click's usage
  errors), a JSON argument that is not a JSON object, a value meshlog rejects (``ValidationError``,
  ``InvalidCursor``).

A meshlog error is reported as one line on stderr, ``Error: <ErrorClass>: <message>``, never as a traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Literal

import click
from click.core import ParameterSource

import meshlog
from meshlog.errors import ConfigurationError, InvalidCursor, MeshlogError, StoreError, ValidationError

if TYPE_CHECKING:
    from meshlog.spool import Spool, SpoolStatus

__all__ = [
    "DEMO_URL",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "CliError",
    "Console",
    "InputError",
    "default_spool_path",
    "main",
]

EXIT_FAILURE: Final = 1
"""meshlog could not do what was asked (store, concurrency or configuration error)."""
EXIT_USAGE: Final = 2
"""The input is invalid; nothing was written."""
DEMO_URL: Final = "sqlite:///meshlog-demo.db"
"""Where ``meshlog demo`` writes unless ``--url`` is given."""

SPOOL_VARIABLE: Final = "MESHLOG_SPOOL"
"""The environment variable that names the spool file of ``emit --never-fail`` and ``meshlog spool``."""
TAIL_POLL_INTERVAL: Final = 0.5
"""How often ``meshlog tail -f`` looks for events written by other processes, in seconds."""

_AGE_RE: Final = re.compile(r"(\d+)\s*([smhdw])")
_AGE_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


# -- output ------------------------------------------------------------------------------------------------------
class Console:
    """Human-readable output through :func:`click.echo`: lines, headings, key/value blocks and tables.

    Styling (bold headings, dim notes) is dropped by click when the output is not a terminal. Tables are cut
    to ``width``: by default the terminal's width (or ``$COLUMNS``), and no limit when the output is a pipe
    or file, so that ``grep`` sees every character.
    """

    def __init__(self, file: IO[str] | None = None, *, color: bool | None = None, width: int | None = None) -> None:
        self.file = file
        self.color = color
        if width is None and (os.environ.get("COLUMNS") or _isatty(file or sys.stdout)):
            width = shutil.get_terminal_size().columns
        self.width = width

    def print(self, text: str = "", **style: Any) -> None:
        """One line (``style`` as for :func:`click.style`, e.g. ``bold=True``)."""
        click.echo(click.style(text, **style) if style else text, file=self.file, color=self.color)

    def heading(self, title: str, note: str = "") -> None:
        """A blank line, then ``title`` in bold and an optional dim ``note`` after it."""
        self.print()
        line = click.style(title, bold=True)
        if note:
            line += "  " + click.style(note, dim=True)
        click.echo(line, file=self.file, color=self.color)

    def fields(self, pairs: Sequence[tuple[str, object]], *, indent: int = 2) -> None:
        """``name  value`` lines, the values aligned."""
        if not pairs:
            return
        width = max(len(name) for name, _ in pairs)
        for name, value in pairs:
            self.print(f"{' ' * indent}{name.ljust(width)}  {_cell(value)}")

    def table(
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[object]],
        *,
        numeric: Collection[int] = (),
        indent: int = 2,
    ) -> None:
        """Rows under a header and a rule; ``numeric`` columns right-aligned; the last column is cut to fit
        the console's width."""
        cells = [[_cell(value) for value in row] for row in rows]
        widths = [len(h) for h in headers]
        for row in cells:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))
        if self.width is not None:
            fixed = indent + sum(widths[:-1]) + 2 * (len(widths) - 1)
            widths[-1] = max(len(headers[-1]), min(widths[-1], self.width - 1 - fixed))

        def line(values: Sequence[str]) -> str:
            parts = []
            for i, value in enumerate(values):
                value = _clip(value, widths[i])
                parts.append(value.rjust(widths[i]) if i in numeric else value.ljust(widths[i]))
            return (" " * indent + "  ".join(parts)).rstrip()

        self.print(line(headers), bold=True)
        self.print(" " * indent + "  ".join("-" * w for w in widths))
        for row in cells:
            self.print(line(row))


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, (dict, list)):
        return compact_json(value)
    return " ".join(str(value).split())


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def format_time(value: datetime) -> str:
    """A timestamp as UTC ISO 8601 with milliseconds: ``2026-01-31T09:30:00.123Z``."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def compact_json(value: object) -> str:
    """One-line JSON without spaces after separators (non-ASCII kept)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2))


def _warn(message: str) -> None:
    """One ``Warning: <message>`` line on stderr (the command still succeeds)."""
    click.echo(f"Warning: {' '.join(message.split())}", err=True)


@contextmanager
def _progress(description: str, total: int | None, poll: Callable[[], int] | None = None) -> Iterator[None]:
    """A rich progress bar on stdout while the block runs, only when stdout is a terminal (never in a pipe, a
    file or a test). ``poll`` (called from a background thread) says how much of ``total`` is done; without it
    the bar pulses until the block ends."""
    if not _isatty(sys.stdout):
        yield
        return
    from rich.console import Console as RichConsole
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn()]
    if total is not None:
        columns.append(MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=RichConsole(file=sys.stdout), transient=True) as bar:
        task = bar.add_task(description, total=total)
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.1):
                with suppress(Exception):  # a failed poll only leaves the bar where it was
                    bar.update(task, completed=poll() if poll else 0)

        watcher = threading.Thread(target=watch, daemon=True) if poll is not None else None
        if watcher is not None:
            watcher.start()
        try:
            yield
        finally:
            done.set()
            if watcher is not None:
                watcher.join()


# -- errors ------------------------------------------------------------------------------------------------------
class CliError(click.ClickException):
    """An error reported as ``Error: <message>`` on stderr, exit code 1."""

    exit_code = EXIT_FAILURE


class InputError(CliError):
    """Invalid input, nothing written: ``Error: <message>`` on stderr, exit code 2."""

    exit_code = EXIT_USAGE


def _from_meshlog(exc: MeshlogError) -> CliError:
    message = f"{type(exc).__name__}: {' '.join(str(exc).split()) or '(no message)'}"
    if isinstance(exc, (ValidationError, InvalidCursor)):
        return InputError(message)
    return CliError(message)


class _Group(click.Group):
    """The ``meshlog`` group: turns meshlog's errors into one-line messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MeshlogError as exc:
            raise _from_meshlog(exc) from exc


# -- options and arguments ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Settings:
    url: str | None
    url_on_command_line: bool
    tenant: str | None


def _open(ctx: click.Context, url: str | None = None, *, migrate: bool = True) -> meshlog.EventLog:
    """Connect to the store (``url``, else the group's ``--url``); closed when the command ends."""
    settings = ctx.find_object(_Settings) or _Settings(None, False, None)
    log = meshlog.connect(url or settings.url, tenant=settings.tenant, migrate=migrate)
    return ctx.with_resource(log)


def _parse_object(text: str) -> dict[str, Any]:
    """The JSON object in ``text`` (``-`` reads standard input). Raises CliError (exit 2)."""
    if text == "-":
        text = sys.stdin.read()
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise InputError(f"JSON argument is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        raise InputError(f'JSON argument must be a JSON object such as {{"key": "value"}}, got a JSON {kind}')
    return value


_JSON_KINDS: Final[dict[type, str]] = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _timestamp(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """ISO 8601 (UTC when no offset is given), or an age such as ``30s``, ``15m``, ``2h``, ``7d``, ``1w``."""
    if value is None:
        return None
    text = value.strip()
    age = _AGE_RE.fullmatch(text)
    if age:
        return datetime.now(UTC) - timedelta(**{_AGE_UNITS[age.group(2)]: int(age.group(1))})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO 8601 timestamp (2026-01-31T09:30:00Z) nor an age (15m, 2h, 7d)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _examples(*lines: str) -> str:
    """A help epilog: an ``Examples:`` block kept verbatim by click's formatter."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


# -- the group ---------------------------------------------------------------------------------------------------
@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_examples(
        'meshlog --url sqlite:///events.db emit task.dispatched \'{"capability": "code"}\' --task-id 42',
        "meshlog --url sqlite:///events.db query --task-id 42",
    ),
)
@click.version_option(meshlog.__version__, "--version", prog_name="meshlog", message="%(prog)s %(version)s")
@click.option(
    "--url",
    envvar="MESHLOG_URL",
    metavar="URL",
    help="Store URL: sqlite:///relative.db, sqlite:////absolute.db, postgresql://user@host/db or memory://. "
    "Default: $MESHLOG_URL, else $DATABASE_URL, else $PG_PRIMARY_URL, else sqlite:///./meshlog.db.",
)
@click.option(
    "--tenant",
    envvar="MESHLOG_TENANT",
    metavar="NAME",
    help="Tenant whose events are read and written. Default: $MESHLOG_TENANT, else 'default'.",
)
@click.pass_context
def main(ctx: click.Context, url: str | None, tenant: str | None) -> None:
    """meshlog: a durable, append-only event store for AI-agent systems.

    Emit events, query them, replay a stream and list streams, in SQLite, PostgreSQL or memory. Errors are
    one line on stderr; exit code 1 when meshlog could not do it (store, conflict, configuration), 2 when
    the input is invalid (nothing was written).
    """
    on_command_line = ctx.get_parameter_source("url") is ParameterSource.COMMANDLINE
    ctx.obj = _Settings(url=url, url_on_command_line=on_command_line, tenant=tenant)


# -- commands ----------------------------------------------------------------------------------------------------
@main.command(
    short_help="Create or upgrade the schema.",
    epilog=_examples(
        "meshlog --url sqlite:///events.db migrate",
        "MESHLOG_URL=postgresql://owner@db.internal/events meshlog migrate --grant meshlog_app",
    ),
)
@click.option(
    "--grant",
    "roles",
    multiple=True,
    metavar="ROLE",
    help="PostgreSQL: then let this ordinary role use the store (repeatable; see docs/security.md).",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"url", "migrated": true, "granted": [ROLE]} instead.')
@click.pass_context
def migrate(ctx: click.Context, roles: tuple[str, ...], as_json: bool) -> None:
    """Create or upgrade the store's schema, then print the store URL.

    Safe to run repeatedly and from several processes at once. Every other command also migrates when it
    opens the store; run this first when the schema should exist before the first writer starts. With
    --grant, run it as the schema's owner.
    """
    log = _open(ctx, migrate=False)
    log.migrate()
    if roles:
        from meshlog.stores.postgres import PostgresStore

        if not isinstance(log.store, PostgresStore):
            raise InputError("--grant needs a postgresql:// store")
        for role in roles:
            log.store.grant(role)
    if as_json:
        _print_json({"url": log.url, "migrated": True, "granted": list(roles)})
        return
    click.echo(f"{log.url} migrated" + (f"; granted to {', '.join(roles)}" if roles else ""))


@main.command(
    short_help="Write a sample multi-agent run and show it.",
    epilog=_examples(
        "meshlog demo",
        "meshlog demo --no-serve --url sqlite:////tmp/demo.db",
        "meshlog --url sqlite:///meshlog-demo.db query --type task.retry",
    ),
)
@click.option(
    "--url",
    "demo_url",
    metavar="URL",
    help=f"Store to write into. Default: {DEMO_URL} (environment variables are ignored here).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON instead of showing it.")
@click.option(
    "--serve/--no-serve",
    default=None,
    help="Then serve the store on 127.0.0.1 until Ctrl-C. Default: serve, unless --json.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port to serve on.")
@click.pass_context
def demo(ctx: click.Context, demo_url: str | None, as_json: bool, serve: bool | None, port: int) -> None:
    """Write a sample multi-agent run, show what query and replay see, then serve it over HTTP.

    An orchestrator turns a user request into three tasks for three agents, with LLM calls, tool calls,
    progress, a timeout that fails one task, its retry, a deployment and the end of the epic. Every
    invocation writes a new run (its own trace id and task ids) beside the earlier ones, so running it
    twice is fine.

    \b
    Writes into the --url given to demo (or to meshlog), else into
    sqlite:///meshlog-demo.db in the current directory; never into the
    store named by $MESHLOG_URL or the other URL variables.
    """

    from meshlog.demo import show_demo, write_demo

    settings = ctx.find_object(_Settings)
    url = demo_url or (settings.url if settings and settings.url_on_command_line else None) or DEMO_URL
    log = _open(ctx, url)
    with _progress("writing the sample run", None):
        summary = write_demo(log)
    if serve is None:
        serve = not as_json
    if serve:
        ctx.call_on_close(lambda: _serve_demo(summary.url, port))
    if as_json:
        _print_json(
            {
                "store": summary.url,
                "run_id": summary.run_id,
                "trace_id": summary.trace_id,
                "request": summary.request,
                "tasks": [{"task_id": t.task_id, "agent_id": t.agent_id, "stream": t.stream} for t in summary.tasks],
                "streams": list(summary.streams),
                "events_written": summary.events_written,
                "llm_calls": summary.llm_calls,
                "llm_tokens": summary.llm_tokens,
            }
        )
        return
    show_demo(log, summary, Console())


@main.command(
    short_help="Append one event and print it.",
    epilog=_examples(
        'meshlog emit task.dispatched \'{"capability": "code"}\' --task-id 42 --agent-id orchestrator',
        'meshlog emit llm.call \'{"model": "gpt-4o"}\' --task-id 42 --parent-id <id> --idempotency-key call-7',
        "echo '{\"exit_code\": 0}' | meshlog emit job.finished - --json",
        "meshlog --url http://meshlog.internal:8080 emit build.finished '{\"ok\": true}' --never-fail",
    ),
)
@click.argument("event_type", metavar="TYPE")
@click.argument("data", metavar="[JSON]", required=False, default="{}")
@click.option(
    "--stream",
    metavar="NAME",
    help="Stream to append to. Default: task:<task-id>, else trace:<trace-id>, else agent:<agent-id>, else 'default'.",
)
@click.option("--trace-id", metavar="ID", help="Id of the whole run this event belongs to.")
@click.option("--task-id", metavar="ID", help="Id of the task this event belongs to.")
@click.option("--agent-id", metavar="ID", help="Id of the agent that emits the event.")
@click.option("--parent-id", metavar="ID", help="Id of the event that caused this one.")
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="A retry with the same key and content returns the first event instead of writing again.",
)
@click.option(
    "--never-fail",
    is_flag=True,
    help="Exit 0 with a warning when the store cannot be reached or written; an http(s):// store spools the "
    "event for later delivery. Invalid input still exits 2.",
)
@click.option(
    "--spool",
    "spool_path",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help="Spool file for --never-fail. Default: $MESHLOG_SPOOL, else ~/.cache/meshlog/spool.db.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the recorded event as JSON.")
@click.pass_context
def emit(
    ctx: click.Context,
    event_type: str,
    data: str,
    stream: str | None,
    trace_id: str | None,
    task_id: str | None,
    agent_id: str | None,
    parent_id: str | None,
    idempotency_key: str | None,
    never_fail: bool,
    spool_path: str | None,
    as_json: bool,
) -> None:
    """Append one event of type TYPE with JSON data and print it as recorded.

    JSON must be a JSON object (default {}); '-' reads it from standard input. Invalid JSON or a value
    meshlog rejects exits with code 2 and writes nothing.

    With --never-fail, a store that cannot be reached or written is a warning on stderr and exit code 0, so
    that a script never breaks because logging is down: an http(s):// store keeps the event in the spool file
    (deliver it with 'meshlog spool flush'); a local store's event is lost.
    """
    if spool_path is not None and not never_fail:
        raise InputError("--spool is only used with --never-fail")
    payload = _parse_object(data)
    fields: dict[str, Any] = {
        "stream": stream,
        "trace_id": trace_id,
        "task_id": task_id,
        "agent_id": agent_id,
        "parent_id": parent_id,
        "idempotency_key": idempotency_key,
    }
    if never_fail:
        recorded = _emit_never_failing(ctx, event_type, payload, fields, spool_path)
        if recorded is None:
            return
        event = recorded
    else:
        event = _open(ctx).emit(event_type, payload, **fields)
    if as_json:
        _print_json(event.to_dict())
        return
    console = Console()
    console.print(f"recorded {event.type} at position {event.position}", bold=True)
    console.fields(
        [
            ("id", event.id),
            ("stream", f"{event.stream} (version {event.stream_position})"),
            ("trace", event.trace_id),
            ("task", event.task_id),
            ("agent", event.agent_id),
            ("parent", event.parent_id),
            ("root", f"{event.root_id} (depth {event.depth})"),
            ("recorded", event.recorded_at),
            ("data", compact_json(event.data)),
        ]
    )


def default_spool_path() -> str:
    """The spool file of ``emit --never-fail`` and ``meshlog spool``: ``$MESHLOG_SPOOL``, else
    ``~/.cache/meshlog/spool.db``."""
    return os.environ.get(SPOOL_VARIABLE) or str(Path.home() / ".cache" / "meshlog" / "spool.db")


def _is_http(url: str) -> bool:
    return url.split("://", 1)[0].lower() in {"http", "https"}


def _emit_never_failing(
    ctx: click.Context, event_type: str, payload: dict[str, Any], fields: dict[str, Any], spool_path: str | None
) -> meshlog.RecordedEvent | None:
    """``emit --never-fail``: the recorded event, or None after a warning when the store failed.

    Only the store's failures are absorbed (``StoreError``, which includes ``StoreUnavailable``, ``Spooled`` and
    ``SpoolFull``, and ``ConfigurationError``: an unusable URL, a missing extra, a spool that cannot be opened).
    Invalid input (``ValidationError``) and conflicts (``ConcurrencyError``) are answers about the event itself
    and still fail, through the group's handler.
    """
    from meshlog.log import resolve_url
    from meshlog.spool import emit_or_spool

    settings = ctx.find_object(_Settings) or _Settings(None, False, None)
    url = resolve_url(settings.url)
    spool = spool_path or default_spool_path()
    try:
        if _is_http(url):
            try:
                from meshlog.stores.http import HttpStore
            except ImportError as exc:
                raise ConfigurationError(f"HTTP stores need httpx: pip install 'meshlog[client]' ({exc})") from exc

            tenant = settings.tenant or os.environ.get("MESHLOG_TENANT") or "default"
            store = HttpStore(url, spool=spool)
            try:
                log = ctx.with_resource(meshlog.EventLog(store, tenant=tenant))
            except BaseException:
                store.close()
                raise
            log.migrate()  # with a spool, an unreachable server is not an error here
            recorded = emit_or_spool(log, event_type, payload, **fields)
            if recorded is None:
                _warn(
                    f"the meshlog server at {log.url} cannot be reached; the {event_type} event was spooled to "
                    f"{spool} and will be delivered by the next emit or by 'meshlog spool flush'"
                )
            return recorded
        return _open(ctx, url).emit(event_type, payload, **fields)
    except (StoreError, ConfigurationError) as exc:
        _warn(f"{type(exc).__name__}: {exc}; the {event_type} event was not recorded (--never-fail)")
        return None


@main.command(
    short_help="Print the events that match filters.",
    epilog=_examples(
        "meshlog query --agent-id test-runner --order desc --limit 10",
        "meshlog query --trace-id run-7f3a --type llm.error --type task.result.failure",
        "meshlog query --since 1h --text timeout --json",
    ),
)
@click.option("--stream", metavar="NAME", help="Only events of this stream.")
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only events of this type (repeatable).")
@click.option("--trace-id", metavar="ID", help="Only events with this trace id.")
@click.option("--task-id", metavar="ID", help="Only events with this task id.")
@click.option("--agent-id", metavar="ID", help="Only events with this agent id.")
@click.option("--text", help="Only events with a string in their data that contains TEXT (ASCII case ignored).")
@click.option(
    "--since",
    metavar="TIME",
    callback=_timestamp,
    help="Recorded at or after: ISO 8601 (UTC if no offset) or an age (15m, 2h).",
)
@click.option(
    "--until",
    metavar="TIME",
    callback=_timestamp,
    help="Recorded before: ISO 8601 (UTC if no offset) or an age (15m, 2h).",
)
@click.option(
    "--order",
    type=click.Choice(["asc", "desc"]),
    default=None,
    help="Position order: asc (the default) or desc, the latest first. A --cursor continues in its own order.",
)
@click.option(
    "--limit", type=click.IntRange(1, 1000), metavar="N", default=100, show_default=True, help="Events per page."
)
@click.option("--cursor", metavar="CURSOR", help="Continue after the page that printed this cursor.")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON: events, has_more, next_cursor.")
@click.pass_context
def query(
    ctx: click.Context,
    stream: str | None,
    types: tuple[str, ...],
    trace_id: str | None,
    task_id: str | None,
    agent_id: str | None,
    text: str | None,
    since: datetime | None,
    until: datetime | None,
    order: Literal["asc", "desc"] | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Print one page of the events that match every given filter.

    The table shows position, recorded_at (UTC), stream, type, agent and the data, cut to fit the terminal;
    --json prints everything. When more events match, the last line gives the --cursor for the next page.
    """
    log = _open(ctx)
    page = log.query(
        stream=stream,
        types=types or None,
        trace_id=trace_id,
        task_id=task_id,
        agent_id=agent_id,
        text=text,
        since=since,
        until=until,
        order=order,
        limit=limit,
        cursor=cursor,
    )
    if as_json:
        _print_json(
            {
                "events": [event.to_dict() for event in page.events],
                "has_more": page.has_more,
                "next_cursor": page.next_cursor,
            }
        )
        return
    console = Console()
    if not page.events:
        console.print("no events match")
        return
    console.table(
        ["position", "recorded_at", "stream", "type", "agent", "data"],
        [(e.position, e.recorded_at, e.stream, e.type, e.agent_id, compact_json(e.data)) for e in page.events],
        numeric={0},
        indent=0,
    )
    noun = "event" if len(page.events) == 1 else "events"
    if page.has_more:
        console.print(f"{len(page.events)} {noun}; more match, next page: --cursor {page.next_cursor}")
    else:
        console.print(f"{len(page.events)} {noun}")


def _count_type(state: dict[str, int], event: meshlog.RecordedEvent) -> dict[str, int]:
    state[event.type] = state.get(event.type, 0) + 1
    return state


@main.command(
    short_help="Replay a stream, counting events by type.",
    epilog=_examples(
        "meshlog replay task:42",
        "meshlog replay task:42 --to-version 5 --json",
    ),
)
@click.argument("stream")
@click.option("--to-version", type=click.IntRange(min=1), metavar="N", help="Stop after stream version N.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def replay(ctx: click.Context, stream: str, to_version: int | None, as_json: bool) -> None:
    """Replay STREAM through a projection that counts its events by type.

    Prints the projection's state (events per type, in order of first appearance) and the replay's
    figures: events replayed, last version applied and duration in milliseconds.
    """
    log = _open(ctx)
    projection: meshlog.FunctionProjection[dict[str, int]] = meshlog.FunctionProjection(dict, _count_type)
    result = log.replay(stream, projection, to_version=to_version)
    if as_json:
        _print_json(
            {
                "stream": stream,
                "state": result.state,
                "events_replayed": result.events_replayed,
                "last_version": result.last_version,
                "duration_ms": round(result.duration_ms, 3),
            }
        )
        return
    console = Console()
    console.print(f"replay of {stream}", bold=True)
    console.fields(
        [
            ("events_replayed", result.events_replayed),
            ("last_version", result.last_version),
            ("duration_ms", f"{result.duration_ms:.2f}"),
        ]
    )
    if not result.state:
        console.print(f"stream {stream!r} has no events")
        return
    console.print()
    console.table(["type", "count"], list(result.state.items()), numeric={1})


@main.command(
    short_help="List streams and their versions.",
    epilog=_examples(
        "meshlog streams",
        "meshlog streams --prefix task: --json",
    ),
)
@click.option("--prefix", metavar="PREFIX", help="Only streams whose name starts with PREFIX.")
@click.option("--after", metavar="STREAM", help="Only streams after this name (for the next page).")
@click.option(
    "--limit", type=click.IntRange(1, 1000), metavar="N", default=100, show_default=True, help="Streams to list."
)
@click.option("--json", "as_json", is_flag=True, help="Print the streams as JSON.")
@click.pass_context
def streams(ctx: click.Context, prefix: str | None, after: str | None, limit: int, as_json: bool) -> None:
    """List streams by name with their version (number of events) and last position."""
    log = _open(ctx)
    infos = log.list_streams(prefix=prefix, after=after, limit=limit)
    if as_json:
        _print_json(
            [
                {
                    "stream": info.stream,
                    "version": info.version,
                    "last_position": info.last_position,
                    "created_at": info.created_at.isoformat(),
                    "updated_at": info.updated_at.isoformat(),
                }
                for info in infos
            ]
        )
        return
    console = Console()
    if not infos:
        console.print("no streams")
        return
    console.table(
        ["stream", "version", "last_position", "updated_at"],
        [(i.stream, i.version, i.last_position, i.updated_at) for i in infos],
        numeric={1, 2},
        indent=0,
    )
    if len(infos) == limit:
        console.print(f"{len(infos)} streams; more may exist, next page: --after {infos[-1].stream}")
    else:
        console.print(f"{len(infos)} stream{'' if len(infos) == 1 else 's'}")


# -- live and meaning --------------------------------------------------------------------------------------------
def _tail_line(event: meshlog.RecordedEvent, width: int | None) -> str:
    line = "  ".join(
        [
            f"{event.position:>6}",
            format_time(event.recorded_at),
            event.stream,
            event.type,
            event.agent_id or "-",
            compact_json(event.data),
        ]
    )
    return _clip(line, width - 1) if width is not None else line


@main.command(
    short_help="Print the last events, then follow new ones.",
    epilog=_examples(
        "meshlog tail",
        "meshlog tail -f --trace-id run-7f3a",
        "meshlog tail -f -n 0 --type llm.error --type task.result.failure --json | jq -r .id",
        "meshlog tail -f --after-position 1200 --agent-id api-coder",
    ),
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they are written, until Ctrl-C.")
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only events of this type (repeatable).")
@click.option("--stream", metavar="NAME", help="Only events of this stream.")
@click.option("--trace-id", metavar="ID", help="Only events with this trace id.")
@click.option("--task-id", metavar="ID", help="Only events with this task id.")
@click.option("--agent-id", metavar="ID", help="Only events with this agent id.")
@click.option(
    "--after-position",
    type=click.IntRange(min=0),
    metavar="N",
    help="Start after position N instead: every matching event after it (not with --lines).",
)
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(0, 1000),
    metavar="N",
    default=10,
    show_default=True,
    help="How many of the last matching events to print first.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event and line (JSON Lines).")
@click.pass_context
def tail(
    ctx: click.Context,
    follow: bool,
    types: tuple[str, ...],
    stream: str | None,
    trace_id: str | None,
    task_id: str | None,
    agent_id: str | None,
    after_position: int | None,
    lines: int,
    as_json: bool,
) -> None:
    """Print the last matching events, oldest first; with -f, then every new one as it is written.

    One line per event: position, recorded_at (UTC), stream, type, agent and data, cut to fit the terminal;
    --json prints each event as one JSON object per line. -f follows until Ctrl-C (exit code 0); no event is
    skipped or printed twice.
    """
    if after_position is not None and ctx.get_parameter_source("lines") is ParameterSource.COMMANDLINE:
        raise InputError("give --lines or --after-position, not both")
    log = _open(ctx)
    flt = meshlog.EventFilter(types=types or None, stream=stream, trace_id=trace_id, task_id=task_id, agent_id=agent_id)
    width = None if as_json else Console().width

    def show(event: meshlog.RecordedEvent) -> None:
        click.echo(compact_json(event.to_dict()) if as_json else _tail_line(event, width))

    # The head is read first: the backlog holds the matching events up to it, and following starts right after
    # it, so an event written in between is printed once, by the subscription.
    head = log.head_position()
    try:
        if after_position is not None:
            for event in log.subscribe(after_position, filter=_before(flt, head + 1)):
                show(event)
            start = max(after_position, head)
        else:
            if lines:
                page = log.query(
                    types=flt.types,
                    stream=stream,
                    trace_id=trace_id,
                    task_id=task_id,
                    agent_id=agent_id,
                    before_position=head + 1,
                    order="desc",
                    limit=lines,
                )
                for event in reversed(page.events):
                    show(event)
            start = head
        if follow:
            for event in log.subscribe(start, filter=flt, poll_interval=TAIL_POLL_INTERVAL):
                show(event)
    except KeyboardInterrupt:
        return
    except BrokenPipeError:
        # The reader went away (``meshlog tail -f | head``): stop quietly, and keep Python from complaining
        # about the closed pipe when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _before(flt: meshlog.EventFilter, position: int) -> meshlog.EventFilter:
    return replace(flt, before_position=position)


@main.command(
    short_help="List the event types of catalogues.",
    epilog=_examples(
        "meshlog types",
        "meshlog types --catalogue session --category deployment",
        "meshlog types --catalogue ./my-agents.yaml --json",
    ),
)
@click.option(
    "--catalogue",
    "catalogues",
    multiple=True,
    metavar="NAME",
    help="Built-in catalogue (agent-mesh, session, documentable) or catalogue file (repeatable). Default: "
    "every built-in catalogue.",
)
@click.option("--category", metavar="CATEGORY", help="Only types of this category.")
@click.option("--json", "as_json", is_flag=True, help="Print the types as JSON.")
def types(catalogues: tuple[str, ...], category: str | None, as_json: bool) -> None:
    """List event types: name, category, version, required and optional data fields, and description.

    These are the types a log connected with these catalogues knows and validates (meshlog's own
    outcome.recorded included); no store is opened.
    """
    from meshlog.types import CATALOGUES

    try:
        log = meshlog.connect("memory://", types=list(catalogues or CATALOGUES))
    except ConfigurationError as exc:
        raise InputError(f"{type(exc).__name__}: {' '.join(str(exc).split())}") from None
    with log:
        found = log.event_types(category)
    if as_json:
        _print_json([t.to_dict() for t in found])
        return
    if not found:
        Console().print("no event types" + (f" of category {category!r}" if category else ""))
        return
    from rich.console import Console as RichConsole
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("type", "category", "version", "required", "optional", "description"):
        # Only the name and the version never wrap: on a narrow terminal the lists and descriptions do.
        table.add_column(
            name,
            justify="right" if name == "version" else "left",
            no_wrap=name in {"type", "version"},
            overflow="fold",
        )
    for t in found:
        mark = " !" if t.important else ""
        table.add_row(
            t.name + mark,
            t.category,
            str(t.version),
            ", ".join(t.required_fields) or "-",
            ", ".join(t.optional_fields) or "-",
            t.description,
        )
    # Rendered to text first: click.echo then drops the styling when stdout is not a terminal, and the lines
    # lose the trailing blanks rich pads the last column with.
    width = Console().width
    out = RichConsole(width=width or 10_000, highlight=False, force_terminal=_isatty(sys.stdout))
    with out.capture() as captured:
        out.print(table)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())
    noun = "type" if len(found) == 1 else "types"
    click.echo(f"{len(found)} {noun}; ! marks important types")


@main.command(
    short_help="Suggest what to do next in a session stream.",
    epilog=_examples(
        "meshlog resume session:2026-01-31",
        "meshlog resume session:2026-01-31 --json | jq -r .suggestion.text",
        "meshlog resume odin3-ps",
    ),
)
@click.argument("stream")
@click.option("--json", "as_json", is_flag=True, help="Print the suggestion and the whole state as JSON.")
@click.pass_context
def resume(ctx: click.Context, stream: str, as_json: bool) -> None:
    """Replay STREAM through the session projection and print what to do next.

    The suggestion comes from the built-in resume rules (docs/projections.md), with the rule that made it;
    below it a short summary of the session: events, epics, tests, deployments and errors. STREAM may be an
    instance id: when no stream has that name, the instance's stream instance:STREAM is read.
    """
    log = _open(ctx)
    if log.stream_version(stream) == 0 and log.stream_version(f"instance:{stream}") > 0:
        stream = f"instance:{stream}"
    found = log.resume(stream)
    if as_json:
        _print_json(found.to_dict())
        return
    state = found.state.to_final_state()
    console = Console()
    console.print(found.text, bold=True)
    suggestion = found.suggestion
    epics, tests, deployments = state["epics"], state["tests"], state["deployments"]
    pairs: list[tuple[str, object]] = [
        ("stream", f"{stream} (version {found.last_version})"),
        ("rule", f"{suggestion.rule or '-'} (priority {suggestion.priority})"),
        ("events", state["total_events_replayed"]),
        ("last event", f"{state['last_event_type'] or '-'} at {state['latest_timestamp'] or '-'}"),
        (
            "epics",
            f"{len(epics['completed'])} completed, {len(epics['failed'])} failed, open: {epics['open'] or '-'}",
        ),
        (
            "tests",
            f"{tests['runs']} runs ({tests['runs_failed']} failed): {tests['passed']} passed, {tests['failed']} failed",
        ),
        ("deployments", f"{len(deployments['open'])} open, {len(deployments['finished'])} finished"),
        ("errors", state["errors"]["count"]),
    ]
    if state["context_percent"] is not None:
        pairs.append(("context", f"{state['context_percent']:.0f}%"))
    console.fields(pairs)


@main.command(
    short_help="Print the Markdown story of a trace or stream.",
    epilog=_examples(
        "meshlog narrative --trace-id run-7f3a",
        "meshlog narrative --stream task:42 > task-42.md",
    ),
)
@click.option("--trace-id", metavar="ID", help="Tell the events of this trace.")
@click.option("--stream", metavar="NAME", help="Tell the events of this stream.")
@click.option("--json", "as_json", is_flag=True, help='Print {"trace_id", "stream", "markdown"} instead.')
@click.pass_context
def narrative(ctx: click.Context, trace_id: str | None, stream: str | None, as_json: bool) -> None:
    """Print a Markdown timeline of one trace or one stream (exactly one of --trace-id and --stream).

    Who did what and when, why, how long it took, what failed and what followed, and outcomes.
    """
    if (trace_id is None) == (stream is None):
        raise InputError("give exactly one of --trace-id and --stream")
    log = _open(ctx)
    text = log.narrative(trace_id=trace_id, stream=stream)
    if as_json:
        _print_json({"trace_id": trace_id, "stream": stream, "markdown": text})
        return
    click.echo(text.rstrip("\n"))


# -- the spool ---------------------------------------------------------------------------------------------------
_SPOOL_OPTION_HELP: Final = "Spool file. Default: $MESHLOG_SPOOL, else ~/.cache/meshlog/spool.db."


@main.group(
    short_help="Inspect and deliver the local spool.",
    epilog=_examples(
        "meshlog spool status",
        "meshlog spool flush --url http://meshlog.internal:8080",
    ),
)
def spool() -> None:
    """Inspect and deliver the spool: events that 'meshlog emit --never-fail' (or an http:// store with a
    spool) kept on disk while the meshlog server could not be reached."""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _empty_status(path: str) -> SpoolStatus:
    from meshlog.spool import DEFAULT_MAX_BYTES, SpoolStatus

    return SpoolStatus(path, 0, 0, None, 0, 0, DEFAULT_MAX_BYTES, 0, 0, 0)


@spool.command(
    "status",
    short_help="Show what the spool holds.",
    epilog=_examples(
        "meshlog spool status",
        "meshlog spool status --spool /var/spool/meshlog.db --json",
    ),
)
@click.option("--spool", "spool_path", metavar="PATH", type=click.Path(dir_okay=False), help=_SPOOL_OPTION_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the status and the rejected entries as JSON.")
def spool_status(spool_path: str | None, as_json: bool) -> None:
    """Show how many requests and events wait in the spool, since when, their size, and the entries the
    server refused for good. A spool file that does not exist is empty (and is not created)."""
    from meshlog.spool import Spool

    path = spool_path or default_spool_path()
    rejected: list[dict[str, Any]] = []
    if os.path.exists(path):
        with Spool(path) as opened:
            status = opened.status()
            rejected = [
                {
                    "id": r.id,
                    "created_at": r.created_at.isoformat(),
                    "rejected_at": r.rejected_at.isoformat(),
                    "reason": r.reason,
                }
                for r in opened.rejected()
            ]
    else:
        status = _empty_status(path)
    if as_json:
        _print_json({**status.to_dict(), "rejected_entries": rejected})
        return
    console = Console()
    console.print(f"spool {path}", bold=True)
    console.fields(
        [
            ("pending", f"{_plural(status.pending, 'request')}, {_plural(status.pending_events, 'event')}"),
            ("oldest", status.oldest),
            ("size", f"{status.pending_bytes:,} of {status.max_bytes:,} bytes ({status.file_bytes:,} on disk)"),
            ("delivered", status.delivered),
            ("rejected", status.rejected),
            ("refused", f"{status.refused} (spool full)"),
        ]
    )
    if rejected:
        console.print()
        console.table(
            ["entry", "rejected_at", "reason"],
            [(r["id"], datetime.fromisoformat(r["rejected_at"]), r["reason"]) for r in rejected],
            numeric={0},
        )


@spool.command(
    "flush",
    short_help="Deliver the spooled events to a server.",
    epilog=_examples(
        "meshlog spool flush --url http://meshlog.internal:8080",
        "meshlog spool flush --url http://127.0.0.1:8080 --spool /var/spool/meshlog.db --json",
    ),
)
@click.option(
    "--url",
    "flush_url",
    metavar="URL",
    help="http(s):// URL of the meshlog server. Default: the group's --url or $MESHLOG_URL.",
)
@click.option("--spool", "spool_path", metavar="PATH", type=click.Path(dir_okay=False), help=_SPOOL_OPTION_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print delivered, rejected, remaining and error as JSON.")
@click.pass_context
def spool_flush(ctx: click.Context, flush_url: str | None, spool_path: str | None, as_json: bool) -> None:
    """Deliver the spooled requests to the server, in the order they were spooled, then print what happened.

    Stops at the first request that cannot be delivered; exit code 1 when entries remain. A request the
    server refuses for good moves to the rejected list (see 'meshlog spool status'). Safe to repeat: every
    spooled event carries an idempotency key, so none is written twice.
    """
    from meshlog.log import resolve_url

    settings = ctx.find_object(_Settings) or _Settings(None, False, None)
    url = flush_url or resolve_url(settings.url)
    if not _is_http(url):
        raise InputError(f"spool flush delivers to a meshlog server: give --url http(s)://host:port, not {url!r}")
    path = spool_path or default_spool_path()
    if not os.path.exists(path):
        report: dict[str, Any] = {"delivered": 0, "rejected": 0, "remaining": 0, "error": None}
    else:
        try:
            from meshlog.stores.http import HttpStore
        except ImportError as exc:
            raise CliError(f"HTTP stores need httpx: pip install 'meshlog[client]' ({exc})") from None
        store = HttpStore(url, spool=path)
        ctx.call_on_close(store.close)
        held: Spool | None = store.spool
        assert held is not None
        before = held.status()

        def done() -> int:
            now: SpoolStatus = held.status()
            return int(now.delivered - before.delivered + now.rejected - before.rejected)

        with _progress("delivering the spool", before.pending, done):
            result = store.flush_spool()
        report = {
            "delivered": result.delivered,
            "rejected": result.rejected,
            "remaining": result.remaining,
            "error": result.error,
        }
    if as_json:
        _print_json({"url": url, "spool": path, **report})
    else:
        Console().print(
            f"delivered {report['delivered']}, rejected {report['rejected']}, remaining {report['remaining']}"
        )
    if report["rejected"]:
        _warn(f"the server refused {_plural(report['rejected'], 'spooled request')}; see meshlog spool status")
    if report["remaining"]:
        remain = "remains" if report["remaining"] == 1 else "remain"
        raise CliError(
            f"{_plural(report['remaining'], 'request')} {remain} in the spool {path}: {report['error'] or 'unknown'}"
        )


def _serve_demo(url: str, port: int) -> None:
    """Serve the demo store on loopback (after the demo's output, when the command's resources are closed)."""
    try:
        from meshlog.server import app_from_options, run
    except ImportError as exc:
        raise CliError(str(exc)) from None
    base = f"http://127.0.0.1:{port}"
    Console().print(
        f"\nserving the demo store at {base} (event explorer at {base}/, API docs at {base}/docs; Ctrl-C stops)\n"
        f"  try: meshlog --url {base} tail -f",
        bold=True,
    )
    run(app_from_options({"url": url}), host="127.0.0.1", port=port, access_log=False)


@main.group(
    short_help="Create, list and revoke API tokens.",
    epilog=_examples(
        "meshlog token create --tenant team-a --scope write --name ci-agents",
        "meshlog token list --tenant team-a",
        "meshlog token revoke 3f9c0a1b2c3d4e5f --tenant team-a",
    ),
)
def token() -> None:
    """Manage the API tokens of a meshlog server, in its store (--url names the store, not the server).

    Once the store holds a token, 'meshlog serve' requires one on every request and serves the token's
    tenant. Scopes: read; write (includes read); admin (includes both, and /metrics). Only a digest of each
    token is stored: the token itself is shown once, by 'token create'. See docs/security.md.
    """


def _token_tenant(ctx: click.Context, tenant: str | None) -> str:
    settings = ctx.find_object(_Settings) or _Settings(None, False, None)
    return tenant or settings.tenant or os.environ.get("MESHLOG_TENANT") or "default"


_TENANT_OPTION_HELP: Final = "Tenant of the token. Default: the group's --tenant, $MESHLOG_TENANT or 'default'."


@token.command(
    "create",
    short_help="Create a token and print it once.",
    epilog=_examples(
        "meshlog token create --tenant team-a --scope write",
        "meshlog token create --tenant ops --scope admin --expires 90d --json",
    ),
)
@click.option("--tenant", "token_tenant", metavar="NAME", help=_TENANT_OPTION_HELP)
@click.option(
    "--scope",
    "scopes",
    type=click.Choice(["read", "write", "admin"]),
    multiple=True,
    required=True,
    help="What the token may do: read, write (includes read) or admin (includes both).",
)
@click.option("--name", metavar="TEXT", help="A note on who or what holds the token.")
@click.option("--expires", metavar="AGE", help="Lifetime such as 12h, 30d or 1w. Default: no expiry.")
@click.option("--json", "as_json", is_flag=True, help="Print the token and its record as JSON.")
@click.pass_context
def token_create(
    ctx: click.Context,
    token_tenant: str | None,
    scopes: tuple[str, ...],
    name: str | None,
    expires: str | None,
    as_json: bool,
) -> None:
    """Create an API token for a tenant and print it. It is shown only this once: store it in the holder's
    secret store (it is sent as 'Authorization: Bearer <token>'; clients read $MESHLOG_TOKEN)."""
    expires_in = None
    if expires is not None:
        age = _AGE_RE.fullmatch(expires.strip())
        if age is None or int(age.group(1)) < 1:
            raise InputError(f"--expires: {expires!r} is not a lifetime such as 12h, 30d or 1w")
        expires_in = timedelta(**{_AGE_UNITS[age.group(2)]: int(age.group(1))})
    log = _open(ctx).for_tenant(_token_tenant(ctx, token_tenant))
    text, record = log.create_token(scopes, name=name, expires_in=expires_in)
    if as_json:
        _print_json({"token": text, **record.to_dict()})
        return
    click.echo(text)
    _warn(
        f"token {record.id} for tenant {record.tenant!r} ({', '.join(record.scopes)}): this is the only time "
        "it is shown; keep it secret"
    )


@token.command(
    "list",
    short_help="List a tenant's tokens.",
    epilog=_examples("meshlog token list --tenant team-a", "meshlog token list --json"),
)
@click.option("--tenant", "token_tenant", metavar="NAME", help=_TENANT_OPTION_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the tokens as a JSON array.")
@click.pass_context
def token_list(ctx: click.Context, token_tenant: str | None, as_json: bool) -> None:
    """List a tenant's tokens (never their secrets), revoked and expired ones included."""
    log = _open(ctx).for_tenant(_token_tenant(ctx, token_tenant))
    tokens = log.tokens()
    if as_json:
        _print_json([t.to_dict() for t in tokens])
        return
    now = datetime.now(UTC)
    Console().table(
        ["id", "scopes", "name", "created_at", "expires_at", "status"],
        [
            (
                t.id,
                " ".join(t.scopes),
                t.name or "",
                t.created_at,
                t.expires_at or "",
                "revoked" if t.revoked_at else ("active" if t.active(now) else "expired"),
            )
            for t in tokens
        ],
    )


@token.command(
    "revoke",
    short_help="Revoke a token.",
    epilog=_examples("meshlog token revoke 3f9c0a1b2c3d4e5f --tenant team-a"),
)
@click.argument("token_id", metavar="ID")
@click.option("--tenant", "token_tenant", metavar="NAME", help=_TENANT_OPTION_HELP)
@click.option("--json", "as_json", is_flag=True, help='Print {"id": ID, "revoked": true} instead.')
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str, token_tenant: str | None, as_json: bool) -> None:
    """Revoke one of a tenant's tokens. Running servers stop accepting it within their token cache time
    (30 seconds by default)."""
    log = _open(ctx).for_tenant(_token_tenant(ctx, token_tenant))
    log.revoke_token(token_id)
    if as_json:
        _print_json({"id": token_id, "revoked": True})
        return
    click.echo(f"token {token_id} revoked")


@main.command(
    short_help="Serve the HTTP API.",
    epilog=_examples(
        "meshlog serve --url sqlite:///events.db --port 8080",
        "meshlog serve --url postgresql://app@db.internal/events --host 0.0.0.0 --workers 2 --dapr",
    ),
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port to listen on.")
@click.option("--url", "serve_url", metavar="URL", help="Store URL (overrides the group's --url).")
@click.option("--tenant", "serve_tenant", metavar="NAME", help="Tenant to serve (overrides the group's --tenant).")
@click.option("--no-migrate", is_flag=True, help="Do not create or upgrade the schema at startup.")
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow a non-loopback address although the store has no API token (anyone can then read and write).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes sharing the port (about one per CPU core).",
)
@click.option("--no-access-log", is_flag=True, help="Do not log each request (faster under load).")
@click.option("--no-ui", is_flag=True, help="Do not serve the event explorer at / (the API is served either way).")
@click.option("--dapr", is_flag=True, help="Also subscribe to Dapr pub/sub (GET /dapr/subscribe, docs/dapr.md).")
@click.option("--dapr-pubsub", metavar="NAME", default="pubsub", show_default=True, help="Dapr pub/sub component name.")
@click.option(
    "--dapr-topic",
    "dapr_topics",
    multiple=True,
    metavar="TOPIC[=TYPE]",
    help="Another topic to subscribe to, stored as TYPE (default dapr.TOPIC); repeatable.",
)
@click.option(
    "--validation",
    type=click.Choice(["known", "strict", "off"]),
    default="known",
    show_default=True,
    help="Validate known types (known), also reject unknown types (strict), or neither (off).",
)
@click.option(
    "--types",
    "catalogues",
    multiple=True,
    metavar="CATALOGUE",
    help="Built-in catalogue (agent-mesh, session, documentable) or catalogue file to load (repeatable).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    serve_url: str | None,
    serve_tenant: str | None,
    no_migrate: bool,
    insecure: bool,
    workers: int,
    no_access_log: bool,
    no_ui: bool,
    dapr: bool,
    dapr_pubsub: str,
    dapr_topics: tuple[str, ...],
    validation: str,
    catalogues: tuple[str, ...],
) -> None:
    """Serve meshlog's HTTP API (docs/server.md) with uvicorn until Ctrl-C or SIGTERM.

    Once the store holds an API token ('meshlog token create'), every request needs one and is served for
    the token's tenant; until then the server serves --tenant to anyone who can reach it, so it listens on
    127.0.0.1 unless --host says otherwise, and a non-loopback address without a token needs --insecure.
    On shutdown, in-flight requests finish and open subscriptions end.
    """
    try:
        from meshlog.server import app_from_options, is_loopback, run, run_workers
    except ImportError as exc:
        raise CliError(str(exc)) from None
    settings = ctx.find_object(_Settings) or _Settings(None, False, None)
    from meshlog.log import resolve_url
    from meshlog.stores import redact

    url = resolve_url(serve_url or settings.url)
    tenant = serve_tenant or settings.tenant or os.environ.get("MESHLOG_TENANT") or "default"
    if not is_loopback(host) and not insecure:
        _require_tokens(url, host, migrate=not no_migrate)
    options: dict[str, Any] = {
        "url": url,
        "tenant": tenant,
        "migrate": not no_migrate,
        "types": list(catalogues) or None,
        "validation": validation,
    }
    if no_ui:
        options["ui"] = False
    if dapr or dapr_topics:
        options["dapr"] = {"pubsub_name": dapr_pubsub, "topics": list(dapr_topics)}
    shown = f"[{host}]" if ":" in host else host
    processes = f" in {workers} worker processes" if workers > 1 else ""
    explorer = "" if no_ui else ", event explorer at /"
    Console().print(
        f"meshlog serving at http://{shown}:{port}{processes} (docs at /docs{explorer}), store {redact(url)}"
    )
    if workers > 1:
        run_workers(options, workers=workers, host=host, port=port, access_log=not no_access_log)
    else:
        run(app_from_options(options), host=host, port=port, access_log=not no_access_log)


def _require_tokens(url: str, host: str, *, migrate: bool) -> None:
    """Refuse to listen on ``host`` (not loopback) unless the store holds an API token."""
    try:
        with meshlog.connect(url, migrate=migrate) as log:
            has_tokens = log.has_tokens()
    except MeshlogError as exc:
        raise CliError(f"refusing to listen on {host}: cannot tell whether the store has API tokens ({exc})") from exc
    if not has_tokens:
        raise InputError(
            f"refusing to listen on {host}: the store has no API token, so anyone could read and write; "
            "create one with 'meshlog token create', use --host 127.0.0.1, or --insecure to expose it anyway"
        )


from meshlog.cli import ingest as _ingest  # noqa: E402, F401  (registers `ingest`)
from meshlog.cli import instances as _instances  # noqa: E402, F401  (registers `instances` and `mcp`)
from meshlog.cli import retention as _retention  # noqa: E402, F401  (registers `retention` and `archive`)
