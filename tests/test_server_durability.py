"""SIGKILL of ``meshlog serve`` during ingest loses no acknowledged event, and retries write nothing twice.

A real ``meshlog serve`` subprocess (SQLite file store, PostgreSQL in a fresh schema) takes single events and
batches from several concurrent clients; every event answered 201 is recorded with the id the server returned.
The server is killed with SIGKILL mid-ingest and started again; each client retries the request that the kill
interrupted with the same idempotency keys. Then the store, opened directly, must hold every acknowledged event
under its acknowledged id, and every idempotency key exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import meshlog

EVENT_TYPE = "durability.probe"
CLIENTS = 6  # half post single events, half batches
BATCH = 10
INGEST_SECONDS = 1.5
STARTUP_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _meshlog_command() -> list[str]:
    script = Path(sys.executable).parent / "meshlog"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from meshlog.cli import main; main()"]


@contextmanager
def serving(url: str, log_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``meshlog serve --url url`` on a free port until ready; yields the process and its base URL. The process
    is killed on exit if it is still running."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*_meshlog_command(), "serve", "--url", url, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"meshlog serve exited with {process.returncode}: {log_path.read_text(errors='replace')}")
            try:
                if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"meshlog serve did not become ready: {log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        yield process, base_url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def _event(client: int, n: int, i: int) -> dict[str, Any]:
    return {
        "type": EVENT_TYPE,
        "data": {"client": client, "n": n, "i": i},
        "task_id": f"client-{client}",
        "agent_id": f"agent-{client}",
        "idempotency_key": f"c{client}-n{n}-i{i}",
    }


@dataclass
class Client:
    """One client thread: posts back to back until a request fails; keeps what the server acknowledged."""

    number: int
    batch: bool
    acked: dict[str, str] = field(default_factory=dict)
    """idempotency key -> the id the server answered with."""
    pending: dict[str, Any] | None = None
    """The request the kill interrupted (its outcome unknown), to retry."""
    unexpected: list[str] = field(default_factory=list)

    def body(self, n: int) -> dict[str, Any]:
        if self.batch:
            return {"events": [_event(self.number, n, i) for i in range(BATCH)]}
        return _event(self.number, n, 0)

    def record(self, response: httpx.Response) -> None:
        answer = response.json()
        for event in answer["events"] if "events" in answer else [answer["event"]]:
            key = event["idempotency_key"]
            if key in self.acked and self.acked[key] != event["id"]:
                self.unexpected.append(f"{key} acknowledged as {self.acked[key]} and as {event['id']}")
            self.acked[key] = event["id"]

    def run(self, base_url: str) -> None:
        with httpx.Client(base_url=base_url, timeout=10.0) as http:
            n = 0
            while True:
                body = self.body(n)
                try:
                    response = http.post("/v1/events", json=body)
                except httpx.TransportError:
                    self.pending = body
                    return
                if response.status_code != 201:
                    self.unexpected.append(f"{response.status_code}: {response.text[:300]}")
                    return
                self.record(response)
                n += 1

    def retry(self, base_url: str) -> None:
        if self.pending is None:
            return
        response = httpx.post(f"{base_url}/v1/events", json=self.pending, timeout=10.0)
        if response.status_code != 201:
            self.unexpected.append(f"retry: {response.status_code}: {response.text[:300]}")
            return
        self.record(response)


def _stored(url: str) -> list[meshlog.RecordedEvent]:
    events: list[meshlog.RecordedEvent] = []
    with meshlog.connect(url) as log:
        cursor: str | None = None
        while True:
            page = log.query(types=[EVENT_TYPE], limit=1000, cursor=cursor)
            events.extend(page.events)
            if not page.has_more:
                return events
            cursor = page.next_cursor


def _kill_during_ingest(url: str, tmp_path: Path) -> None:
    clients = [Client(number=c, batch=c % 2 == 1) for c in range(CLIENTS)]
    log_path = tmp_path / "server.log"
    with serving(url, log_path) as (process, base_url):
        threads = [threading.Thread(target=c.run, args=(base_url,), daemon=True) for c in clients]
        for t in threads:
            t.start()
        time.sleep(INGEST_SECONDS)
        acked_before_kill = sum(len(c.acked) for c in clients)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL
        for t in threads:
            t.join(timeout=15)
        assert not any(t.is_alive() for t in threads), "a client did not notice the kill"
    assert acked_before_kill > 0, f"nothing was acknowledged in {INGEST_SECONDS} s: {log_path.read_text()}"
    problems = [p for c in clients for p in c.unexpected]
    assert not problems, problems
    assert all(c.pending is not None for c in clients), "every client's next request must have been interrupted"
    acked_at_kill = {key: id for c in clients for key, id in c.acked.items()}

    with serving(url, log_path) as (_, base_url):
        for c in clients:
            c.retry(base_url)
    problems = [p for c in clients for p in c.unexpected]
    assert not problems, problems

    stored = _stored(url)
    by_id = {e.id: e for e in stored}
    keys = [e.idempotency_key or "" for e in stored]
    duplicates = {k for k in keys if keys.count(k) > 1} if len(set(keys)) != len(keys) else set()
    assert not duplicates, f"stored more than once: {sorted(duplicates)[:10]}"
    acked = {key: id for c in clients for key, id in c.acked.items()}
    assert acked_at_kill.items() <= acked.items(), "a retry answered with another id than the first answer"
    missing = {key: id for key, id in acked.items() if id not in by_id}
    assert not missing, f"{len(missing)} acknowledged events were lost, e.g. {list(missing.items())[:5]}"
    for key, id in acked.items():
        event = by_id[id]
        assert event.idempotency_key == key
        client, n, i = (int(part[1:]) for part in key.split("-"))
        assert event.data == {"client": client, "n": n, "i": i}, json.dumps(event.data)
    # every retried request is now acknowledged: all events a client sent are stored, in order, without gaps
    for c in clients:
        sent = len({key for key in acked if key.startswith(f"c{c.number}-")})
        per_request = BATCH if c.batch else 1
        assert sent % per_request == 0
        positions = [by_id[acked[f"c{c.number}-n{n}-i0"]].stream_position for n in range(sent // per_request)]
        assert positions == sorted(positions)
    assert len(stored) == len(acked), "stored events that no client sent"


def test_sigkill_loses_no_acknowledged_event_sqlite(tmp_path: Path) -> None:
    _kill_during_ingest(f"sqlite:///{tmp_path / 'events.db'}", tmp_path)


@pytest.mark.postgres
def test_sigkill_loses_no_acknowledged_event_postgres(pg_url: str, tmp_path: Path) -> None:
    _kill_during_ingest(pg_url, tmp_path)
