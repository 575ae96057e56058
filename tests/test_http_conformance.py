"""The shipped conformance suites run against an ``http://`` store: a real meshlog server (uvicorn) in front of
a SQLite store. Each tenant is a client with its own API token, so the tenant rules are checked over HTTP too.
What differs over HTTP is stated here: a server takes batches of at most 1,000 events, and the server, not the
client, decides the tenant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import meshlog
from meshlog import EventLog
from meshlog.server import create_app
from meshlog.stores.http import HttpStore
from meshlog.testing import (
    InstanceConformance,
    LineageConformance,
    LogFactory,
    SessionConformance,
    StoreConformance,
    TypesConformance,
)
from server_helpers import running_app

NOT_OVER_HTTP = {
    "test_read_stream_ranges_and_direction": "it writes a 1,200-event batch; a server takes at most 1,000",
    "test_a_tenant_view_shares_the_store": "the token, not the client, says which tenant a request is for",
}


class TestHttpStore(StoreConformance, LineageConformance, TypesConformance, SessionConformance, InstanceConformance):
    @pytest.fixture(autouse=True)
    def _skip_what_http_does_not_offer(self, request: pytest.FixtureRequest) -> None:
        reason = NOT_OVER_HTTP.get(request.function.__name__)
        if request.function.__name__.endswith("_with_a_clock"):
            reason = "the server keeps its own clock and runs the stale detector"
        if reason is not None:
            pytest.skip(f"not over HTTP: {reason}")

    @pytest.fixture
    def make_log(self, tmp_path: Path) -> Iterator[LogFactory]:
        # The stores behind the server pass the suites on their own (test_conformance.py); this checks the HTTP
        # layer, the client and the tokens' tenants.
        url = f"sqlite:///{tmp_path / 'served.db'}?synchronous=normal"
        admin = meshlog.connect(url)
        stores: list[HttpStore] = []
        with running_app(create_app(url, token_cache_ttl=0)) as base_url:

            def make(tenant: str = "default") -> EventLog:
                token, _ = admin.for_tenant(tenant).create_token("write")
                store = HttpStore(base_url, token=token)
                store.migrate()
                stores.append(store)
                return EventLog(store, tenant=tenant)

            yield make
            for store in stores:
                store.close()
        admin.close()
