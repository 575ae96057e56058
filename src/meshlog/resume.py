"""Resume suggestions: what a session should do next, from its :class:`~meshlog.session.SessionStatus`.

:func:`suggest` tries the rules of a :class:`ResumeRules` in order, highest priority first, and returns the
first suggestion one of them makes::

    state = log.replay("instance:odin3-ps", SessionState()).state
    suggest(state, now=datetime.now(UTC)).text
    # 'epic-003 is complete: 5 of 8 tests passed, PRD updated. Ready for the next epic.'

A rule is a function ``(state, now) -> Suggestion | None``. It returns None when it has nothing to say; the
:class:`Suggestion` it returns gets the rule's name and priority filled in. The built-in rules, by priority:

=====  =========================  ======================================================================
 90    ``deployment_unfinished``  a deployment started and never finished
 85    ``deployment_failed``      the latest deployment of a service failed
 80    ``epic_failed``            the current epic failed
 75    ``last_event_error``       the last event reported an error
 70    ``tests_failed``           the last test or validation run failed (and its epic did not complete)
 60    ``checkpoint_to_load``     a checkpoint was created and nothing happened after it
 50    ``epic_in_progress``       an epic started and did not finish
 40    ``epic_completed``         the current epic is complete
 10    ``last_activity``          nothing is open: says what happened last
  0    ``nothing_recorded``       no events at all
=====  =========================  ======================================================================

Add your own with ``rules.add(function, priority=...)`` or the ``@rules.rule`` decorator; their default
priority, :data:`USER_PRIORITY`, puts them before every built-in rule. Everything is a pure function of the
state and ``now``: the same inputs give the same suggestion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, TypeAlias, overload

from meshlog.session import Deployment, SessionStatus, describe_counts

__all__ = [
    "BUILTIN_RULES",
    "USER_PRIORITY",
    "ResumeRules",
    "Rule",
    "RuleFunction",
    "Suggestion",
    "ago",
    "checkpoint_to_load",
    "deployment_failed",
    "deployment_unfinished",
    "epic_completed",
    "epic_failed",
    "epic_in_progress",
    "humanize",
    "last_activity",
    "last_event_error",
    "nothing_recorded",
    "suggest",
    "tests_failed",
]

USER_PRIORITY: Final = 100
"""The default priority of rules added with :meth:`ResumeRules.add` and :meth:`ResumeRules.rule`: above every
built-in rule."""
STALE_DEPLOYMENT: Final = timedelta(minutes=10)
"""An unfinished deployment older than this is reported as never finished rather than still running."""


@dataclass(frozen=True, slots=True)
class Suggestion:
    """What to do next: ``text`` for a person, ``details`` (JSON-ready) for a program.

    A rule function sets ``text`` and ``details``; ``rule`` and ``priority`` are filled in from the rule that
    made it.
    """

    text: str
    rule: str = ""
    priority: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "rule": self.rule, "priority": self.priority, "details": self.details}


@dataclass(frozen=True, slots=True)
class Resume:
    """What :meth:`EventLog.resume` returns: the stream's replayed session state and what to do next."""

    stream: str
    state: SessionStatus
    suggestion: Suggestion
    last_version: int
    """The stream version the state was built up to."""

    @property
    def text(self) -> str:
        """The suggestion's text."""
        return self.suggestion.text

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "suggestion": self.suggestion.to_dict(),
            "state": self.state.to_final_state(),
            "last_version": self.last_version,
        }


RuleFunction: TypeAlias = Callable[[SessionStatus, datetime], Suggestion | None]
"""A rule: the session's state and the current time in, a suggestion or None out."""


@dataclass(frozen=True, slots=True)
class Rule:
    """A named rule function with its priority."""

    name: str
    priority: int
    function: RuleFunction

    @property
    def description(self) -> str:
        """The first line of the function's docstring."""
        doc = (self.function.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def __call__(self, state: SessionStatus, now: datetime) -> Suggestion | None:
        found = self.function(state, now)
        return None if found is None else replace(found, rule=self.name, priority=self.priority)


class ResumeRules:
    """An ordered set of rules: highest priority first, and among equal priorities the one added first.

    ``ResumeRules()`` starts with the built-in rules (:data:`BUILTIN_RULES`); ``ResumeRules(builtin=False)``
    starts empty. Rule names are unique.
    """

    def __init__(self, *, builtin: bool = True) -> None:
        self._rules: list[Rule] = []
        if builtin:
            for function, priority in BUILTIN_RULES:
                self.add(function, priority=priority)

    def add(self, function: RuleFunction, *, priority: int = USER_PRIORITY, name: str | None = None) -> Rule:
        """Add a rule (named after the function unless ``name`` is given) and return it. Raises ``ValueError``
        when a rule of that name exists: :meth:`remove` it first to replace it."""
        if name is None:
            name = str(getattr(function, "__name__", repr(function)))
        rule = Rule(name, priority, function)
        if rule.name in self:
            raise ValueError(f"a resume rule named {rule.name!r} exists; remove it first")
        # Stable: a new rule goes after every rule of the same or higher priority.
        index = next((i for i, r in enumerate(self._rules) if r.priority < priority), len(self._rules))
        self._rules.insert(index, rule)
        return rule

    @overload
    def rule(self, function: RuleFunction, /) -> RuleFunction: ...

    @overload
    def rule(self, *, priority: int = ..., name: str | None = ...) -> Callable[[RuleFunction], RuleFunction]: ...

    def rule(
        self, function: RuleFunction | None = None, *, priority: int = USER_PRIORITY, name: str | None = None
    ) -> RuleFunction | Callable[[RuleFunction], RuleFunction]:
        """A decorator that adds the function as a rule: ``@rules.rule`` or ``@rules.rule(priority=55)``. The
        function is returned unchanged."""

        def register(fn: RuleFunction) -> RuleFunction:
            self.add(fn, priority=priority, name=name)
            return fn

        return register if function is None else register(function)

    def remove(self, name: str) -> Rule:
        """Remove the rule of that name and return it. Raises ``KeyError``."""
        for i, rule in enumerate(self._rules):
            if rule.name == name:
                return self._rules.pop(i)
        raise KeyError(name)

    def names(self) -> list[str]:
        """The rule names, in the order they are tried."""
        return [rule.name for rule in self._rules]

    def __iter__(self) -> Iterator[Rule]:
        return iter(list(self._rules))

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, name: object) -> bool:
        return any(rule.name == name for rule in self._rules)

    def evaluate(self, state: SessionStatus, now: datetime) -> list[Suggestion]:
        """Every suggestion the rules make, in rule order (the first is what :func:`suggest` returns)."""
        _check_now(now)
        return [found for rule in self._rules if (found := rule(state, now)) is not None]

    def first(self, state: SessionStatus, now: datetime) -> Suggestion | None:
        """The suggestion of the first rule that makes one, or None."""
        _check_now(now)
        for rule in self._rules:
            found = rule(state, now)
            if found is not None:
                return found
        return None


def suggest(state: SessionStatus, *, now: datetime, rules: ResumeRules | None = None) -> Suggestion:
    """What to do next: the first suggestion of ``rules`` (default: the built-in rules) for ``state`` at
    ``now`` (timezone-aware). With rules that all decline, a suggestion from rule ``"none"``."""
    found = (rules if rules is not None else ResumeRules()).first(state, now)
    return found or Suggestion("No resume rule applies to this session.", rule="none", priority=0)


# -- time --------------------------------------------------------------------------------------------------------
def humanize(delta: timedelta) -> str:
    """A duration, rounded for people: ``"45 s"``, ``"5 min"``, ``"2 h"``, ``"3 d"`` (hours up to 47, then
    days). Negative durations count as zero."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours = round(seconds / 3600)
    if hours < 48:
        return f"{hours} h"
    return f"{round(seconds / 86400)} d"


def ago(at: datetime, now: datetime) -> str:
    """``"2 h ago"``, ``"5 min ago"``; ``"just now"`` under a second (or for a time after ``now``)."""
    if (now - at).total_seconds() < 1:
        return "just now"
    return f"{humanize(now - at)} ago"


def _check_now(now: datetime) -> None:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise ValueError(f"now must be a timezone-aware datetime, got {now!r}")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- the built-in rules ------------------------------------------------------------------------------------------
def deployment_unfinished(state: SessionStatus, now: datetime) -> Suggestion | None:
    """A deployment started and never finished: check it (or wait, if it started minutes ago)."""
    open_ = state.open_deployments
    if not open_:
        return None
    oldest = open_[0]
    started = oldest.started_at or now
    details = {"deployments": [d.to_dict() for d in open_]}
    if len(open_) > 1:
        names = _join([f"{_deployment_name(d)} (started {ago(d.started_at or now, now)})" for d in open_])
        return Suggestion(f"The deployments of {names} have not finished: check them.", details=details)
    if now - started >= STALE_DEPLOYMENT:
        text = f"The deployment of {_deployment_name(oldest)} started {ago(started, now)} and never finished: check it."
    else:
        text = (
            f"The deployment of {_deployment_name(oldest)} started {ago(started, now)} and has not finished yet: "
            "wait for it, then check its health."
        )
    return Suggestion(text, details=details)


def deployment_failed(state: SessionStatus, now: datetime) -> Suggestion | None:
    """The latest deployment of a service failed: fix it and deploy again."""
    failed = [d for d in state.deployments.values() if d.status == "failed"]
    if not failed:
        return None
    latest = max(failed, key=lambda d: (d.finished_at or now).timestamp())
    reason = f" ({latest.error})" if latest.error else ""
    return Suggestion(
        f"The deployment of {_deployment_name(latest)} failed {ago(latest.finished_at or now, now)}{reason}: "
        "fix it and deploy again.",
        details={"deployment": latest.to_dict(), "failed_services": [d.service for d in failed]},
    )


def epic_failed(state: SessionStatus, now: datetime) -> Suggestion | None:
    """The current epic failed: find the cause, fix it and restart the epic."""
    epic = state.current_epic
    if epic is None or epic.status != "failed":
        return None
    when = f" {ago(epic.finished_at, now)}" if epic.finished_at else ""
    reason = f" ({epic.error})" if epic.error else ""
    return Suggestion(
        f"{epic.epic_id} failed{when}{reason}: find the cause, fix it and restart the epic.",
        details={"epic": epic.to_dict()},
    )


def last_event_error(state: SessionStatus, now: datetime) -> Suggestion | None:
    """The last event reported an error: look into it before going on."""
    if not state.errors or state.errors[-1].event_id != state.last_event_id:
        return None
    error = state.errors[-1]
    by = f" by {error.agent_id}" if error.agent_id else ""
    reason = f" ({error.message})" if error.message else ""
    return Suggestion(
        f"The last event, {error.type}{by} {ago(error.at, now)}, reported an error{reason}: "
        "look into it before going on.",
        details={"error": error.to_dict(), "error_count": state.error_count},
    )


def tests_failed(state: SessionStatus, now: datetime) -> Suggestion | None:
    """The last test or validation run failed, and its epic did not complete since: fix and re-run."""
    run = state.last_test_run
    if run is None or run.ok:
        return None
    epic = state.epics.get(run.epic_id) if run.epic_id else None
    if epic is not None and epic.status != "in_progress" and epic.finished_at and epic.finished_at >= run.at:
        return None
    what = "validation" if run.type.startswith("validation") else "test run"
    of = f" of {run.epic_id}" if run.epic_id else ""
    return Suggestion(
        f"The last {what}{of} failed {ago(run.at, now)}: {run.describe()}. Fix the failures and run it again.",
        details={"test_run": run.to_dict()},
    )


def checkpoint_to_load(state: SessionStatus, now: datetime) -> Suggestion | None:
    """A checkpoint was created, never loaded, and nothing was done after it: load it to resume."""
    checkpoint = state.checkpoint
    if checkpoint is None or checkpoint.loaded or checkpoint.events_after:
        return None
    name = f"Checkpoint {checkpoint.checkpoint_id}" if checkpoint.checkpoint_id else "A checkpoint"
    epic = state.open_epic
    then = f", then continue {epic.epic_id}" if epic else ""
    return Suggestion(
        f"{name} was created {ago(checkpoint.at, now)} and not loaded since: load it to restore the work state{then}.",
        details={"checkpoint": checkpoint.to_dict(), "open_epic": epic.epic_id if epic else None},
    )


def epic_in_progress(state: SessionStatus, now: datetime) -> Suggestion | None:
    """An epic started and did not finish: continue it (with the last test run's numbers)."""
    epic = state.open_epic
    if epic is None:
        return None
    since = f" (started {ago(epic.started_at, now)})" if epic.started_at else ""
    run = epic.last_test_run
    if run is None:
        text = f"{epic.epic_id} is in progress{since}, with no test run yet: continue it."
    else:
        text = f"{epic.epic_id} is in progress{since}: {run.describe()} at the last run; continue it."
    return Suggestion(text, details={"epic": epic.to_dict()})


def epic_completed(state: SessionStatus, now: datetime) -> Suggestion | None:
    """The current epic is complete and none is open: ready for the next one."""
    epic = state.current_epic
    if epic is None or epic.status != "completed" or state.open_epic is not None:
        return None
    facts: list[str] = []
    if epic.tests_passed is not None:
        facts.append(describe_counts(epic.tests_passed, epic.tests_total, None, ok=True))
    elif epic.last_test_run is not None:
        facts.append(epic.last_test_run.describe())
    if epic.prd_updated:
        facts.append("PRD updated")
    summary = f": {', '.join(facts)}" if facts else ""
    return Suggestion(
        f"{epic.epic_id} is complete{summary}. Ready for the next epic.", details={"epic": epic.to_dict()}
    )


def last_activity(state: SessionStatus, now: datetime) -> Suggestion | None:
    """Nothing is open: say what happened last."""
    if not state.total_events_replayed:
        return None
    when = f" {ago(state.latest_timestamp, now)}" if state.latest_timestamp else ""
    about = f" (about {state.last_epic})" if state.last_epic else ""
    return Suggestion(
        f"Nothing is open: the last event was {state.last_event_type}{when}{about}. Pick the next piece of work.",
        details={
            "last_event_type": state.last_event_type,
            "latest_timestamp": _iso(state.latest_timestamp),
            "last_epic": state.last_epic,
        },
    )


def nothing_recorded(state: SessionStatus, now: datetime) -> Suggestion | None:
    """No events at all: there is nothing to resume."""
    if state.total_events_replayed:
        return None
    return Suggestion("Nothing recorded yet: there is no session to resume. Start new work.")


BUILTIN_RULES: Final[tuple[tuple[RuleFunction, int], ...]] = (
    (deployment_unfinished, 90),
    (deployment_failed, 85),
    (epic_failed, 80),
    (last_event_error, 75),
    (tests_failed, 70),
    (checkpoint_to_load, 60),
    (epic_in_progress, 50),
    (epic_completed, 40),
    (last_activity, 10),
    (nothing_recorded, 0),
)
"""The built-in rules and their priorities."""


def _deployment_name(deployment: Deployment) -> str:
    """``api``, ``api 1.42.0``, ``api 1.42.0 to staging``."""
    name = deployment.service
    if deployment.version:
        name += f" {deployment.version}"
    if deployment.environment:
        name += f" to {deployment.environment}"
    return name


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
