"""Storage adapters, one module each, and the function that maps a URL to one.

========================  =======================================  ===================================
URL                       sync store                               async store
========================  =======================================  ===================================
``memory://``             :class:`~meshlog.stores.memory.MemoryStore`      the same, behind an async face
``sqlite:///path.db``     :class:`~meshlog.stores.sqlite.SqliteStore`      the same, calls run in a thread
``postgresql://...``      :class:`~meshlog.stores.postgres.PostgresStore`  ``AsyncPostgresStore``
``http(s)://host:port``   :class:`~meshlog.stores.http.HttpStore`          ``AsyncHttpStore`` (a meshlog server)
========================  =======================================  ===================================
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from meshlog.errors import ConfigurationError

if TYPE_CHECKING:
    from meshlog.store import Store
    from meshlog.store_async import AsyncStore

__all__ = ["open_async_store", "open_store", "parse_url"]


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    kind: str
    """``memory``, ``sqlite``, ``postgres`` or ``http``."""
    target: str
    """The SQLite path, or the PostgreSQL conninfo without meshlog's own options."""
    options: dict[str, str]
    """meshlog's own options from the query string."""


_SQLITE_OPTIONS = {"synchronous", "busy_timeout"}
_POSTGRES_OPTIONS = {"schema", "pool_min", "pool_max"}


def parse_url(url: str) -> ParsedUrl:
    """Split a store URL into its kind, target and meshlog options. Raises ConfigurationError."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"not a store URL: {url!r} (try sqlite:///meshlog.db, postgresql://..., memory://)")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return ParsedUrl("memory", "", {})
    if scheme == "sqlite":
        rest = url[len("sqlite://") :]
        path, _, query = rest.partition("?")
        if not path.startswith("/") or len(path) < 2:
            raise ConfigurationError(f"SQLite URLs look like sqlite:///relative.db or sqlite:////abs.db, got {url!r}")
        options = dict(parse_qsl(query, strict_parsing=False))
        unknown = set(options) - _SQLITE_OPTIONS
        if unknown:
            raise ConfigurationError(f"unknown SQLite options {sorted(unknown)}; known: {sorted(_SQLITE_OPTIONS)}")
        return ParsedUrl("sqlite", path[1:], options)
    if scheme in {"postgresql", "postgres"}:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        options = {k: v for k, v in pairs if k in _POSTGRES_OPTIONS}
        rest = urlencode([(k, v) for k, v in pairs if k not in _POSTGRES_OPTIONS], quote_via=quote)
        target = parts._replace(scheme="postgresql", query=rest).geturl()
        return ParsedUrl("postgres", target, options)
    if scheme in {"http", "https"}:
        return ParsedUrl("http", url, {})
    raise ConfigurationError(f"unknown store scheme {scheme!r} in {url!r}; use sqlite, postgresql or memory")


def redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def _number(options: dict[str, str], name: str, default: float) -> float:
    try:
        return float(options.get(name, default))
    except ValueError:
        raise ConfigurationError(f"option {name} must be a number, got {options[name]!r}") from None


def open_store(url: str) -> Store:
    """The sync store for ``url`` (not yet migrated)."""
    parsed = parse_url(url)
    if parsed.kind == "memory":
        from meshlog.stores.memory import MemoryStore

        return MemoryStore(url)
    if parsed.kind == "sqlite":
        from meshlog.stores.sqlite import SqliteStore

        return SqliteStore(
            parsed.target,
            synchronous=parsed.options.get("synchronous", "full"),
            busy_timeout=_number(parsed.options, "busy_timeout", 30.0),
            url=url,
        )
    if parsed.kind == "http":
        http = _import_http("http")
        remote: Store = http.HttpStore(url)
        return remote
    postgres = _import_postgres()
    store = postgres.PostgresStore(
        parsed.target,
        schema=parsed.options.get("schema", "meshlog"),
        min_size=int(_number(parsed.options, "pool_min", 1)),
        max_size=int(_number(parsed.options, "pool_max", 10)),
        url=redact(url),
    )
    store.open()
    opened: Store = store
    return opened


async def open_async_store(url: str) -> AsyncStore:
    """The async store for ``url`` (not yet migrated)."""
    parsed = parse_url(url)
    if parsed.kind in {"memory", "sqlite"}:
        from meshlog.stores._threaded import AsyncThreadedStore

        sync_store = open_store(url)
        offload = parsed.kind == "sqlite"
        return AsyncThreadedStore(sync_store, offload=offload, poll_interval=0.05 if offload else 0.01)
    if parsed.kind == "http":
        http_async = _import_http("http_async")
        remote: AsyncStore = http_async.AsyncHttpStore(url)
        return remote
    postgres_async = _import_postgres_async()
    store = postgres_async.AsyncPostgresStore(
        parsed.target,
        schema=parsed.options.get("schema", "meshlog"),
        min_size=int(_number(parsed.options, "pool_min", 1)),
        max_size=int(_number(parsed.options, "pool_max", 10)),
        url=redact(url),
    )
    await store.open()
    opened: AsyncStore = store
    return opened


def _import_http(module: str) -> ModuleType:
    try:
        return importlib.import_module(f"meshlog.stores.{module}")
    except ImportError as exc:
        raise ConfigurationError(f"HTTP stores need httpx: pip install 'meshlog[client]' ({exc})") from exc


def _missing_psycopg(exc: ImportError) -> ConfigurationError:
    return ConfigurationError(f"PostgreSQL stores need psycopg 3: pip install 'meshlog[postgres]' ({exc})")


def _import_postgres() -> ModuleType:
    try:
        from meshlog.stores import postgres
    except ImportError as exc:
        raise _missing_psycopg(exc) from exc
    return postgres


def _import_postgres_async() -> ModuleType:
    try:
        from meshlog.stores import postgres_async
    except ImportError as exc:
        raise _missing_psycopg(exc) from exc
    return postgres_async
