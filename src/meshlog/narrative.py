"""Narratives: a run of agents told as a Markdown timeline, for the person debugging it.

:func:`render_narrative` takes recorded events (a trace, a stream, a query's results) and tells, in order:
who (the agent) did what, when (clock time and offset from the first event), why (the ``user_intent`` and
``context.decision_context`` an event carries), how long it took (``duration_ms`` of LLM and tool events,
else the time since its start: ``llm.call`` → ``llm.response``, ``task.dispatched`` → ``task.result``,
``deployment_started`` → ``deployment_completed``, ``epic_started`` → ``epic_completed``), what failed and what
followed (the chain of events caused by a failure, and the later event that made up for it), and what came of
it: ``outcome.recorded`` events are folded into the event they are about. Events whose
``metadata["important"]`` is true are marked and listed at the top.

The output has a summary, highlights, a table of tasks, one timeline per trace (per stream for events without
a trace), the failures with what followed, and what was still open. It is a pure function of its arguments.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from meshlog.events import RecordedEvent
from meshlog.lineage import OUTCOME_TYPE
from meshlog.resume import ago
from meshlog.session import canonical_type, describe_counts, event_time, failure_message, is_failure

__all__ = ["describe", "format_duration", "render_narrative"]

MAX_TEXT: Final = 160
"""Longer free text is cut to this many characters."""
MAX_CHAIN: Final = 6
"""At most this many events of what followed a failure are told."""

_LLM_TYPES: Final = ("llm_call", "llm_request")
_RETRY_TYPES: Final = frozenset({"task_retry", "retry", "retry_scheduled"})
_TASK_END: Final = frozenset({"task_result", "task_result_failure", "task_failed", "task_completed", "task_succeeded"})
# A finishing event type → the type that started it and the payload key (or correlation) both share.
_STARTS: Final[Mapping[str, tuple[str, str]]] = {
    "llm_response": ("llm_call", "parent"),
    "llm_error": ("llm_call", "parent"),
    "tool_result": ("tool_call", "parent"),
    "task_result": ("task_dispatched", "task"),
    "task_result_failure": ("task_dispatched", "task"),
    "task_failed": ("task_dispatched", "task"),
    "task_completed": ("task_dispatched", "task"),
    "deployment_completed": ("deployment_started", "service"),
    "deployment_failed": ("deployment_started", "service"),
    "deploy": ("deployment_started", "service"),
    "epic_completed": ("epic_started", "epic"),
    "epic_failed": ("epic_started", "epic"),
    "test_passed": ("test_started", "epic"),
    "test_failed": ("test_started", "epic"),
}
_START_KEYS: Final = dict(_STARTS.values())
_FINISHES: Final = {begin: frozenset(f for f, (b, _) in _STARTS.items() if b == begin) for begin in _START_KEYS}
_OPEN_WORDS: Final = {"llm_call": "got no response", "tool_call": "got no result", "task_dispatched": "has no result"}


def render_narrative(events: Iterable[RecordedEvent], *, title: str | None = None, now: datetime | None = None) -> str:
    """The events as a Markdown narrative (see the module's docstring).

    ``events`` are told in position order, whatever order they come in. ``title`` defaults to the trace or
    stream they share. With ``now`` (timezone-aware) the narrative also says how long ago the run ended and how
    long open work has been waiting.
    """
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    story = _Story.build(events)
    out: list[str] = [f"# {title or story.default_title()}", ""]
    if not story.events:
        out += ["No events recorded.", ""]
        return "\n".join(out)
    out += story.summary(now)
    out += story.highlights()
    out += story.task_table()
    out += story.timelines()
    out += story.failures_section()
    out += story.open_section(now)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


# -- describing one event ----------------------------------------------------------------------------------------
def describe(event: RecordedEvent) -> str:
    """One line about the event's payload: ``"gpt-4o: 1,300 tokens, stop"``, ``"epic-003: 5 of 8 tests
    passed"``, ``"api 1.42.0 to staging"``; compact JSON for types it does not know."""
    d = event.data
    kind = canonical_type(event.type)
    text: str | None = None
    if kind in _LLM_TYPES:
        text = _join_some(_s(d, "model"), _s(d, "purpose", "prompt"))
        attempt = _i(d, "attempt")
        if attempt is not None and attempt > 1:
            text = f"{text} (attempt {attempt})" if text else f"attempt {attempt}"
    elif kind == "llm_response":
        tokens = _tokens(d)
        calls = d.get("tool_calls")
        tools = ", ".join(str(c) for c in calls) if isinstance(calls, list) and calls else None
        text = _join_some(
            _s(d, "model"),
            f"{tokens:,} tokens" if tokens is not None else None,
            _s(d, "finish_reason", "finishReason"),
            f"tools: {tools}" if tools else None,
            sep=", ",
        )
    elif kind == "llm_error":
        text = _join_some(_s(d, "model"), failure_message(d))
    elif kind == "tool_call":
        text = _join_some(_s(d, "tool", "name"), _compact(d.get("args")) if d.get("args") else None, sep=" ")
    elif kind == "tool_result":
        state = "failed" if is_failure(event) else "ok"
        detail = failure_message(d) if state == "failed" else (_compact(d.get("result")) if d.get("result") else None)
        text = _join_some(_s(d, "tool", "name"), _join_some(state, detail, sep=" "))
    elif kind == "task_dispatched":
        assignee = _s(d, "assignee", "agent")
        text = _join_some(f"to {assignee}" if assignee else None, _s(d, "title", "prompt", "capability"))
    elif kind == "task_progress":
        percent = _i(d, "percent")
        text = _join_some(
            f"{percent}%" if percent is not None else _s(d, "status"), _s(d, "message", "details"), sep=" "
        )
    elif kind in _RETRY_TYPES:
        attempt, most = _i(d, "attempt"), _i(d, "max_attempts")
        of = f"attempt {attempt}" + (f" of {most}" if most else "") if attempt else None
        backoff = _i(d, "backoff_ms")
        text = _join_some(
            of, _s(d, "reason"), f"after {format_duration(backoff)}" if backoff is not None else None, sep=", "
        )
    elif kind in _TASK_END:
        attempt = _i(d, "attempt")
        status = _s(d, "status") or ("failed" if is_failure(event) else None)
        head = _join_some(status, f"(attempt {attempt})" if attempt else None, sep=" ")
        text = _join_some(head, _s(d, "summary", "result") or failure_message(d))
    elif kind in ("user_request", "user_message"):
        said = _s(d, "request", "content", "message", "text")
        who = _s(d, "user", "user_id")
        text = _join_some(f'"{_inline(said)}"' if said else None, f"({who})" if who else None, sep=" ")
    elif kind.startswith("epic_"):
        text = _join_some(
            _s(d, "epic_id", "epic"),
            _s(d, "feature_name", "feature") or failure_message(d),
            f"{d['tests_passed']} tests passed" if _i(d, "tests_passed") is not None else None,
        )
    elif kind in ("test_started", "test_passed", "test_failed", "validation_passed", "validation_failed"):
        passed = _i(d, "passed_count", "tests_passed", "passed")
        failed = _i(d, "failed_count", "tests_failed", "failed")
        total = _i(d, "test_count", "total_count", "tests_total", "total")
        counts = None if kind == "test_started" else describe_counts(passed, total, failed, ok=not is_failure(event))
        coverage = d.get("coverage_percent", d.get("coverage"))
        text = _join_some(
            _s(d, "epic_id", "epic"),
            _join_some(counts, f"coverage {coverage}%" if isinstance(coverage, int | float) else None, sep=", "),
        )
    elif kind.startswith("deploy"):
        version, env = _s(d, "version", "docker_image"), _s(d, "environment", "env")
        target = _join_some(_s(d, "service", "app", "name"), version, f"to {env}" if env else None, sep=" ")
        text = _join_some(target, failure_message(d) if is_failure(event) else _s(d, "status", "health_status"))
    elif kind == "commit_created":
        files = _i(d, "files_changed")
        message = _s(d, "message")
        text = _join_some(
            _s(d, "hash", "sha", "commit"),
            f'"{_inline(message)}"' if message else None,
            f"({files} files)" if files is not None else None,
            sep=" ",
        )
    elif kind in ("pr_created", "pr_merged"):
        text = _join_some(_s(d, "title"), _s(d, "url", "pr_url"), sep=" ")
    elif kind.startswith("checkpoint_"):
        text = _s(d, "checkpoint_id", "id", "name")
    elif kind == "prd_updated":
        text = _join_some(_s(d, "epic_id", "epic"), _s(d, "version"), sep=" ")
    elif kind == "task_spawned":
        text = _join_some(_s(d, "description", "title"), f"({d['subagent']})" if _s(d, "subagent") else None, sep=" ")
    elif event.type == OUTCOME_TYPE:
        outcome = d.get("outcome")
        text = _outcome_text(outcome) if isinstance(outcome, Mapping) else _compact(outcome)
    if text:
        return _inline(text)
    if is_failure(event) and failure_message(d):
        return _inline(failure_message(d) or "")
    rest = {k: v for k, v in d.items() if k not in ("user_intent", "userIntent", "context")}
    return _inline(_compact(rest)) if rest else ""


def format_duration(ms: float) -> str:
    """``"14 ms"``, ``"7.3 s"``, ``"4 min 41 s"``, ``"2 h 5 min"``, ``"3 d 4 h"`` (from 48 hours)."""
    if ms < 1000:
        return f"{max(0, round(ms))} ms"
    return _clock_span(ms)


def _clock_span(ms: float) -> str:
    tenths = round(ms / 100)
    if tenths < 600:
        return f"{tenths / 10:.1f} s"
    seconds = round(ms / 1000)
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    minutes = round(ms / 60_000)
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    hours = round(ms / 3_600_000)
    return f"{hours // 24} d {hours % 24} h"


def _offset(ms: float) -> str:
    return f"+{_clock_span(max(0.0, ms))}"


# -- the story ---------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Failure:
    event: RecordedEvent
    chain: list[RecordedEvent]
    recovery: RecordedEvent | None


@dataclass(slots=True)
class _Story:
    events: list[RecordedEvent]
    """What the timeline tells: everything but the outcomes folded into their events."""
    by_id: dict[str, RecordedEvent]
    outcomes: dict[str, list[RecordedEvent]]
    children: dict[str, list[RecordedEvent]]
    start: datetime
    end: datetime
    durations: dict[str, float] = field(default_factory=dict)
    failures: dict[str, _Failure] = field(default_factory=dict)
    """Failures not caused by another failure, by event id."""

    @classmethod
    def build(cls, events: Iterable[RecordedEvent]) -> _Story:
        unique = {e.id: e for e in events}
        ordered = sorted(unique.values(), key=lambda e: e.position)
        outcomes: dict[str, list[RecordedEvent]] = {}
        told: list[RecordedEvent] = []
        for event in ordered:
            target = _outcome_target(event)
            if target is not None and target in unique:
                outcomes.setdefault(target, []).append(event)
            else:
                told.append(event)
        children: dict[str, list[RecordedEvent]] = {}
        for event in told:
            if event.parent_id is not None:
                children.setdefault(event.parent_id, []).append(event)
        times = [event_time(e) for e in ordered] or [datetime.min.replace(tzinfo=UTC)]  # unused when empty
        story = cls(told, unique, outcomes, children, min(times), max(times))
        story._measure()
        story._analyse_failures()
        return story

    # -- analysis ---------------------------------------------------------------------------------------------
    def _measure(self) -> None:
        """How long each finishing event took: its ``duration_ms`` (or ``durationMs``, ``duration_seconds``,
        ``duration_hours``), else the time since the event that started it."""
        latest_start: dict[tuple[str, str], RecordedEvent] = {}
        for event in self.events:
            kind = canonical_type(event.type)
            given = _given_duration_ms(event.data)
            start_kind, key = _STARTS.get(kind, ("", ""))
            if given is not None:
                self.durations[event.id] = given
            elif start_kind:
                start = self._start_of(event, start_kind, key, latest_start)
                if start is not None:
                    self.durations[event.id] = _ms_between(event_time(start), event_time(event))
            if kind in _START_KEYS:
                latest_start[(kind, _key(event, _START_KEYS[kind]))] = event

    def _start_of(
        self, event: RecordedEvent, start_kind: str, key: str, latest: dict[tuple[str, str], RecordedEvent]
    ) -> RecordedEvent | None:
        parent = self.by_id.get(event.parent_id or "")
        if parent is not None and canonical_type(parent.type) == start_kind:
            return parent
        if key == "parent":
            return None
        return latest.get((start_kind, _key(event, key)))

    def _analyse_failures(self) -> None:
        failing = {e.id for e in self.events if _failed(e)}
        for index, event in enumerate(self.events):
            if event.id not in failing or event.parent_id in failing:
                continue
            chain = self._followers(event, index, failing)
            recovery = self._recovery([event, *chain], failing)
            self.failures[event.id] = _Failure(event, chain, recovery)

    def _followers(self, failure: RecordedEvent, index: int, failing: set[str]) -> list[RecordedEvent]:
        """What the failure caused: its first child, that child's first child while they are failures, up to
        and including a retry; without children, the next event of the same task or stream."""
        chain: list[RecordedEvent] = []
        current = failure
        while len(chain) < MAX_CHAIN:
            kids = self.children.get(current.id)
            if not kids:
                break
            chain.append(kids[0])
            if kids[0].id not in failing or canonical_type(kids[0].type) in _RETRY_TYPES:
                break
            current = kids[0]
        if not chain:
            scope = _scope(failure)
            following = next((e for e in self.events[index + 1 :] if _scope(e) == scope), None)
            if following is not None:
                chain.append(following)
        return chain

    def _recovery(self, chain: Sequence[RecordedEvent], failing: set[str]) -> RecordedEvent | None:
        """The first later success that makes up for the outermost failure of the chain that has one."""
        for failure in reversed([e for e in chain if e.id in failing]):
            after = (e for e in self.events if e.position > failure.position and e.id not in failing)
            found = next((e for e in after if _recovers(failure, e)), None)
            if found is not None:
                return found
        return None

    # -- sections -----------------------------------------------------------------------------------------------
    def default_title(self) -> str:
        traces = {e.trace_id for e in self.by_id.values()}
        streams = {e.stream for e in self.by_id.values()}
        if not self.by_id:
            return "Narrative"
        if len(traces) == 1 and None not in traces:
            return f"Narrative of trace {next(iter(traces))}"
        if len(streams) == 1:
            return f"Narrative of stream {next(iter(streams))}"
        return f"Narrative of {len(self.by_id)} events"

    def summary(self, now: datetime | None) -> list[str]:
        everything = sorted(self.by_id.values(), key=lambda e: e.position)
        agents = list(dict.fromkeys(e.agent_id for e in everything if e.agent_id))
        who = f" by {len(agents)} {'agent' if len(agents) == 1 else 'agents'} ({', '.join(agents)})" if agents else ""
        span = format_duration(_ms_between(self.start, self.end))
        ended = f"; it ended {ago(self.end, now)}" if now is not None else ""
        n = len(self.by_id)
        lines = [
            f"{n} {'event' if n == 1 else 'events'}{who}, from {self._stamp(self.start, full=True)} to "
            f"{self._stamp(self.end, full=self._multi_day())} UTC ({span}){ended}."
        ]
        asked = next((e for e in self.events if canonical_type(e.type) in ("user_request", "user_message")), None)
        if asked is not None:
            lines.append(f"Asked: {describe(asked)}.")
        intent = next((i for e in self.events if (i := _intent_text(e.data))), None)
        if intent:
            lines.append(f"Why: {intent}.")
        facts: list[str] = []
        calls = [e for e in self.events if canonical_type(e.type) in _LLM_TYPES]
        if calls:
            counted = [_tokens(e.data) for e in self.events if canonical_type(e.type) == "llm_response"]
            tokens = [t for t in counted if t is not None]
            fact = f"{len(calls)} LLM {'call' if len(calls) == 1 else 'calls'}"
            facts.append(f"{fact}, {sum(tokens):,} tokens" if tokens else fact)
        if self.failures:
            recovered = sum(1 for f in self.failures.values() if f.recovery is not None)
            failed = sum(1 for e in self.events if _failed(e))
            count = f"{len(self.failures)} {'failure' if len(self.failures) == 1 else 'failures'}"
            if failed != len(self.failures):
                count += f" ({failed} failed events)"
            facts.append(f"{count}, {recovered} recovered")
        outcomes = sum(len(v) for v in self.outcomes.values())
        if outcomes:
            facts.append(f"{outcomes} {'outcome' if outcomes == 1 else 'outcomes'} recorded")
        if facts:
            lines.append(_capital("; ".join(facts)) + ".")
        return [line for text in lines for line in (text, "")]

    def highlights(self) -> list[str]:
        important = [e for e in self.events if _important(e)]
        if not important:
            return []
        lines = ["## Highlights", ""]
        for event in important:
            lines.append(f"- `{self._off(event)}` {self._who(event)}`{event.type}`: {describe(event) or '-'}")
        return [*lines, ""]

    def task_table(self) -> list[str]:
        tasks: dict[str, list[RecordedEvent]] = {}
        for event in self.events:
            if event.task_id:
                tasks.setdefault(event.task_id, []).append(event)
        if not tasks:
            return []
        lines = [
            "## Tasks",
            "",
            "| task | agent | status | attempts | took | failures |",
            "| --- | --- | --- | ---: | ---: | ---: |",
        ]
        for task_id, events in tasks.items():
            dispatch = next((e for e in events if canonical_type(e.type) == "task_dispatched"), None)
            ends = [e for e in events if canonical_type(e.type) in _TASK_END]
            last = ends[-1] if ends else None
            agent = (
                (last.agent_id if last else None)
                or (_s(dispatch.data, "assignee") if dispatch else None)
                or next((e.agent_id for e in events if e.agent_id), None)
                or "-"
            )
            if last is None:
                status = "no result"
            else:
                status = _s(last.data, "status") or ("failed" if _failed(last) else "succeeded")
            attempts = max((_i(e.data, "attempt") or 1 for e in events), default=1)
            began = dispatch or events[0]
            took = format_duration(_ms_between(event_time(began), event_time(last))) if last is not None else "-"
            failed = sum(1 for e in events if _failed(e))
            cells = [task_id, agent, status, str(attempts), took, str(failed)]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        return [*lines, ""]

    def timelines(self) -> list[str]:
        groups: dict[str, list[RecordedEvent]] = {}
        for event in self.events:
            groups.setdefault(_group(event), []).append(event)
        agent_tasks: dict[str, set[str]] = {}
        for event in self.events:
            if event.agent_id and event.task_id:
                agent_tasks.setdefault(event.agent_id, set()).add(event.task_id)
        shared = {agent for agent, ids in agent_tasks.items() if len(ids) > 1}
        lines: list[str] = []
        for name, events in groups.items():
            lines += [f"## Timeline: {name}" if len(groups) > 1 else "## Timeline", ""]
            for event in events:
                lines += self._event_lines(event, show_task=event.agent_id in shared)
            lines.append("")
        return lines

    def failures_section(self) -> list[str]:
        if not self.failures:
            return []
        lines = ["## Failures and what followed", ""]
        for number, failure in enumerate(self.failures.values(), start=1):
            event = failure.event
            text = f"{number}. `{self._off(event)}` {self._who(event)}`{event.type}` (#{event.position})"
            what = describe(event)
            text += f": {what}" if what else ""
            if failure.chain:
                text += "; then " + ", ".join(f"`{e.type}`" for e in failure.chain)
            text += "; " + self._recovery_text(failure) + "."
            lines.append(text)
        return [*lines, ""]

    def open_section(self, now: datetime | None) -> list[str]:
        """Work started and never finished: an LLM or tool call without an answer, a task without a result, a
        deployment, an epic or a test run that never ended."""
        items: list[str] = []
        for index, event in enumerate(self.events):
            kind = canonical_type(event.type)
            key = _START_KEYS.get(kind)
            if key is None:
                continue
            finishes = _FINISHES[kind]
            if key == "parent":
                done = any(canonical_type(e.type) in finishes for e in self.children.get(event.id, ()))
            else:
                mine = _key(event, key)
                done = any(
                    canonical_type(e.type) in finishes and _key(e, key) == mine for e in self.events[index + 1 :]
                )
            if not done:
                items.append(self._open_item(event, _OPEN_WORDS.get(kind, "never finished"), now))
        if not items:
            return []
        return ["## Still open", "", *items, ""]

    # -- pieces -------------------------------------------------------------------------------------------------
    def _event_lines(self, event: RecordedEvent, *, show_task: bool) -> list[str]:
        marks = ""
        if _failed(event):
            marks += " **failed**"
        if _important(event):
            marks += " **important**"
        what = describe(event)
        took = self.durations.get(event.id)
        head = f"- `{self._off(event)}` {self._stamp(event_time(event))} {self._who(event, show_task=show_task)}"
        head += f"`{event.type}`{marks}"
        head += f": {what}" if what else ""
        head += f"; took {format_duration(took)}" if took is not None else ""
        lines = [head]
        intent = _intent_text(event.data)
        if intent:
            lines.append(f"  - why: {intent}")
        context = event.data.get("context")
        if isinstance(context, Mapping):
            decision = _s(context, "decision_context", "decisionContext")
            if decision:
                lines.append(f"  - decision: {_inline(decision)}")
        related = self._related(event)
        if related:
            lines.append(f"  - related: {related}")
        folded = self.outcomes.get(event.id, [])
        for outcome in folded:
            lines.append(f"  - {self._outcome_line(event, outcome)}")
        target = _outcome_target(event)
        if target is not None:
            lines.append(f"  - about event {target}, not in this narrative")
        attached = getattr(event, "outcome", None)
        if not folded and isinstance(attached, Mapping):
            lines.append(f"  - outcome: {_outcome_text(attached)}")
        failure = self.failures.get(event.id)
        if failure is not None:
            if failure.chain:
                then = ", ".join(f"`{e.type}` ({self._later(event, e)})" for e in failure.chain)
                lines.append(f"  - then: {then}")
            lines.append(f"  - {self._recovery_text(failure)}")
        return lines

    def _recovery_text(self, failure: _Failure) -> str:
        found = failure.recovery
        if found is None:
            return "not recovered in this record"
        what = describe(found)
        by = f" by {found.agent_id}" if found.agent_id else ""
        return f"recovered {self._later(failure.event, found)}{by}: `{found.type}`" + (f" {what}" if what else "")

    def _outcome_line(self, event: RecordedEvent, outcome: RecordedEvent) -> str:
        data = outcome.data.get("outcome")
        text = _outcome_text(data) if isinstance(data, Mapping) else _compact(data)
        by = f" by {outcome.agent_id}" if outcome.agent_id and outcome.agent_id != event.agent_id else ""
        return f"outcome: {text} (recorded {self._later(event, outcome)}{by})"

    def _related(self, event: RecordedEvent) -> str:
        ids: list[str] = list(event.related)
        context = event.data.get("context")
        if isinstance(context, Mapping):
            listed = context.get("related_events", context.get("relatedEvents"))
            if isinstance(listed, list):
                ids += [str(i) for i in listed]
        ids = [i for i in dict.fromkeys(ids) if i != event.parent_id]
        if not ids:
            return ""
        known = [self.by_id[i] for i in ids if i in self.by_id]
        parts = [f"`{e.type}` ({self._off(e)})" for e in known]
        missing = len(ids) - len(known)
        if missing:
            parts.append(f"{missing} {'event' if missing == 1 else 'events'} not in this narrative")
        return ", ".join(parts)

    def _open_item(self, event: RecordedEvent, what: str, now: datetime | None) -> str:
        since = f", started {ago(event_time(event), now)}" if now is not None else ""
        detail = describe(event)
        detail = f" ({detail})" if detail else ""
        return f"- `{self._off(event)}` {self._who(event)}`{event.type}`{detail} {what}{since}."

    def _who(self, event: RecordedEvent, *, show_task: bool = False) -> str:
        if not event.agent_id:
            return ""
        task = f" (task {event.task_id})" if show_task and event.task_id else ""
        return f"**{event.agent_id}**{task} "

    def _off(self, event: RecordedEvent) -> str:
        return _offset(_ms_between(self.start, event_time(event)))

    def _later(self, first: RecordedEvent, then: RecordedEvent) -> str:
        return f"{_clock_span(max(0.0, _ms_between(event_time(first), event_time(then))))} later"

    def _multi_day(self) -> bool:
        return self.start.astimezone(UTC).date() != self.end.astimezone(UTC).date()

    def _stamp(self, at: datetime, *, full: bool = False) -> str:
        utc = at.astimezone(UTC)
        return utc.strftime("%Y-%m-%d %H:%M:%S" if full or self._multi_day() else "%H:%M:%S")


# -- helpers -----------------------------------------------------------------------------------------------------
def _outcome_target(event: RecordedEvent) -> str | None:
    if event.type != OUTCOME_TYPE:
        return None
    return event.parent_id or (event.related[0] if event.related else None)


def _failed(event: RecordedEvent) -> bool:
    return event.type != OUTCOME_TYPE and is_failure(event)


def _important(event: RecordedEvent) -> bool:
    return event.metadata.get("important") is True


def _group(event: RecordedEvent) -> str:
    return f"trace {event.trace_id}" if event.trace_id else f"stream {event.stream}"


def _scope(event: RecordedEvent) -> str:
    return f"task:{event.task_id}" if event.task_id else event.stream


def _key(event: RecordedEvent, key: str) -> str:
    d = event.data
    if key == "task":
        return event.task_id or event.stream
    if key == "service":
        return _s(d, "service", "app", "name") or ""
    if key == "epic":
        return _s(d, "epic_id", "epic") or ""
    if key == "tool":
        return f"{_scope(event)}/{_s(d, 'tool', 'name') or ''}"
    return ""


def _recovers(failure: RecordedEvent, event: RecordedEvent) -> bool:
    """Whether ``event`` (a later non-failure) makes up for ``failure``."""
    kind, later = canonical_type(failure.type), canonical_type(event.type)
    if kind.startswith(("deployment_", "deploy")):
        return later in ("deployment_completed", "deploy") and _key(event, "service") == _key(failure, "service")
    if kind.startswith("epic_"):
        return later == "epic_completed" and _key(event, "epic") == _key(failure, "epic")
    if kind in ("test_failed", "validation_failed"):
        return later in ("test_passed", "validation_passed") and _key(event, "epic") == _key(failure, "epic")
    if kind == "llm_error" and later == "llm_response":
        return (event.task_id, event.agent_id) == (failure.task_id, failure.agent_id)
    if kind == "tool_result" and later == "tool_result":
        return _key(event, "tool") == _key(failure, "tool")
    # Any other failure inside a task is made up for when the task later succeeds.
    return failure.task_id is not None and later in _TASK_END and event.task_id == failure.task_id


def _given_duration_ms(d: Mapping[str, Any]) -> float | None:
    for key, scale in (("duration_ms", 1.0), ("durationMs", 1.0), ("duration_seconds", 1e3), ("duration_hours", 3.6e6)):
        value = d.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) * scale
    return None


def _tokens(d: Mapping[str, Any]) -> int | None:
    total = _i(d, "total_tokens", "totalTokens")
    if total is not None:
        return total
    usage = d.get("usage")
    if isinstance(usage, Mapping):
        return _tokens(usage)
    pairs = (
        ("input_tokens", "output_tokens"),
        ("prompt_tokens", "completion_tokens"),
        ("promptTokens", "completionTokens"),
    )
    for a, b in pairs:
        x, y = _i(d, a), _i(d, b)
        if x is not None or y is not None:
            return (x or 0) + (y or 0)
    return None


def _intent_text(d: Mapping[str, Any]) -> str | None:
    intent = d.get("user_intent", d.get("userIntent"))
    if not isinstance(intent, Mapping):
        return None
    main = _s(intent, "problem_solved", "problemSolved") or _s(intent, "goal")
    if main is None:
        return None
    rest = [
        f"{label}: {_inline(value)}"
        for label, keys in (
            ("pain point", ("pain_point", "painPoint")),
            ("goal", ("goal",)),
            ("expected", ("expected_outcome", "expectedOutcome")),
        )
        if (value := _s(intent, *keys)) and value != main
    ]
    return _inline(main) + (f" ({'; '.join(rest)})" if rest else "")


def _outcome_text(outcome: Mapping[str, Any]) -> str:
    status = _s(outcome, "status", "result")
    rest = [f"{k}: {_scalar(v)}" for k, v in outcome.items() if k not in ("status", "result") or not status]
    head = f"**{status}**" if status else ""
    return _inline(_join_some(head, "; ".join(rest)) or "{}")


def _scalar(value: object) -> str:
    return value if isinstance(value, str) else _compact(value)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=False, default=str)


def _inline(text: str) -> str:
    """Free text on one line, cut to :data:`MAX_TEXT` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_TEXT else flat[: MAX_TEXT - 1] + "…"


def _cell(text: str) -> str:
    return _inline(text).replace("|", "\\|")


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join_some(*parts: str | None, sep: str = ": ") -> str | None:
    kept = [p for p in parts if p]
    return sep.join(kept) if kept else None


def _s(d: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = d.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    return None


def _i(d: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = d.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _ms_between(first: datetime, then: datetime) -> float:
    return (then - first).total_seconds() * 1000
