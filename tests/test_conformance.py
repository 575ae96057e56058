"""The shipped conformance suite, run against every store meshlog has."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshlog import EventLog
from meshlog.stores import open_store
from meshlog.testing import (
    InstanceConformance,
    LineageConformance,
    LogFactory,
    SessionConformance,
    StoreConformance,
    TokenConformance,
    TypesConformance,
)


class TestStores(
    StoreConformance, LineageConformance, TypesConformance, SessionConformance, TokenConformance, InstanceConformance
):
    @pytest.fixture
    def make_log(self, store_url: str) -> Iterator[LogFactory]:
        store = open_store(store_url)
        store.migrate()

        def make(tenant: str = "default") -> EventLog:
            return EventLog(store, tenant=tenant)

        yield make
        store.close()
