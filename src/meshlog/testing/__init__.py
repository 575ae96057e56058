"""meshlog's store conformance suite, for meshlog's own stores and any other.

Subclass :class:`StoreConformance` in a pytest module and provide a ``make_log`` fixture: a callable that
returns a new sync :class:`~meshlog.EventLog` on one shared store, for the tenant it is given::

    import pytest
    from meshlog import EventLog
    from meshlog.testing import LogFactory, StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def make_log(self) -> Iterator[LogFactory]:
            store = MyStore(...)
            store.migrate()
            yield lambda tenant="default": EventLog(store, tenant=tenant)
            store.close()

Every test states one rule of the store contract (see :mod:`meshlog.store`); together they cover the
invariants: append-only, no skipped events for subscribers, consistent streams, idempotency, atomic batches
and bad input that writes nothing. Needs pytest.
"""

from meshlog.testing.conformance import (
    InstanceConformance,
    LineageConformance,
    LogFactory,
    SessionConformance,
    StoreConformance,
    TokenConformance,
    TypesConformance,
)

__all__ = [
    "InstanceConformance",
    "LineageConformance",
    "LogFactory",
    "SessionConformance",
    "StoreConformance",
    "TokenConformance",
    "TypesConformance",
]
