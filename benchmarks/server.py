"""Benchmark ``meshlog serve``: single-event and 100-event batch POSTs from 32 keep-alive HTTP clients, against
the library writing directly to the same store in the same run.

    python -m benchmarks.server                     # PostgreSQL and SQLite, every server variant (about 4 minutes)
    python -m benchmarks.server --quick             # a smoke test (under a minute)
    python -m benchmarks.server --dsn URL --clients 32 --seconds 10 --stores postgres

The server is a real subprocess on a free port: ``meshlog serve`` as shipped, ``meshlog serve --workers 2
--no-access-log`` (the configuration docs/server.md recommends on a 2-core machine), and for comparison uvicorn
run directly on ``meshlog.server:create_app`` (``--factory``) without the access log, with the pure-Python event
loop and HTTP parser, and with 2 worker processes. Each client is one HTTP/1.1 keep-alive connection with one
request in flight; the load generator runs in this process (httpx, one event loop), in 1 or 2 separate bare
processes (httpx, or ``--generator raw``: a minimal HTTP/1.1 client on asyncio streams), or is ``wrk``
(``--generator wrk``, C, Debian's ``wrk`` package), which costs the least CPU and so shows best what the server
itself can do. The generator shares the machine's cores with the server and PostgreSQL: the CPU time of each is
measured in every window and printed (PostgreSQL's counts the backends alive at both ends of the window only).

    python -m benchmarks.server --variants serve-workers-2 --generator wrk      # the targets, as shipped
    python -m benchmarks.server --variants serve-workers-2 --generator wrk --stores postgres --repeat 3

``--repeat N`` measures each HTTP case N times on the same server: the targets must hold in every run (the
machine is shared, so one window is not enough to call a result reproducible). Every line also gives the
server's CPU time per request, which varies less than requests/s from one window to the next.

Results: ``benchmarks/results/server-latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx

import meshlog
from benchmarks.common import (
    AGENTS,
    EVENT_TYPE,
    PAYLOAD,
    PAYLOAD_BYTES,
    create_schema,
    drop_schema,
    dsn,
    latency_figures,
    meshlog_pg_url,
    scratch_schema,
    server_settings,
    server_version,
)
from benchmarks.report import RESULTS_DIR
from meshlog.events import NewEvent

BATCH_SIZE: Final = 100
STARTUP_TIMEOUT: Final = 30.0
SINGLE_TARGET_RPS: Final = 2000.0
SINGLE_TARGET_P99_MS: Final = 20.0
BATCH_TARGET_RATIO: Final = 0.60
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
Figures = dict[str, Any]


# -- the servers -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Variant:
    key: str
    title: str
    uvicorn_args: tuple[str, ...] | None
    """None: ``meshlog serve``; else uvicorn run directly on the app factory with these options."""
    serve_args: tuple[str, ...] = ()
    """More options of ``meshlog serve``."""
    workers: int = 1


VARIANTS: Final = (
    Variant("serve", "meshlog serve (uvloop, httptools, access log on, 1 process)", None),
    Variant(
        "serve-workers-2",
        "meshlog serve --workers 2 --no-access-log",
        None,
        ("--workers", "2", "--no-access-log"),
        workers=2,
    ),
    Variant("no-access-log", "uvicorn --factory, uvloop, httptools, --no-access-log", ("--no-access-log",)),
    Variant(
        "asyncio-h11",
        "uvicorn --factory, --loop asyncio --http h11, --no-access-log",
        ("--loop", "asyncio", "--http", "h11", "--no-access-log"),
    ),
    Variant(
        "workers-2",
        "uvicorn --factory, uvloop, httptools, --no-access-log, --workers 2",
        ("--no-access-log",),
        workers=2,
    ),
)
GENERATOR_MODES: Final = {
    "inproc": (0, "httpx", "httpx, in this process (1 event loop)"),
    "1proc": (1, "httpx", "httpx, 1 separate process"),
    "2proc": (2, "httpx", "httpx, 2 separate processes"),
    "raw": (1, "raw", "raw asyncio streams (not httpx), 1 separate process"),
    "wrk": (1, "wrk", "wrk (C, 2 threads; Debian's wrk package)"),
}
"""How the load is generated: (processes, 0 for this one; the client; the title)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _meshlog_command() -> list[str]:
    script = Path(sys.executable).parent / "meshlog"
    if script.exists():
        return [str(script)]
    found = shutil.which("meshlog")
    if found:
        return [found]
    return [sys.executable, "-c", "from meshlog.cli import main; main()"]


class ServerProcess:
    """A server subprocess (in a process group of its own, so that uvicorn's workers end with it)."""

    def __init__(self, variant: Variant, url: str) -> None:
        self.variant = variant
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "MESHLOG_URL": url}
        if variant.uvicorn_args is None:
            argv = [
                *_meshlog_command(), "serve", "--url", url, "--port", str(self.port), "--no-migrate",
                *variant.serve_args,
            ]  # fmt: skip
        else:
            workers = ["--workers", str(variant.workers)] if variant.workers > 1 else []
            argv = [
                sys.executable, "-m", "uvicorn", "--factory", "meshlog.server:create_app",
                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
                *variant.uvicorn_args, *workers,
            ]  # fmt: skip
            env["MESHLOG_URL"] = url
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        workers = self.variant.workers
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200 and (
                    len(self.pids()) > workers  # the supervisor and its workers are up
                    or workers == 1
                ):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not become ready:\n{self.output()}")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        return descendants(self.process.pid)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


# -- CPU accounting ------------------------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    parents: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat(pid)
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    with open("/proc/stat", encoding="ascii") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]  # idle, iowait
    return (sum(parts[:8]) - idle) / CLK_TCK


class CpuSampler:
    """Samples, at the start and the end of a window, the CPU time of the server, of PostgreSQL's processes and
    of the load generator (a thread, so that it samples on time while this process's event loop is busy)."""

    def __init__(self, start: float, end: float, server: Callable[[], list[int]], generator: Callable[[], list[int]]):
        self.start, self.end = start, end
        self.server, self.generator = server, generator
        self.figures: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _snapshot(self) -> dict[str, float]:
        postgres = [pid for pid in _all_pids() if _comm(pid) == "postgres"]
        return {
            "server": cpu_seconds(self.server()),
            "generator": cpu_seconds(self.generator()),
            "postgresql": cpu_seconds(postgres),
            "machine": machine_busy_seconds(),
        }

    def _run(self) -> None:
        time.sleep(max(0.0, self.start - time.time()))
        first = self._snapshot()
        time.sleep(max(0.0, self.end - time.time()))
        last = self._snapshot()
        span = self.end - self.start
        self.figures = {f"cpu_{k}_cores": (last[k] - first[k]) / span for k in first}

    def result(self) -> dict[str, float]:
        self._thread.join()
        return self.figures


# -- the load generator ------------------------------------------------------------------------------------------
def _event(client: int, n: int) -> dict[str, Any]:
    return {"type": EVENT_TYPE, "data": PAYLOAD, "task_id": f"http-{client}", "agent_id": f"agent-{n % AGENTS}"}


def _body(kind: str, client: int) -> bytes:
    if kind == "single":
        value: Any = _event(client, client)
    else:
        value = {"events": [_event(client, n) for n in range(BATCH_SIZE)]}
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, far cheaper in CPU than httpx: it tells what the
    server can do when the load generator costs little."""

    def __init__(self, base_url: str) -> None:
        host_port = base_url.removeprefix("http://")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode("ascii")
        self.writer.write(head + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def generate(
    base_url: str, kind: str, clients: Sequence[int], start: float, end: float, client_kind: str = "httpx"
) -> dict[str, Any]:
    """``len(clients)`` keep-alive clients POSTing ``kind`` bodies back to back until ``end`` (a wall-clock time).
    Counts the requests answered 201 that completed within [start, end] and their latencies."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def one(client_id: int) -> None:
        body = _body(kind, client_id)
        raw = RawClient(base_url) if client_kind == "raw" else None
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as client:
            while time.time() < end:
                began = time.time()
                t0 = time.perf_counter()
                try:
                    if raw is not None:
                        status = str(await raw.post("/v1/events", body))
                    else:
                        response = await client.post("/v1/events", content=body, headers=headers)
                        status = str(response.status_code)
                except (httpx.HTTPError, OSError, asyncio.IncompleteReadError) as exc:
                    status = type(exc).__name__
                elapsed = time.perf_counter() - t0
                done = began + elapsed
                if start <= began and done <= end:
                    if status == "201":
                        latencies.append(elapsed)
                    else:
                        errors[status] = errors.get(status, 0) + 1
        if raw is not None:
            await raw.aclose()

    await asyncio.gather(*(one(c) for c in clients))
    return {"latencies": latencies, "errors": errors}


def _generator_main(spec: str) -> int:
    """``--generate SPEC``: run :func:`generate` in this bare process and print its result as JSON."""
    args = json.loads(spec)
    result = asyncio.run(
        generate(args["base_url"], args["kind"], args["clients"], args["start"], args["end"], args["client"])
    )
    sys.stdout.write(json.dumps(result))
    return 0


def http_load(
    server: ServerProcess, kind: str, clients: int, mode: str, warmup: float, seconds: float
) -> dict[str, Any]:
    """Load ``server`` with ``clients`` clients generated as ``mode`` says (see GENERATOR_MODES)."""
    procs, client_kind, _ = GENERATOR_MODES[mode]
    if client_kind == "wrk":
        return wrk_load(server, kind, clients, warmup, seconds)
    lead = 0.3 if procs == 0 else 1.5  # time for the generator processes to import httpx and connect
    start = time.time() + lead + warmup
    end = start + seconds
    children: list[subprocess.Popen[bytes]] = []
    ids = list(range(clients))
    if procs == 0:
        sampler = CpuSampler(start, end, server.pids, lambda: [os.getpid()])
        parts = [asyncio.run(generate(server.base_url, kind, ids, start, end, client_kind))]
    else:
        for p in range(procs):
            spec = {
                "base_url": server.base_url,
                "kind": kind,
                "clients": ids[p::procs],
                "start": start,
                "end": end,
                "client": client_kind,
            }
            argv = [sys.executable, "-m", "benchmarks.server", "--generate", json.dumps(spec)]
            children.append(subprocess.Popen(argv, stdout=subprocess.PIPE))
        sampler = CpuSampler(start, end, server.pids, lambda: [c.pid for c in children])
        parts = []
        for child in children:
            out, _ = child.communicate(timeout=end - time.time() + 120)
            if child.returncode != 0:
                raise RuntimeError(f"a load generator process failed with {child.returncode}")
            parts.append(json.loads(out))
    latencies = [x for part in parts for x in part["latencies"]]
    errors: dict[str, int] = {}
    for part in parts:
        for status, n in part["errors"].items():
            errors[status] = errors.get(status, 0) + n
    per_request = 1 if kind == "single" else BATCH_SIZE
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / seconds,
        "events_per_s": len(latencies) * per_request / seconds,
        **latency_figures(latencies),
        "errors": errors,
        **sampler.result(),
    }


_WRK_UNITS: Final = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _wrk_script(kind: str, clients: int, folder: Path) -> Path:
    """A wrk Lua script POSTing the same bodies as the other generators (one per client, in turn)."""
    bodies = ", ".join(f"[==[{_body(kind, c).decode()}]==]" for c in range(clients))
    script = folder / f"{kind}.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"local bodies = {{{bodies}}}\nlocal n = 0\n"
        "request = function()\n  n = n + 1\n"
        '  return wrk.format(nil, "/v1/events", nil, bodies[(n % #bodies) + 1])\nend\n',
        encoding="utf-8",
    )
    return script


def _wrk_ms(text: str) -> float:
    number = text.rstrip("usm")
    return float(number) * _WRK_UNITS[text[len(number) :]]


def wrk_load(server: ServerProcess, kind: str, clients: int, warmup: float, seconds: float) -> dict[str, Any]:
    """``clients`` keep-alive connections from wrk (C, 2 threads), a warm-up run, then the measured one."""
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("the wrk generator needs wrk: apt-get install wrk")
    with tempfile.TemporaryDirectory() as folder:
        script = _wrk_script(kind, clients, Path(folder))

        def run(duration: float) -> tuple[subprocess.Popen[str], float, float]:
            argv = [binary, "-t2", f"-c{clients}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(script)]
            began = time.time()
            return subprocess.Popen([*argv, server.base_url], stdout=subprocess.PIPE, text=True), began, duration

        if warmup > 0:
            proc, _, _ = run(warmup)
            proc.communicate(timeout=warmup + 60)
        proc, began, duration = run(seconds)
        sampler = CpuSampler(began + 0.2, began + duration - 0.1, server.pids, lambda: [proc.pid])
        out, _ = proc.communicate(timeout=duration + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed with {proc.returncode}:\n{out}")
    percentiles: dict[str, float] = {}
    requests, elapsed, non_2xx = 0, seconds, 0
    for line in out.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] in {"50%", "99%"}:
            percentiles[words[0]] = _wrk_ms(words[1])
        elif len(words) >= 4 and words[1] == "requests" and words[2] == "in":
            requests, elapsed = int(words[0]), _wrk_ms(words[3].rstrip(",")) / 1000.0
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            non_2xx = int(words[-1])
    per_request = 1 if kind == "single" else BATCH_SIZE
    ok = requests - non_2xx
    return {
        "requests": ok,
        "requests_per_s": ok / elapsed,
        "events_per_s": ok * per_request / elapsed,
        "p50_ms": percentiles.get("50%", float("nan")),
        "p99_ms": percentiles.get("99%", float("nan")),
        "max_ms": float("nan"),
        "errors": {"non-2xx": non_2xx} if non_2xx else {},
        **sampler.result(),
    }


# -- the library directly ------------------------------------------------------------------------------------
def direct_load(url: str, kind: str, threads: int, warmup: float, seconds: float) -> dict[str, Any]:
    """``threads`` threads sharing one ``meshlog.connect(url)``: ``emit`` (kind single) or ``emit_batch`` of 100."""
    log = meshlog.connect(url, migrate=False)
    start = time.time() + 0.1 + warmup
    end = start + seconds
    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            loop(i)
        except BaseException as exc:
            failures.append(exc)
            raise

    def loop(i: int) -> None:
        batch = [
            NewEvent(type=EVENT_TYPE, data=PAYLOAD, task_id=f"direct-{i}", agent_id=f"agent-{n % AGENTS}")
            for n in range(BATCH_SIZE)
        ]
        while time.time() < end:
            began = time.time()
            t0 = time.perf_counter()
            if kind == "single":
                log.emit(EVENT_TYPE, PAYLOAD, task_id=f"direct-{i}", agent_id=f"agent-{i % AGENTS}")
            else:
                log.emit_batch(batch)
            elapsed = time.perf_counter() - t0
            if start <= began and began + elapsed <= end:
                latencies[i].append(elapsed)

    try:
        sampler = CpuSampler(start, end, list, lambda: [os.getpid()])
        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        log.close()
    if failures:
        raise RuntimeError(f"{len(failures)} writer thread(s) failed") from failures[0]
    flat = [x for part in latencies for x in part]
    per_request = 1 if kind == "single" else BATCH_SIZE
    return {
        "requests": len(flat),
        "requests_per_s": len(flat) / seconds,
        "events_per_s": len(flat) * per_request / seconds,
        **latency_figures(flat),
        **sampler.result(),
    }


# -- the run -------------------------------------------------------------------------------------------------
@contextmanager
def scratch_store(kind: str, admin_dsn: str) -> Iterator[str]:
    """A fresh, migrated store: a PostgreSQL schema (dropped at the end) or a SQLite file in a temp dir."""
    if kind == "postgres":
        schema = scratch_schema("server")
        create_schema(admin_dsn, schema)
        try:
            url = meshlog_pg_url(admin_dsn, schema)
            meshlog.connect(url).close()
            yield url
        finally:
            drop_schema(admin_dsn, schema)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="meshlog-bench-server-"))
        try:
            url = f"sqlite:///{tmp / 'bench.db'}"
            meshlog.connect(url).close()
            yield url
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _note(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _cpu_per_request(f: Figures) -> float:
    """The server's CPU time per request in microseconds (steadier than requests/s on a shared machine)."""
    rate, cores = f["requests_per_s"], f.get("cpu_server_cores", 0.0)
    return cores / rate * 1e6 if rate and cores else float("nan")


def _line(label: str, f: Figures) -> str:
    errors = sum(f.get("errors", {}).values())
    return (
        f"{f['requests_per_s']:>9,.0f} req/s {f['events_per_s']:>9,.0f} ev/s  p50 {f['p50_ms']:6.2f} ms  "
        f"p99 {f['p99_ms']:6.2f} ms  cpu server {f.get('cpu_server_cores', 0):.2f} gen "
        f"{f.get('cpu_generator_cores', 0):.2f} pg {f.get('cpu_postgresql_cores', 0):.2f} all "
        f"{f.get('cpu_machine_cores', 0):.2f}  server {_cpu_per_request(f):.0f} us/req"
        + (f"  errors {errors}" if errors else "")
        + f"  {label}"
    )


def run_store(
    kind: str, admin_dsn: str, variants: Sequence[Variant], modes: Sequence[str], args: argparse.Namespace
) -> dict[str, Any]:
    out: dict[str, Any] = {"direct": {}, "http": {}}
    clients, warmup, seconds = args.clients, args.warmup, args.seconds
    with scratch_store(kind, admin_dsn) as url:
        for name, k, threads in (
            ("single", "single", clients),
            ("batch-1-writer", "batch", 1),
            (f"batch-{clients}-threads", "batch", clients),
        ):
            f = direct_load(url, k, threads, warmup, seconds)
            out["direct"][name] = f
            _note(_line(f"{kind} library directly: {name}", f))
        for variant in variants:
            server = ServerProcess(variant, url)
            try:
                for mode in modes if variant.key == "serve" else [args.generator]:
                    for k in ("single", "batch"):
                        runs = []
                        for n in range(args.repeat):
                            f = http_load(server, k, clients, mode, warmup, seconds)
                            runs.append(f)
                            label = f" (run {n + 1} of {args.repeat})" if args.repeat > 1 else ""
                            _note(_line(f"{kind} {variant.key}, generator {mode}: {k}{label}", f))
                        f = combine(runs)
                        f["generator"] = GENERATOR_MODES[mode][2]
                        out["http"].setdefault(variant.key, {}).setdefault(mode, {})[k] = f
            finally:
                server.stop()
        with meshlog.connect(url, migrate=False) as log:
            out["events_stored"] = log.head_position()
    return out


def combine(runs: Sequence[Figures]) -> Figures:
    """The figures of repeated runs of one case: the median run by requests/s, with every run under ``runs`` and
    the worst throughput and p99 over them (the targets must hold in every run)."""
    ordered = sorted(runs, key=lambda f: f["requests_per_s"])
    median: Figures = dict(ordered[(len(ordered) - 1) // 2])
    if len(runs) > 1:
        median["runs"] = list(runs)
    median["worst_requests_per_s"] = ordered[0]["requests_per_s"]
    median["worst_events_per_s"] = min(f["events_per_s"] for f in runs)
    median["worst_p99_ms"] = max(f["p99_ms"] for f in runs)
    return median


def _range(f: Figures, key: str, fmt: str) -> str:
    values = [r[key] for r in f.get("runs", [f])]
    low, high = min(values), max(values)
    return format(low, fmt) if low == high else f"{format(low, fmt)}-{format(high, fmt)}"


def targets(kind: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    direct = result["direct"]
    reference = max(v["events_per_s"] for k, v in direct.items() if k.startswith("batch"))
    rows: list[dict[str, Any]] = []
    for variant, modes in result["http"].items():
        for mode, figures in modes.items():
            single, batch = figures["single"], figures["batch"]
            rps = single.get("worst_requests_per_s", single["requests_per_s"])
            p99 = single.get("worst_p99_ms", single["p99_ms"])
            batch_events = batch.get("worst_events_per_s", batch["events_per_s"])
            runs = len(single.get("runs", [single]))
            label_runs = f", worst of {runs} runs" if runs > 1 else ""
            label = f"{kind}, {variant}, {GENERATOR_MODES[mode][2]}{label_runs}"
            rows.append(
                {
                    "case": label,
                    "target": f"single POST >= {SINGLE_TARGET_RPS:,.0f}/s",
                    "measured": f"{rps:,.0f}/s = {rps / SINGLE_TARGET_RPS:.2f}x"
                    + (f" (runs: {_range(single, 'requests_per_s', ',.0f')}/s)" if runs > 1 else ""),
                    "pass": rps >= SINGLE_TARGET_RPS,
                }
            )
            rows.append(
                {
                    "case": label,
                    "target": f"single POST p99 <= {SINGLE_TARGET_P99_MS:.0f} ms",
                    "measured": f"{p99:.1f} ms = {p99 / SINGLE_TARGET_P99_MS:.2f}x"
                    + (f" (runs: {_range(single, 'p99_ms', '.1f')} ms)" if runs > 1 else ""),
                    "pass": p99 <= SINGLE_TARGET_P99_MS,
                }
            )
            ratio = batch_events / reference if reference else 0.0
            rows.append(
                {
                    "case": label,
                    "target": f"batch POST >= {BATCH_TARGET_RATIO:.0%} of direct emit_batch",
                    "measured": f"{batch_events:,.0f} vs {reference:,.0f} ev/s = {ratio:.1%}",
                    "pass": ratio >= BATCH_TARGET_RATIO,
                }
            )
    return rows


def render(data: dict[str, Any]) -> str:
    lines = []
    for kind, result in data["results"].items():
        lines.append(f"\n{kind}: {result['events_stored']:,} events stored")
        lines.append(
            f"  {'case':<78} {'req/s':>9} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu srv/gen/pg/all':>20}"
            f" {'srv us/req':>10}"
        )
        rows: list[tuple[str, Figures]] = [(f"library directly, {k}", v) for k, v in result["direct"].items()]
        for variant, modes in result["http"].items():
            for mode, figures in modes.items():
                for k, f in figures.items():
                    rows.append((f"{variant}, {GENERATOR_MODES[mode][2]}, {k}", f))
        for label, f in rows:
            cpu = "/".join(
                f"{f.get(f'cpu_{k}_cores', 0.0):.2f}" for k in ("server", "generator", "postgresql", "machine")
            )
            errors = sum(f.get("errors", {}).values())
            lines.append(
                f"  {label:<78} {f['requests_per_s']:>9,.0f} {f['events_per_s']:>9,.0f} {f['p50_ms']:>8.2f} "
                f"{f['p99_ms']:>8.2f} {cpu:>20} {_cpu_per_request(f):>10.0f}"
                + (f"  ({errors} errors)" if errors else "")
            )
    lines.append("\ntargets:")
    for row in data["targets"]:
        verdict = "PASS" if row["pass"] else "FAIL"
        lines.append(f"  {verdict}  {row['case']:<70} {row['target']:<44} {row['measured']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, meshlog serve only: a smoke test")
    parser.add_argument("--dsn", default=None, help="PostgreSQL URL (default $MESHLOG_BENCH_DSN or local test db)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients (default 32)")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per case (default 4; quick 2)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before each window (default 1; quick 0.5)")
    parser.add_argument("--stores", default="postgres,sqlite", help="comma-separated: postgres, sqlite")
    parser.add_argument("--variants", default=None, help=f"comma-separated of {','.join(v.key for v in VARIANTS)}")
    parser.add_argument(
        "--generator",
        choices=list(GENERATOR_MODES),
        default="raw",
        help="the load generator of the variants other than meshlog serve (default raw)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each HTTP case N times in a row on the same server; the targets take the worst run",
    )
    parser.add_argument("--no-save", action="store_true", help="do not write the JSON results")
    parser.add_argument("--generate", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate:
        return _generator_main(args.generate)

    admin_dsn = args.dsn or dsn()
    args.seconds = args.seconds or (2.0 if args.quick else 4.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    keys = (args.variants or ("serve" if args.quick else ",".join(v.key for v in VARIANTS))).split(",")
    variants = [v for v in VARIANTS if v.key in keys]
    if len(variants) != len(keys):
        raise SystemExit(f"unknown variant in {keys}; known: {', '.join(v.key for v in VARIANTS)}")
    modes = ["inproc", "2proc"] if args.quick else list(GENERATOR_MODES)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if set(stores) - {"postgres", "sqlite"}:
        raise SystemExit("--stores takes postgres and/or sqlite")

    print(
        f"meshlog {meshlog.__version__} server benchmark: {args.clients} clients, {args.seconds:g} s per case after "
        f"{args.warmup:g} s warm-up, {os.cpu_count()} CPUs, PostgreSQL {server_version(admin_dsn)}, "
        f"payload {PAYLOAD_BYTES} bytes; the load generator shares the CPUs with the server and PostgreSQL",
        flush=True,
    )
    started = time.perf_counter()
    results = {kind: run_store(kind, admin_dsn, variants, modes, args) for kind in stores}
    data: dict[str, Any] = {
        "meta": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python -m benchmarks.server", *(argv if argv is not None else sys.argv[1:])]),
            "clients": args.clients,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "batch_size": BATCH_SIZE,
            "payload_bytes": PAYLOAD_BYTES,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "postgresql": server_version(admin_dsn),
            "postgresql_settings": server_settings(admin_dsn),
            "variants": {v.key: v.title for v in variants},
            "generator_modes": {m: GENERATOR_MODES[m][2] for m in modes},
            "generator_for_other_variants": GENERATOR_MODES[args.generator][2],
            "elapsed_s": round(time.perf_counter() - started, 1),
        },
        "results": results,
        "targets": [row for kind, result in results.items() for row in targets(kind, result)],
    }
    print(render(data), flush=True)
    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / "server-latest.json"
        path.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n", encoding="utf-8")
        print(f"results: {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
