"""Tables and target verdicts from a results file.

``python -m benchmarks.report [results.json] [--markdown]`` prints them again from a saved run (default
``benchmarks/results/latest.json``); ``--markdown`` prints the tables docs/benchmarks.md shows.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from benchmarks.subjects import COPY_PG, EVENTSOURCING_PG, MESHLOG_PG, MESHLOG_SQLITE

RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"
COLUMNS: Final = (
    (MESHLOG_PG, "meshlog PostgreSQL"),
    (MESHLOG_SQLITE, "meshlog SQLite"),
    (EVENTSOURCING_PG, "eventsourcing PostgreSQL"),
    (COPY_PG, "COPY ceiling (PostgreSQL)"),
)

Results = dict[str, dict[str, dict[str, float]]]


@dataclass(frozen=True, slots=True)
class Row:
    benchmark: str
    figure: str
    title: str
    unit: str
    labels: dict[str, str] | None = None
    """Column label -> the result label to show there (default: the column's own label)."""


def _rows(sizes: dict[str, Any]) -> list[Row]:
    table = f"{int(sizes.get('table_events', 0)):,}"
    stream = f"{int(sizes.get('stream_events', 0)):,}"
    batch = int(sizes.get("batch_size", 100))
    writers = int(sizes.get("writers", 8))
    replayed = int(sizes.get("replay_events", 100))
    return [
        Row("single_emit", "events_per_s", "single emit, 1 writer", "events/s"),
        Row("single_emit", "p50_ms", "single emit, 1 writer: latency p50", "ms"),
        Row("single_emit", "p99_ms", "single emit, 1 writer: latency p99", "ms"),
        Row("concurrent_writers", "events_per_s", f"single emits, {writers} writer threads", "events/s"),
        Row("concurrent_writers", "p50_ms", f"single emits, {writers} writer threads: latency p50", "ms"),
        Row("concurrent_writers", "p99_ms", f"single emits, {writers} writer threads: latency p99", "ms"),
        Row("batch_100", "events_per_s", f"batches of {batch}, 1 writer", "events/s"),
        Row("batch_100", "events_per_s", "one COPY of all the batch rows", "events/s", {COPY_PG: f"{COPY_PG}-single"}),
        Row("read_stream", "p50_ms", f"read one {stream}-event stream: p50", "ms"),
        Row(
            "read_stream",
            "p50_ms",
            f"read one {stream}-event stream, state JSON-decoded: p50",
            "ms",
            {EVENTSOURCING_PG: f"{EVENTSOURCING_PG}+decode"},
        ),
        Row("agent_query", "p50_ms", f"last 100 events of an agent, {table} events: p50", "ms"),
        Row("agent_query", "p99_ms", f"last 100 events of an agent, {table} events: p99", "ms"),
        Row("replay", "p50_ms", f"replay {replayed} events: p50", "ms"),
        Row("replay", "p99_ms", f"replay {replayed} events: p99", "ms"),
        Row("load", "events_per_s", f"bulk load of the {table}-event table (batches of 1,000)", "events/s"),
        Row("memory", "baseline_rss_mb", "loader RSS before emitting", "MB"),
        Row("memory", "peak_rss_mb", f"loader peak RSS (ru_maxrss) emitting {table} events", "MB"),
        Row("memory", "vm_hwm_mb", f"loader peak RSS (VmHWM) emitting {table} events", "MB"),
    ]


def _format(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "—"
    if unit == "events/s":
        return f"{value:,.0f}"
    if unit == "MB":
        return f"{value:,.1f}"
    if value < 10:
        return f"{value:.2f}"
    return f"{value:,.1f}"


def _get(results: Results, benchmark: str, label: str, figure: str) -> float | None:
    value = results.get(benchmark, {}).get(label, {}).get(figure)
    return None if value is None else float(value)


def figure_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    results: Results = data["results"]
    header = ["benchmark", "unit", *(title for _, title in COLUMNS)]
    body: list[list[str]] = []
    for row in _rows(data.get("sizes", {})):
        if row.benchmark not in results:
            continue
        cells = []
        for column, _ in COLUMNS:
            if row.labels is None:
                label = column
            elif column in row.labels:
                label = row.labels[column]
            else:
                cells.append("—")
                continue
            cells.append(_format(_get(results, row.benchmark, label, row.figure), row.unit))
        if all(c == "—" for c in cells):
            continue
        body.append([row.title, row.unit, *cells])
    return header, body


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    measured: Callable[[Results], tuple[float, float] | None]
    """(meshlog's figure, the reference figure or limit), or None when the run lacks them."""
    passes: Callable[[float], bool]
    describe: Callable[[float, float, float], str]
    """(meshlog's figure, reference, ratio) -> what was measured."""


def _pair(benchmark: str, figure: str, label: str) -> Callable[[Results], tuple[float, float] | None]:
    def measured(results: Results) -> tuple[float, float] | None:
        mine = _get(results, benchmark, MESHLOG_PG, figure)
        ref = _get(results, benchmark, label, figure)
        return None if mine is None or ref is None else (mine, ref)

    return measured


def _limit(benchmark: str, figure: str, limit: float) -> Callable[[Results], tuple[float, float] | None]:
    def measured(results: Results) -> tuple[float, float] | None:
        mine = _get(results, benchmark, MESHLOG_PG, figure)
        return None if mine is None else (mine, limit)

    return measured


def targets(sizes: dict[str, Any]) -> list[Target]:
    writers = int(sizes.get("writers", 8))
    table = int(sizes.get("table_events", 1_000_000))
    stream = int(sizes.get("stream_events", 10_000))
    return [
        Target(
            "single emit: ≥ 2.5x eventsourcing's rate",
            _pair("single_emit", "events_per_s", EVENTSOURCING_PG),
            lambda r: r >= 2.5,
            lambda m, ref, r: f"{m:,.0f} vs {ref:,.0f} events/s = {r:.2f}x",
        ),
        Target(
            "single emit: p99 ≤ 1 ms",
            _limit("single_emit", "p99_ms", 1.0),
            lambda r: r <= 1.0,
            lambda m, ref, r: f"p99 {m:.2f} ms = {r:.2f}x the limit",
        ),
        Target(
            f"{writers} writers: ≥ 5x eventsourcing's rate",
            _pair("concurrent_writers", "events_per_s", EVENTSOURCING_PG),
            lambda r: r >= 5.0,
            lambda m, ref, r: f"{m:,.0f} vs {ref:,.0f} events/s = {r:.2f}x",
        ),
        Target(
            "batches of 100: ≥ 75% of the COPY ceiling",
            _pair("batch_100", "events_per_s", COPY_PG),
            lambda r: r >= 0.75,
            lambda m, ref, r: f"{m:,.0f} vs {ref:,.0f} events/s = {r:.0%}",
        ),
        Target(
            f"read a {stream:,}-event stream: ≤ ½ eventsourcing's time",
            _pair("read_stream", "p50_ms", EVENTSOURCING_PG),
            lambda r: r <= 0.5,
            lambda m, ref, r: f"{m:.1f} vs {ref:.1f} ms = {r:.2f}x",
        ),
        Target(
            f"last 100 of an agent: p99 ≤ 5 ms at {table:,} events",
            _limit("agent_query", "p99_ms", 5.0),
            lambda r: r <= 1.0,
            lambda m, ref, r: f"p99 {m:.2f} ms = {r:.2f}x the limit",
        ),
        Target(
            f"peak RSS < 200 MB emitting {table:,} events",
            _limit("memory", "peak_rss_mb", 200.0),
            lambda r: r < 1.0,
            lambda m, ref, r: f"{m:.1f} MB = {r:.2f}x the limit",
        ),
    ]


def target_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    results: Results = data["results"]
    header = ["target (meshlog PostgreSQL)", "measured", "verdict"]
    body = []
    for target in targets(data.get("sizes", {})):
        pair = target.measured(results)
        if pair is None:
            continue
        mine, ref = pair
        ratio = mine / ref if ref else float("inf")
        body.append([target.name, target.describe(mine, ref, ratio), "PASS" if target.passes(ratio) else "FAIL"])
    return header, body


def verdicts(data: dict[str, Any]) -> dict[str, str]:
    return {row[0]: row[2] for row in target_table(data)[1]}


def render_text(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header, *body]):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in body)
    return "\n".join(lines)


def breakdown_lines(data: dict[str, Any]) -> list[str]:
    """The breakdown benchmark's figures as sentences (empty when the run has none)."""
    bd: dict[str, dict[str, float]] = data["results"].get("breakdown") or {}
    lines = []
    e = bd.get("emit")
    if e:
        fn = e["server_append_fn_ms"]
        lines.append(
            f"single emit, p50 (measured in turns): SELECT 1 round trip {e['select1_p50_ms']:.2f} ms; plain one-row "
            f"INSERT + commit into a table with meshlog's columns and indexes {e['plain_insert_commit_p50_ms']:.2f} "
            f"ms (p99 {e['plain_insert_commit_p99_ms']:.2f}); meshlog's append() called directly "
            f"{e['append_sql_p50_ms']:.2f} ms (p99 {e['append_sql_p99_ms']:.2f}), of which {fn:.2f} ms inside the "
            f"function; emit() {e['emit_p50_ms']:.2f} ms (p99 {e['emit_p99_ms']:.2f}), so "
            f"{e['emit_p50_ms'] - e['append_sql_p50_ms']:.2f} ms of client-side work per emit"
        )
    g = bd.get("group")
    if g:
        histogram = ", ".join(
            f"{k.removeprefix('groups_of_')}: {int(v)}" for k, v in g.items() if k.startswith("groups_of_")
        )
        lines.append(
            f"8 writers: {g['events_per_s']:,.0f} events/s; {int(g['append_calls'])} append calls for "
            f"{int(g['events']):,} events, mean group {g['mean_group']:.1f} requests (groups by size: {histogram}); "
            f"{g['time_in_append_share']:.0%} of the wall time inside store.append, "
            f"p50 {g['append_call_p50_ms']:.2f} ms per call; server: {g['server_append_fn_ms']:.2f} ms per "
            f"append() call, {g['server_per_request_ms']:.2f} ms per request"
        )
    gs = bd.get("group_sizes")
    if gs:
        pairs = []
        k = 1
        while f"{k}_requests_p50_ms" in gs:
            pairs.append(f"{k}: {gs[f'{k}_requests_p50_ms']:.2f} vs {gs[f'1_request_of_{k}_p50_ms']:.2f} ms")
            k *= 2
        lines.append(
            "one append() call (with commit) carrying k single-event requests vs one request of k events, "
            "p50: " + "; ".join(pairs)
        )
    b = bd.get("batch")
    if b:
        n = int(b["batch_size"])
        lines.append(
            f"batch of {n}: emit_batch p50 {b['emit_batch_p50_ms']:.2f} ms; append() called directly with the same "
            f"events pre-encoded {b['append_sql_p50_ms']:.2f} ms, of which {b['server_append_fn_ms']:.2f} ms inside "
            f"the function; per event: {b['client_us_per_event']:.1f} µs client-side (validation, encoding, "
            f"building the returned events), {b['server_us_per_event']:.1f} µs in the function, "
            f"{b['call_outside_fn_us_per_event']:.1f} µs for the rest of the call (transfer, parsing the jsonb "
            "argument, commit)"
        )
    r = bd.get("read")
    if r:
        lines.append(
            f"read {int(r['events']):,} events: read_stream p50 {r['read_stream_p50_ms']:.1f} ms; the same page "
            f"queries through psycopg: {r['psycopg_pages_jsonb_p50_ms']:.1f} ms with data and metadata decoded "
            f"from jsonb, {r['psycopg_pages_text_p50_ms']:.1f} ms fetched as text; server execution "
            f"{r['server_exec_all_pages_ms']:.1f} ms; json.loads of {int(r['events']):,} payloads alone "
            f"{r['json_loads_payloads_p50_ms']:.1f} ms"
        )
    return lines


def render(data: dict[str, Any], *, markdown: bool = False) -> str:
    draw = render_markdown if markdown else render_text
    parts = [draw(*figure_table(data))]
    header, body = target_table(data)
    if body:
        parts.append(draw(header, body))
    lines = breakdown_lines(data)
    if lines:
        title = "Where the time goes (meshlog PostgreSQL):"
        parts.append("\n".join([title, "", *(f"- {line}" for line in lines)]))
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description="Print the tables of a saved benchmark run.")
    parser.add_argument("path", nargs="?", type=Path, default=RESULTS_DIR / "latest.json")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args()
    data = json.loads(args.path.read_text(encoding="utf-8"))
    print(render(data, markdown=args.markdown))


if __name__ == "__main__":
    main()
