"""The I/O-free pieces: ids, URLs, cursors, the public surface, generated code."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import meshlog
from meshlog.errors import ConfigurationError, InvalidCursor, ValidationError
from meshlog.events import default_stream, uuid7
from meshlog.query import EventFilter, decode_cursor, encode_cursor
from meshlog.stores import parse_url, redact

ROOT = Path(__file__).resolve().parent.parent


def test_uuid7_is_version_7_and_strictly_increasing() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_uuid7_random_parts_differ_across_the_pool_refills() -> None:
    # 74 random bits per id, drawn from the pool 400 ids at a time: over several refills no two ids share them.
    ids = [uuid.UUID(uuid7()).int for _ in range(2000)]
    randoms = [(i >> 64 & 0xFFF) << 62 | (i & ((1 << 62) - 1)) for i in ids]
    assert len(set(randoms)) == len(randoms)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_ids_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # The clock stands still, so parent and child make their ids in the same millisecond as the parent's last.
    now = time.time_ns()
    monkeypatch.setattr(meshlog.events, "time", types.SimpleNamespace(time_ns=lambda: now))
    uuid7()  # the parent has a sequence and random bytes left in its pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, "\n".join(uuid7() for _ in range(200)).encode())
        os._exit(0)
    os.close(write)
    mine = {uuid7() for _ in range(200)}
    with os.fdopen(read) as pipe:
        theirs = set(pipe.read().split())
    os.waitpid(pid, 0)
    assert len(theirs) == 200
    assert mine.isdisjoint(theirs)


def test_default_stream() -> None:
    assert default_stream("1", "t", "a") == "task:1"
    assert default_stream(None, "t", "a") == "trace:t"
    assert default_stream(None, None, "a") == "agent:a"
    assert default_stream(None, None, None) == "default"


@pytest.mark.parametrize(
    ("url", "kind", "target", "options"),
    [
        ("memory://", "memory", "", {}),
        ("sqlite:///meshlog.db", "sqlite", "meshlog.db", {}),
        ("sqlite:////var/lib/m.db?synchronous=normal", "sqlite", "/var/lib/m.db", {"synchronous": "normal"}),
        (
            "postgresql://u:p@h:5432/db?schema=s&sslmode=disable",
            "postgres",
            "postgresql://u:p@h:5432/db?sslmode=disable",
            {"schema": "s"},
        ),
        ("postgres://h/db", "postgres", "postgresql://h/db", {}),
    ],
)
def test_parse_url(url: str, kind: str, target: str, options: dict[str, str]) -> None:
    parsed = parse_url(url)
    assert (parsed.kind, parsed.target, parsed.options) == (kind, target, options)


@pytest.mark.parametrize("url", ["", "meshlog.db", "sqlite://", "sqlite:///x.db?nope=1", "redis://h"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_url(url)


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_url_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from meshlog.log import resolve_url

    for name in ("MESHLOG_URL", "DATABASE_URL", "PG_PRIMARY_URL"):
        monkeypatch.delenv(name, raising=False)
    assert resolve_url() == "sqlite:///./meshlog.db"
    monkeypatch.setenv("PG_PRIMARY_URL", "postgresql://pg/primary")
    assert resolve_url() == "postgresql://pg/primary"
    monkeypatch.setenv("DATABASE_URL", "postgresql://pg/db")
    assert resolve_url() == "postgresql://pg/db"
    monkeypatch.setenv("MESHLOG_URL", "memory://")
    assert resolve_url() == "memory://"
    assert resolve_url("sqlite:///given.db") == "sqlite:///given.db"


def test_cursor_round_trip_and_tampering() -> None:
    flt = EventFilter(agent_id="a", types=("x", "y"))
    cursor = encode_cursor(flt, "desc", 42)
    assert decode_cursor(cursor) == (flt, "desc", 42)
    for bad in ("", "!!!", cursor[:-3], "eyJ2IjoyfQ"):
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)


def test_public_surface_matches_all() -> None:
    public = {
        name
        for name in dir(meshlog)
        if not name.startswith("_") and not isinstance(getattr(meshlog, name), types.ModuleType)
    }
    assert public == set(meshlog.__all__) - {"__version__"}
    for name in meshlog.__all__:
        assert getattr(meshlog, name) is not None


def test_generated_sync_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_sync.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_generated_sync_code_has_no_async_left() -> None:
    for name in ("log.py", "store.py", "_commit.py", "stores/postgres.py"):
        text = (ROOT / "src" / "meshlog" / name).read_text()
        assert text.startswith("# WARNING: generated by tools/gen_sync.py")
        assert "await " not in text and "async def" not in text


def test_postgres_url_options_keep_their_encoding() -> None:
    parsed = parse_url("postgresql://h/db?schema=s&options=-c%20statement_timeout%3D5s&application_name=a%26b")
    assert parsed.options == {"schema": "s"}
    assert parsed.target == "postgresql://h/db?options=-c%20statement_timeout%3D5s&application_name=a%26b"


_JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["\x00", "\ud800", "é", "a\x00b"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children)
        | st.dictionaries(st.text() | st.integers() | st.sampled_from(["\x00k", "\udfff"]), children, max_size=3)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), _JSONISH, max_size=4))
def test_the_fast_json_check_never_accepts_what_the_full_check_rejects(value: dict[str, object]) -> None:
    from meshlog._validation import _check_json, _plain

    try:
        _check_json(value, "data")
    except ValidationError:
        assert not _plain(value)
