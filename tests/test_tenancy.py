"""Tenant isolation enforced by PostgreSQL itself: row-level security for an ordinary role.

The server connects as a role that is neither superuser nor BYPASSRLS (superusers skip every policy). For such a
role the store must work as usual, and a query that forgets its ``tenant = ...`` condition must still see only
the tenant its connection works for.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

import meshlog
from conftest import APP_ROLE
from meshlog import EventFilter, EventLog
from meshlog.stores import open_store
from meshlog.stores.postgres import PostgresStore
from meshlog.testing import InstanceConformance, LineageConformance, LogFactory, StoreConformance, TokenConformance


def test_the_role_is_subject_to_row_level_security(pg_app_url: str) -> None:
    with psycopg.connect(pg_app_url.split("?")[0]) as conn:
        row = conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user").fetchone()
    assert row == (False, False)


class TestUnderRowLevelSecurity(StoreConformance, LineageConformance, TokenConformance, InstanceConformance):
    """The whole store contract holds for a role that row-level security applies to."""

    @pytest.fixture
    def make_log(self, pg_app_url: str) -> Iterator[LogFactory]:
        store = open_store(pg_app_url)
        store.migrate()  # already migrated: must not need CREATE rights

        def make(tenant: str = "default") -> EventLog:
            return EventLog(store, tenant=tenant)

        yield make
        store.close()


def _fill(url: str) -> None:
    store = open_store(url)
    try:
        for tenant in ("tenant-a", "tenant-b"):
            log = EventLog(store, tenant=tenant)
            first = log.emit("task.started", {"n": 1}, stream="shared", idempotency_key="k1")
            log.emit("task.done", {"n": 2}, stream="shared", parent_id=first.id)
            log.save_checkpoint("consumer", first.position)
            log.create_token("read")
    finally:
        store.close()


TABLES = ("events", "streams", "idempotency_keys", "checkpoints", "tokens")


def test_a_query_that_forgets_the_tenant_filter_sees_only_its_tenant(pg_app_url: str, pg_schema: str) -> None:
    _fill(pg_app_url)
    with psycopg.connect(pg_app_url.split("?")[0], autocommit=True) as conn:
        for table in TABLES:
            forgetful = sql.SQL("SELECT DISTINCT tenant FROM {}.{}").format(
                sql.Identifier(pg_schema), sql.Identifier(table)
            )
            conn.execute("SELECT set_config('meshlog.tenant', 'tenant-a', false)")
            assert conn.execute(forgetful).fetchall() == [("tenant-a",)], table
            conn.execute("SELECT set_config('meshlog.tenant', 'tenant-b', false)")
            assert conn.execute(forgetful).fetchall() == [("tenant-b",)], table
            conn.execute("RESET meshlog.tenant")
            assert conn.execute(forgetful).fetchall() == [], table  # no tenant said: nothing visible


def test_rows_of_another_tenant_cannot_be_written(pg_app_url: str, pg_schema: str) -> None:
    _fill(pg_app_url)
    schema = sql.Identifier(pg_schema)
    with psycopg.connect(pg_app_url.split("?")[0], autocommit=True) as conn:
        conn.execute("SELECT set_config('meshlog.tenant', 'tenant-a', false)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(sql.SQL("INSERT INTO {}.checkpoints VALUES ('tenant-b', 'intruder', 1, now())").format(schema))
        moved = conn.execute(sql.SQL("UPDATE {}.streams SET version = 99 WHERE tenant = 'tenant-b'").format(schema))
        assert moved.rowcount == 0
        conn.execute("SELECT set_config('meshlog.tenant', 'tenant-b', false)")
        versions = conn.execute(sql.SQL("SELECT version FROM {}.streams").format(schema)).fetchall()
        assert versions == [(2,)]


def test_a_pooled_connection_follows_the_tenant_of_each_call(pg_app_url: str, pg_schema: str) -> None:
    """The store tells each connection whose rows it works on before every statement, also when one connection
    alternates between tenants (a pool of one)."""
    _fill(pg_app_url)
    parts = urlsplit(pg_app_url)
    store = PostgresStore(urlunsplit(parts._replace(query="")), schema=pg_schema, min_size=1, max_size=1)
    store.open()
    try:
        forgetful = sql.SQL("SELECT DISTINCT tenant FROM {}.events").format(sql.Identifier(pg_schema))
        for tenant in ("tenant-a", "tenant-b", "tenant-a", "tenant-b"):
            assert store._fetch(tenant, forgetful, ()) == [(tenant,)]
            assert {e.tenant for e in store.query(tenant, EventFilter(), order="asc", limit=10)} == {tenant}
    finally:
        store.close()


def test_migrate_grant_from_the_command_line(pg_dsn: str, pg_url: str, pg_schema: str) -> None:
    from click.testing import CliRunner

    from meshlog.cli import main

    granted = CliRunner().invoke(main, ["--url", pg_url, "migrate", "--grant", APP_ROLE, "--json"])
    assert granted.exit_code == 0, granted.output
    parts = urlsplit(pg_url)
    app_url = urlunsplit(parts._replace(netloc=f"{APP_ROLE}@{parts.netloc.rsplit('@', 1)[-1]}"))
    with meshlog.connect(app_url, tenant="t") as log:
        assert log.emit("x").tenant == "t"
    refused = CliRunner().invoke(main, ["--url", "memory://", "migrate", "--grant", APP_ROLE])
    assert refused.exit_code == 2 and "postgresql" in refused.output


def test_instances_are_isolated_by_row_level_security(pg_app_url: str, pg_schema: str) -> None:
    store = open_store(pg_app_url)
    try:
        for tenant in ("tenant-a", "tenant-b"):
            EventLog(store, tenant=tenant).instances.register("same-id", project=tenant)
    finally:
        store.close()
    forgetful = sql.SQL("SELECT tenant, project FROM {}.instances").format(sql.Identifier(pg_schema))
    with psycopg.connect(pg_app_url.split("?")[0], autocommit=True) as conn:
        conn.execute("SELECT set_config('meshlog.tenant', 'tenant-a', false)")
        assert conn.execute(forgetful).fetchall() == [("tenant-a", "tenant-a")]
        update = sql.SQL("UPDATE {}.instances SET status = 'closed' WHERE tenant = 'tenant-b'")
        assert conn.execute(update.format(sql.Identifier(pg_schema))).rowcount == 0
        conn.execute("RESET meshlog.tenant")
        assert conn.execute(forgetful).fetchall() == []
