"""Shared fixtures: real stores for every test (memory, a SQLite file, a fresh PostgreSQL schema).

PostgreSQL tests use ``MESHLOG_TEST_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``). When no
server answers they are skipped with the reason, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

DSN = os.environ.get("MESHLOG_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test")
STORES = ("memory", "sqlite", "postgres")


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    try:
        with psycopg.connect(DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL at {DSN} is required under CI=true but unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {DSN} unreachable ({exc}); set MESHLOG_TEST_DSN to run these tests")
    return DSN


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A schema name of this test's own, dropped afterwards."""
    name = f"meshlog_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pg_url(pg_dsn: str, pg_schema: str) -> str:
    sep = "&" if "?" in pg_dsn else "?"
    return f"{pg_dsn}{sep}schema={pg_schema}"


APP_ROLE = "meshlog_app"
"""An ordinary role (neither superuser nor BYPASSRLS): PostgreSQL's row-level security applies to it."""


@pytest.fixture
def pg_app_url(pg_dsn: str, pg_url: str) -> str:
    """A migrated schema of this test (owned by the test's superuser) and the URL under which the ordinary role
    :data:`APP_ROLE`, granted its use, connects to it."""
    from meshlog.stores import open_store
    from meshlog.stores.postgres import PostgresStore

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
        if exists is None:
            with contextlib.suppress(psycopg.errors.DuplicateObject):  # created by a concurrent test process
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS").format(sql.Identifier(APP_ROLE)))
    owner = open_store(pg_url)
    try:
        owner.migrate()
        assert isinstance(owner, PostgresStore)
        owner.grant(APP_ROLE)
    finally:
        owner.close()
    parts = urlsplit(pg_url)
    return urlunsplit(parts._replace(netloc=f"{APP_ROLE}@{parts.netloc.rsplit('@', 1)[-1]}"))


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh store of each kind."""
    kind = request.param
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    request.applymarker(pytest.mark.postgres)
    url: str = request.getfixturevalue("pg_url")
    return url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "pg_dsn" in getattr(item, "fixturenames", ()) or "[postgres" in item.nodeid:
            item.add_marker(pytest.mark.postgres)
