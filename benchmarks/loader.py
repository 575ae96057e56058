"""Bulk load in a process of its own, so its peak RSS is the loader's alone.

``python -m benchmarks.loader --url URL --events N --batch B`` emits N ``llm.call`` events through meshlog's
``emit_batch`` (B per call), spread round-robin over the agents (``agent_id``) and over tasks of 100
events (``task_id``, hence stream ``task:<id>``), and prints one JSON line: rate, RSS at start, peak RSS
(``ru_maxrss``, and ``VmHWM`` as a cross-check) and RSS samples along the way.
"""

from __future__ import annotations

import argparse
import json
import time

import meshlog
from benchmarks.common import AGENTS, EVENT_TYPE, PAYLOAD, high_water_rss_mb, peak_rss_mb, rss_mb

TASK_EVENTS = 100
SAMPLES = 10


def load(url: str, events: int, batch: int, agents: int = AGENTS) -> dict[str, object]:
    log = meshlog.connect(url)
    try:
        baseline = rss_mb()
        samples: list[tuple[int, float]] = [(0, baseline)]
        every = max(batch, events // SAMPLES)
        next_sample = every
        started = time.perf_counter()
        done = 0
        while done < events:
            n = min(batch, events - done)
            log.emit_batch(
                [
                    meshlog.NewEvent(
                        type=EVENT_TYPE,
                        data=PAYLOAD,
                        agent_id=f"agent-{i % agents}",
                        task_id=f"task-{i // TASK_EVENTS}",
                    )
                    for i in range(done, done + n)
                ]
            )
            done += n
            if done >= next_sample:
                samples.append((done, rss_mb()))
                next_sample += every
        seconds = time.perf_counter() - started
    finally:
        log.close()
    return {
        "events": events,
        "batch": batch,
        "seconds": seconds,
        "events_per_s": events / seconds if seconds else 0.0,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": peak_rss_mb(),
        "vm_hwm_mb": high_water_rss_mb(),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=AGENTS)
    args = parser.parse_args()
    print(json.dumps(load(args.url, args.events, args.batch, args.agents)))


if __name__ == "__main__":
    main()
