"""The local spool on its own: order, durability, crash safety, the size limit, rejected entries.

The "server" here is a SQLite table that, like meshlog's server, answers a request whose idempotency keys it has
already recorded without writing it again. The HTTP store's use of the spool is tested against a real server in
tests/test_http_client.py.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from meshlog.errors import ConfigurationError, StoreUnavailable, ValidationError, WrongExpectedVersion
from meshlog.spool import Spool, SpoolEntry, SpoolFull


def body(i: int, **extra: object) -> str:
    return json.dumps({"type": "tick", "data": {"i": i}, "idempotency_key": f"k-{i}", **extra})


class Receiver:
    """An idempotent receiver: it records each idempotency key once, in the order first received."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("CREATE TABLE IF NOT EXISTS got (n INTEGER PRIMARY KEY, key TEXT UNIQUE, body TEXT)")
        self.calls = 0

    def send(self, entry: SpoolEntry) -> None:
        self.calls += 1
        key = entry.request()["idempotency_key"]
        self.conn.execute("INSERT OR IGNORE INTO got (key, body) VALUES (?, ?)", (key, entry.body))

    def keys(self) -> list[str]:
        return [row[0] for row in self.conn.execute("SELECT key FROM got ORDER BY n")]


def test_entries_are_delivered_in_order_and_removed(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path / "server.db")
    with Spool(tmp_path / "spool.db") as spool:
        ids = [spool.put(body(i)) for i in range(5)]
        assert ids == sorted(ids)
        status = spool.status()
        assert (status.pending, status.pending_events, status.rejected, status.refused) == (5, 5, 0, 0)
        assert status.pending_bytes == sum(len(body(i)) for i in range(5))
        assert status.oldest is not None and status.file_bytes > 0
        assert [e.request()["data"]["i"] for e in spool.pending()] == [0, 1, 2, 3, 4]
        report = spool.deliver(receiver.send, batch=2)
        assert (report.delivered, report.rejected, report.remaining, report.error) == (5, 0, 0, None)
        assert report.complete
        assert receiver.keys() == [f"k-{i}" for i in range(5)]
        assert not spool.has_pending() and spool.status().delivered == 5


def test_entries_survive_a_reopen(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        spool.put(body(1))
        spool.put({"events": [json.loads(body(2)), json.loads(body(3))]})
    with Spool(tmp_path / "spool.db") as spool:
        assert spool.status().pending == 2 and spool.status().pending_events == 3
        assert [len(e.request().get("events", [e.request()])) for e in spool.pending()] == [1, 2]


def test_delivery_stops_at_the_first_failure_and_resumes_in_order(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path / "server.db")
    with Spool(tmp_path / "spool.db") as spool:
        for i in range(4):
            spool.put(body(i))

        def flaky(entry: SpoolEntry) -> None:
            if entry.request()["data"]["i"] == 2:
                raise StoreUnavailable("server gone")
            receiver.send(entry)

        report = spool.deliver(flaky)
        assert (report.delivered, report.remaining) == (2, 2)
        assert report.error is not None and "server gone" in report.error
        first = spool.pending()[0]
        assert first.request()["data"]["i"] == 2 and first.attempts == 1 and first.last_error
        assert spool.deliver(receiver.send).complete
        assert receiver.keys() == ["k-0", "k-1", "k-2", "k-3"]


def test_a_final_refusal_is_kept_aside_not_dropped(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path / "server.db")
    with Spool(tmp_path / "spool.db") as spool:
        for i in range(3):
            spool.put(body(i))

        def picky(entry: SpoolEntry) -> None:
            if entry.request()["data"]["i"] == 1:
                raise WrongExpectedVersion("s", 0, 3)
            receiver.send(entry)

        report = spool.deliver(picky)
        assert (report.delivered, report.rejected, report.remaining) == (2, 1, 0)
        (rejected,) = spool.rejected()
        assert json.loads(rejected.body)["data"] == {"i": 1}
        assert "WrongExpectedVersion" in rejected.reason
        assert spool.status().rejected == 1
        assert receiver.keys() == ["k-0", "k-2"]


def test_a_full_spool_refuses_counts_and_keeps_what_it_has(tmp_path: Path) -> None:
    size = len(body(0))
    with Spool(tmp_path / "spool.db", max_bytes=size * 2) as spool:
        spool.put(body(0))
        spool.put(body(1))
        with pytest.raises(SpoolFull) as info:
            spool.put(body(2))
        assert isinstance(info.value, StoreUnavailable) and not info.value.spooled
        assert info.value.limit == size * 2 and "full" in str(info.value)
        with pytest.raises(SpoolFull):
            spool.put(body(3))
        status = spool.status()
        assert (status.pending, status.refused) == (2, 2)
        spool.ack(spool.pending()[0].id)
        spool.put(body(4))
        assert [e.request()["data"]["i"] for e in spool.pending()] == [1, 4]


@pytest.mark.parametrize(
    "request_body",
    ["not json", json.dumps({"type": "a"}), json.dumps({"events": [{"type": "a", "idempotency_key": "k"}, {}]}), "[]"],
)
def test_requests_without_keys_are_refused(tmp_path: Path, request_body: str) -> None:
    with Spool(tmp_path / "spool.db") as spool, pytest.raises(ConfigurationError):
        spool.put(request_body)


def test_invalid_limit(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        Spool(tmp_path / "spool.db", max_bytes=0)


def test_a_unexpected_exception_stops_delivery(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.db") as spool:
        spool.put(body(0))

        def broken(entry: SpoolEntry) -> None:
            raise OSError("network down")

        assert spool.deliver(broken).error == "OSError: network down"
        assert spool.status().pending == 1

        def invalid(entry: SpoolEntry) -> None:
            raise ValidationError("bad", field="data", rule="json_object")

        assert spool.deliver(invalid).rejected == 1


CRASHING_FLUSH = textwrap.dedent(
    """
    import os, signal, sqlite3, sys
    from meshlog.spool import Spool

    server = sqlite3.connect(sys.argv[2], isolation_level=None)
    sent = 0

    def send(entry):
        global sent
        key = entry.request()["idempotency_key"]
        server.execute("INSERT OR IGNORE INTO got (key, body) VALUES (?, ?)", (key, entry.body))
        sent += 1
        if sent == 3:
            # The server has committed entry 3; die before the spool can forget it.
            os.kill(os.getpid(), signal.SIGKILL)

    Spool(sys.argv[1]).deliver(send)
    """
)


def test_a_flush_killed_midway_redelivers_without_duplicates(tmp_path: Path) -> None:
    receiver = Receiver(tmp_path / "server.db")
    spool_path = tmp_path / "spool.db"
    with Spool(spool_path) as spool:
        for i in range(6):
            spool.put(body(i))
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_FLUSH, str(spool_path), str(tmp_path / "server.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -9, done.stderr
    with Spool(spool_path) as spool:
        # Entries 0 and 1 were acknowledged; entry 2 was committed by the server but is still pending.
        assert [e.request()["data"]["i"] for e in spool.pending()] == [2, 3, 4, 5]
        assert spool.deliver(receiver.send).complete
    assert receiver.calls == 4
    assert receiver.keys() == [f"k-{i}" for i in range(6)]
