"""The shipped conformance suites run against an ``http://`` store: a real meshlog server (uvicorn) in front of
a memory store. What differs over HTTP is stated here: a server serves one tenant (a token's, later), and
takes batches of at most 1,000 events."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshlog import EventLog
from meshlog.stores.http import HttpStore
from meshlog.testing import LineageConformance, LogFactory, SessionConformance, StoreConformance, TypesConformance
from server_helpers import running_server

NOT_OVER_HTTP = {
    "test_keys_are_per_tenant": "a server serves one tenant",
    "test_tenants_do_not_see_each_other": "a server serves one tenant",
    "test_graph_stays_in_the_tenant": "a server serves one tenant",
    "test_read_stream_ranges_and_direction": "it writes a 1,200-event batch; a server takes at most 1,000",
}


class TestHttpStore(StoreConformance, LineageConformance, TypesConformance, SessionConformance):
    @pytest.fixture(autouse=True)
    def _skip_what_http_does_not_offer(self, request: pytest.FixtureRequest) -> None:
        reason = NOT_OVER_HTTP.get(request.function.__name__)
        if reason is not None:
            pytest.skip(f"not over HTTP: {reason}")

    @pytest.fixture
    def make_log(self) -> Iterator[LogFactory]:
        # The stores behind the server pass the suites on their own (test_conformance.py); this checks the HTTP
        # layer and the client, so the server keeps its events in memory.
        with running_server("memory://") as base_url:
            store = HttpStore(base_url)
            store.migrate()

            def make(tenant: str = "default") -> EventLog:
                return EventLog(store, tenant=tenant)

            yield make
            store.close()
