"""Shared fixtures: real stores for every test (memory, a SQLite file, a fresh PostgreSQL schema).

PostgreSQL tests use ``MESHLOG_TEST_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``). When no
server answers they are skipped with the reason, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

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
