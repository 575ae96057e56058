"""Session state: where a working session stands, folded from its events.

:class:`SessionState` is a projection (``initial`` and ``apply``) whose state, a :class:`SessionStatus`, says
what a session of agents last did: the epic it worked on, the last test run, deployments still running, the
last commit, pull requests, errors, the last checkpoint. :mod:`meshlog.resume` turns it into a suggestion of
what to do next::

    replay = log.replay("instance:odin3-ps", SessionState())
    replay.state.to_final_state()   # {"last_epic": "epic-003", "last_event_type": "prd_updated", ...}

Event types are matched by a canonical name: the type is lower-cased, ``.``, ``-``, ``/`` and ``:`` become
``_``, and aliases map to one name, so ``epic_start`` and ``epic.started`` both count as ``epic_started`` and
``deploy_complete``, ``deploy.completed`` and ``deployment_done`` as ``deployment_completed`` (see
:data:`ALIASES`). Timestamps are ``occurred_at`` when the caller gave it, else ``recorded_at``.

``apply`` updates the state in place and returns it. The state is a plain dataclass: compare it, copy it, or
save it with :meth:`SessionState.to_snapshot` (a JSON object) and load it with
:meth:`SessionState.from_snapshot`, so that replay can continue from a snapshot instead of the first event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final

from meshlog.events import RecordedEvent

__all__ = [
    "ALIASES",
    "MAX_ERRORS",
    "Checkpoint",
    "Commit",
    "Deployment",
    "Epic",
    "ErrorRecord",
    "PullRequest",
    "SessionState",
    "SessionStatus",
    "TestRun",
    "canonical_type",
    "describe_counts",
    "event_time",
    "failure_message",
    "is_failure",
]

MAX_ERRORS: Final = 20
"""How many of the most recent errors a :class:`SessionStatus` keeps (``error_count`` counts them all)."""

ALIASES: Final[Mapping[str, str]] = {
    alias: canonical
    for canonical, aliases in {
        "epic_started": ("epic_started", "epic_start"),
        "epic_completed": ("epic_completed", "epic_complete", "epic_done"),
        "epic_failed": ("epic_failed",),
        "test_started": ("test_started", "tests_started"),
        "test_passed": ("test_passed", "tests_passed"),
        "test_failed": ("test_failed", "tests_failed"),
        "validation_passed": ("validation_passed",),
        "validation_failed": ("validation_failed",),
        "commit_created": ("commit_created", "commit"),
        "pr_created": ("pr_created", "pull_request_created"),
        "pr_merged": ("pr_merged", "pull_request_merged"),
        "deployment_started": ("deployment_started", "deploy_start", "deploy_started"),
        "deployment_completed": (
            "deployment_completed",
            "deployment_done",
            "deploy_complete",
            "deploy_completed",
            "deploy_done",
        ),
        "deployment_failed": ("deployment_failed", "deploy_failed"),
        "deploy": ("deploy", "deployment"),
        "checkpoint_created": ("checkpoint_created",),
        "checkpoint_loaded": ("checkpoint_loaded",),
        "prd_updated": ("prd_updated",),
        "task_spawned": ("task_spawned", "spawn"),
        "context_window_updated": ("context_window_updated", "assistant_start"),
    }.items()
    for alias in aliases
}
"""Normalized event type (lower case, separators as ``_``) → the canonical name this module uses. ``deploy`` is
a one-shot deployment (finished, with its ``status``); ``assistant_start`` carries ``context_percent``."""

TEST_TYPES: Final = frozenset({"test_passed", "test_failed", "validation_passed", "validation_failed"})
FAILED_WORDS: Final = frozenset({"failed", "failure", "error", "errored", "unhealthy", "rolled_back", "timeout"})
QUIET_TYPES: Final = frozenset(
    {
        "instance_registered",
        "instance_heartbeat",
        "instance_stale",
        "instance_recovered",
        "instance_closed",
        "context_window_updated",
        "command_logged",
    }
)
"""Bookkeeping events that do not count as work done after a checkpoint."""
_SEPARATORS: Final = str.maketrans({".": "_", "-": "_", "/": "_", ":": "_"})


def canonical_type(event_type: str) -> str:
    """The canonical name of an event type: ``"deploy.completed"`` → ``"deployment_completed"``,
    ``"llm.error"`` → ``"llm_error"``; types without an alias are returned normalized."""
    normalized = event_type.lower().translate(_SEPARATORS)
    return ALIASES.get(normalized, normalized)


def event_time(event: RecordedEvent) -> datetime:
    """When the event happened: ``occurred_at`` if the caller gave it, else ``recorded_at``."""
    return event.occurred_at or event.recorded_at


def is_failure(event: RecordedEvent) -> bool:
    """Whether the event reports a failure: a type named ``error`` or ending in ``_error``, ``_failure`` or
    ``_failed`` (after :func:`canonical_type`: ``llm.error``, ``task.result.failure``, ``epic_failed``,
    ``test_failed``), or a payload saying so: ``status`` of failed, error, unhealthy…, or ``ok``, ``success`` or
    ``healthy`` false."""
    kind = canonical_type(event.type)
    if kind in ("error", "error_occurred") or kind.endswith(("_error", "_failure", "_failed")):
        return True
    data = event.data
    status = data.get("status")
    if isinstance(status, str) and status.lower() in FAILED_WORDS:
        return True
    return any(data.get(key) is False for key in ("ok", "success", "healthy"))


def failure_message(data: Mapping[str, Any]) -> str | None:
    """What went wrong, from a failure's payload: ``message``, ``error`` (or its ``message``), ``error_type``,
    ``reason``, else None."""
    parts: list[str] = []
    for key in ("error_type", "error", "message", "reason"):
        value = data.get(key)
        if isinstance(value, Mapping):
            value = value.get("message") or value.get("type")
        if isinstance(value, str | int | float) and not isinstance(value, bool) and str(value) not in parts:
            parts.append(str(value))
    return ": ".join(parts[:2]) or None


# -- the state ---------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class TestRun:
    """One test or validation run (``test_passed``, ``test_failed``, ``validation_passed``,
    ``validation_failed``) with the counts its payload gave."""

    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    event_id: str
    type: str
    """The canonical type: ``test_passed``, ``test_failed``, ``validation_passed`` or ``validation_failed``."""
    at: datetime
    epic_id: str | None = None
    passed: int | None = None
    failed: int | None = None
    total: int | None = None
    coverage: float | None = None

    @property
    def ok(self) -> bool:
        """A ``*_passed`` run with no failed test counted."""
        return self.type.endswith("_passed") and not self.failed

    def describe(self) -> str:
        """``"3 of 8 tests passed"``, ``"45 tests passed"``, ``"3 of 8 tests passed, 5 failed"``, ``"the tests
        failed"``…"""
        return describe_counts(self.passed, self.total, self.failed, ok=self.ok)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "at": self.at.isoformat(),
            "epic_id": self.epic_id,
            "passed": self.passed,
            "failed": self.failed,
            "total": self.total,
            "coverage": self.coverage,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TestRun:
        return cls(
            event_id=d["event_id"],
            type=d["type"],
            at=datetime.fromisoformat(d["at"]),
            epic_id=d["epic_id"],
            passed=d["passed"],
            failed=d["failed"],
            total=d["total"],
            coverage=d["coverage"],
        )


@dataclass(slots=True)
class Epic:
    """An epic's lifecycle: ``in_progress`` after ``epic_started``, then ``completed`` or ``failed``."""

    epic_id: str
    status: str
    """``in_progress``, ``completed`` or ``failed``."""
    started_at: datetime | None = None
    """None when the replay saw the epic finish but not start."""
    finished_at: datetime | None = None
    feature: str | None = None
    attempts: int = 0
    """How many ``epic_started`` events it had (more than one: restarted)."""
    last_test_run: TestRun | None = None
    tests_passed: int | None = None
    """``tests_passed`` from the ``epic_completed`` payload."""
    tests_total: int | None = None
    prd_updated: bool = False
    error: str | None = None
    """Why it failed, from the ``epic_failed`` payload."""
    result: dict[str, Any] = field(default_factory=dict)
    """The payload of the event that finished it."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "epic_id": self.epic_id,
            "status": self.status,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "feature": self.feature,
            "attempts": self.attempts,
            "last_test_run": self.last_test_run.to_dict() if self.last_test_run else None,
            "tests_passed": self.tests_passed,
            "tests_total": self.tests_total,
            "prd_updated": self.prd_updated,
            "error": self.error,
            "result": self.result,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Epic:
        run = d["last_test_run"]
        return cls(
            epic_id=d["epic_id"],
            status=d["status"],
            started_at=_parse_dt(d["started_at"]),
            finished_at=_parse_dt(d["finished_at"]),
            feature=d["feature"],
            attempts=d["attempts"],
            last_test_run=TestRun.from_dict(run) if run else None,
            tests_passed=d["tests_passed"],
            tests_total=d["tests_total"],
            prd_updated=d["prd_updated"],
            error=d["error"],
            result=dict(d["result"]),
        )


@dataclass(slots=True)
class Deployment:
    """The latest deployment of one service: ``in_progress`` from its start until it completes or fails."""

    service: str
    status: str
    """``in_progress``, ``succeeded`` or ``failed``."""
    event_id: str
    """The event that started it (or, for a one-shot ``deploy``, recorded it)."""
    started_at: datetime | None
    finished_at: datetime | None = None
    environment: str | None = None
    version: str | None = None
    error: str | None = None

    @property
    def duration_ms(self) -> int | None:
        """From start to finish, or None while it runs."""
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds() * 1000)

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "status": self.status,
            "event_id": self.event_id,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "environment": self.environment,
            "version": self.version,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Deployment:
        return cls(
            service=d["service"],
            status=d["status"],
            event_id=d["event_id"],
            started_at=_parse_dt(d["started_at"]),
            finished_at=_parse_dt(d["finished_at"]),
            environment=d["environment"],
            version=d["version"],
            error=d["error"],
        )


@dataclass(slots=True)
class Commit:
    """A ``commit`` / ``commit_created`` event."""

    event_id: str
    at: datetime
    hash: str | None = None
    message: str | None = None
    files_changed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "at": self.at.isoformat(),
            "hash": self.hash,
            "message": self.message,
            "files_changed": self.files_changed,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Commit:
        return cls(d["event_id"], datetime.fromisoformat(d["at"]), d["hash"], d["message"], d["files_changed"])


@dataclass(slots=True)
class PullRequest:
    """A pull request: ``open`` after ``pr_created``, ``merged`` after ``pr_merged``."""

    key: str
    """Its URL, else ``#<number>``, else ``#?``."""
    status: str
    url: str | None = None
    number: int | None = None
    title: str | None = None
    opened_at: datetime | None = None
    merged_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status,
            "url": self.url,
            "number": self.number,
            "title": self.title,
            "opened_at": _iso(self.opened_at),
            "merged_at": _iso(self.merged_at),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PullRequest:
        return cls(
            key=d["key"],
            status=d["status"],
            url=d["url"],
            number=d["number"],
            title=d["title"],
            opened_at=_parse_dt(d["opened_at"]),
            merged_at=_parse_dt(d["merged_at"]),
        )


@dataclass(slots=True)
class Checkpoint:
    """The last ``checkpoint_created`` or ``checkpoint_loaded`` event (work-state checkpoints, not the
    consumer checkpoints of :meth:`meshlog.EventLog.save_checkpoint`)."""

    event_id: str
    type: str
    """``checkpoint_created`` or ``checkpoint_loaded``."""
    at: datetime
    state: dict[str, Any]
    """Its payload: the ``checkpoint_state`` of :meth:`SessionStatus.to_final_state`."""
    events_after: int = 0
    """Events applied after it, not counting bookkeeping (heartbeats, context updates)."""

    @property
    def loaded(self) -> bool:
        return self.type == "checkpoint_loaded"

    @property
    def checkpoint_id(self) -> str | None:
        value = self.state.get("checkpoint_id") or self.state.get("id") or self.state.get("name")
        return str(value) if value is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "at": self.at.isoformat(),
            "state": self.state,
            "events_after": self.events_after,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Checkpoint:
        return cls(d["event_id"], d["type"], datetime.fromisoformat(d["at"]), dict(d["state"]), d["events_after"])


@dataclass(slots=True)
class ErrorRecord:
    """An event that reported a failure (see :func:`is_failure`), test results excepted."""

    event_id: str
    type: str
    """The event's type as recorded."""
    at: datetime
    message: str | None = None
    agent_id: str | None = None
    epic_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "at": self.at.isoformat(),
            "message": self.message,
            "agent_id": self.agent_id,
            "epic_id": self.epic_id,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ErrorRecord:
        return cls(d["event_id"], d["type"], datetime.fromisoformat(d["at"]), d["message"], d["agent_id"], d["epic_id"])


@dataclass(slots=True)
class SessionStatus:
    """Where a session stands: the state of :class:`SessionState`. Every field has a safe empty default."""

    total_events_replayed: int = 0
    """Events folded into this state, including those before a snapshot it was loaded from."""
    last_event_type: str | None = None
    last_event_id: str | None = None
    last_position: int = 0
    """The global position of the last event applied."""
    last_stream_position: int = 0
    latest_timestamp: datetime | None = None
    """The latest event time seen (``occurred_at``, else ``recorded_at``)."""
    last_epic: str | None = None
    """The epic the latest event naming one (``epic_id`` or ``epic`` in its payload) was about."""
    counts: dict[str, int] = field(default_factory=dict)
    """Events by type, as recorded."""
    epics: dict[str, Epic] = field(default_factory=dict)
    """By epic id, in the order they were first seen."""
    current_epic_id: str | None = None
    """The epic of the latest ``epic_started``, ``epic_completed`` or ``epic_failed``."""
    test_runs: int = 0
    test_runs_failed: int = 0
    tests_passed: int = 0
    """The sum of the passed counts of every run."""
    tests_failed: int = 0
    last_test_run: TestRun | None = None
    deployments: dict[str, Deployment] = field(default_factory=dict)
    """The latest deployment of each service, by service."""
    last_commit: Commit | None = None
    pull_requests: dict[str, PullRequest] = field(default_factory=dict)
    checkpoint: Checkpoint | None = None
    prd_updated: bool = False
    """Whether any ``prd_updated`` event was seen."""
    context_percent: float | None = None
    """The last context-window use reported (``context_window_updated``, ``assistant_start``)."""
    error_count: int = 0
    errors: list[ErrorRecord] = field(default_factory=list)
    """The most recent errors, oldest first (at most :data:`MAX_ERRORS`)."""

    @property
    def checkpoint_state(self) -> dict[str, Any] | None:
        """The payload of the last ``checkpoint_created`` or ``checkpoint_loaded`` event."""
        return self.checkpoint.state if self.checkpoint else None

    @property
    def current_epic(self) -> Epic | None:
        return self.epics.get(self.current_epic_id) if self.current_epic_id else None

    @property
    def open_epic(self) -> Epic | None:
        """The epic in progress: the current one if it is, else the last started one that never finished."""
        current = self.current_epic
        if current is not None and current.status == "in_progress":
            return current
        for epic in reversed(self.epics.values()):
            if epic.status == "in_progress":
                return epic
        return None

    @property
    def epics_started(self) -> list[str]:
        return [e.epic_id for e in self.epics.values() if e.attempts]

    @property
    def epics_completed(self) -> list[str]:
        return [e.epic_id for e in self.epics.values() if e.status == "completed"]

    @property
    def epics_failed(self) -> list[str]:
        return [e.epic_id for e in self.epics.values() if e.status == "failed"]

    @property
    def open_deployments(self) -> list[Deployment]:
        """Deployments started and not finished, oldest first."""
        return sorted((d for d in self.deployments.values() if d.status == "in_progress"), key=_started_key)

    @property
    def finished_deployments(self) -> list[Deployment]:
        return [d for d in self.deployments.values() if d.status != "in_progress"]

    def to_final_state(self) -> dict[str, Any]:
        """A JSON-ready summary: the ``final_state`` of the ``replay_events`` tool (``last_epic``,
        ``last_event_type``, ``latest_timestamp``, ``total_events_replayed``, ``checkpoint_state``) and, beside
        those, ``counts``, ``epics``, ``tests``, ``deployments``, ``last_commit``, ``pull_requests``,
        ``prd_updated``, ``context_percent`` and ``errors``."""
        open_epic = self.open_epic
        return {
            "last_epic": self.last_epic,
            "last_event_type": self.last_event_type,
            "latest_timestamp": _iso(self.latest_timestamp),
            "total_events_replayed": self.total_events_replayed,
            "checkpoint_state": self.checkpoint_state,
            "counts": dict(self.counts),
            "epics": {
                "started": self.epics_started,
                "completed": self.epics_completed,
                "failed": self.epics_failed,
                "open": open_epic.epic_id if open_epic else None,
                "by_id": {k: e.to_dict() for k, e in self.epics.items()},
            },
            "tests": {
                "runs": self.test_runs,
                "runs_failed": self.test_runs_failed,
                "passed": self.tests_passed,
                "failed": self.tests_failed,
                "last_run": self.last_test_run.to_dict() if self.last_test_run else None,
            },
            "deployments": {
                "open": [d.to_dict() for d in self.open_deployments],
                "finished": [d.to_dict() for d in self.finished_deployments],
            },
            "last_commit": self.last_commit.to_dict() if self.last_commit else None,
            "pull_requests": [p.to_dict() for p in self.pull_requests.values()],
            "prd_updated": self.prd_updated,
            "context_percent": self.context_percent,
            "errors": {"count": self.error_count, "recent": [e.to_dict() for e in self.errors]},
        }


# -- the projection ----------------------------------------------------------------------------------------------
class SessionState:
    """A projection that folds a session's events into a :class:`SessionStatus`.

    It supports snapshots (``name``, ``version``, ``to_snapshot``, ``from_snapshot``): ``version`` changes
    whenever ``apply`` or the snapshot format does, so that snapshots of an older version are not used.
    """

    name: str = "session-state"
    version: int = 1

    def initial(self) -> SessionStatus:
        return SessionStatus()

    def apply(self, state: SessionStatus, event: RecordedEvent) -> SessionStatus:
        at = event_time(event)
        kind = canonical_type(event.type)
        data = event.data
        state.total_events_replayed += 1
        state.counts[event.type] = state.counts.get(event.type, 0) + 1
        state.last_event_type = event.type
        state.last_event_id = event.id
        state.last_position = event.position
        state.last_stream_position = event.stream_position
        if state.latest_timestamp is None or at > state.latest_timestamp:
            state.latest_timestamp = at
        epic_id = _epic_id(data)
        if epic_id is not None:
            state.last_epic = epic_id
        if state.checkpoint is not None and kind not in QUIET_TYPES:
            state.checkpoint.events_after += 1
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(state, event, at, epic_id)
        if kind not in TEST_TYPES and is_failure(event):
            state.error_count += 1
            state.errors.append(ErrorRecord(event.id, event.type, at, failure_message(data), event.agent_id, epic_id))
            del state.errors[:-MAX_ERRORS]
        return state

    def to_snapshot(self, state: SessionStatus) -> dict[str, Any]:
        """The state as a JSON object (datetimes as ISO 8601 strings); :meth:`from_snapshot` reverses it."""
        return {
            "total_events_replayed": state.total_events_replayed,
            "last_event_type": state.last_event_type,
            "last_event_id": state.last_event_id,
            "last_position": state.last_position,
            "last_stream_position": state.last_stream_position,
            "latest_timestamp": _iso(state.latest_timestamp),
            "last_epic": state.last_epic,
            "counts": dict(state.counts),
            "epics": [e.to_dict() for e in state.epics.values()],
            "current_epic_id": state.current_epic_id,
            "test_runs": state.test_runs,
            "test_runs_failed": state.test_runs_failed,
            "tests_passed": state.tests_passed,
            "tests_failed": state.tests_failed,
            "last_test_run": state.last_test_run.to_dict() if state.last_test_run else None,
            "deployments": [d.to_dict() for d in state.deployments.values()],
            "last_commit": state.last_commit.to_dict() if state.last_commit else None,
            "pull_requests": [p.to_dict() for p in state.pull_requests.values()],
            "checkpoint": state.checkpoint.to_dict() if state.checkpoint else None,
            "prd_updated": state.prd_updated,
            "context_percent": state.context_percent,
            "error_count": state.error_count,
            "errors": [e.to_dict() for e in state.errors],
        }

    def from_snapshot(self, data: dict[str, Any]) -> SessionStatus:
        """The state saved by :meth:`to_snapshot`. Raises ``ValueError`` for anything else."""
        try:
            run = data["last_test_run"]
            commit = data["last_commit"]
            checkpoint = data["checkpoint"]
            epics = [Epic.from_dict(e) for e in data["epics"]]
            deployments = [Deployment.from_dict(d) for d in data["deployments"]]
            prs = [PullRequest.from_dict(p) for p in data["pull_requests"]]
            return SessionStatus(
                total_events_replayed=data["total_events_replayed"],
                last_event_type=data["last_event_type"],
                last_event_id=data["last_event_id"],
                last_position=data["last_position"],
                last_stream_position=data["last_stream_position"],
                latest_timestamp=_parse_dt(data["latest_timestamp"]),
                last_epic=data["last_epic"],
                counts=dict(data["counts"]),
                epics={e.epic_id: e for e in epics},
                current_epic_id=data["current_epic_id"],
                test_runs=data["test_runs"],
                test_runs_failed=data["test_runs_failed"],
                tests_passed=data["tests_passed"],
                tests_failed=data["tests_failed"],
                last_test_run=TestRun.from_dict(run) if run else None,
                deployments={d.service: d for d in deployments},
                last_commit=Commit.from_dict(commit) if commit else None,
                pull_requests={p.key: p for p in prs},
                checkpoint=Checkpoint.from_dict(checkpoint) if checkpoint else None,
                prd_updated=data["prd_updated"],
                context_percent=data["context_percent"],
                error_count=data["error_count"],
                errors=[ErrorRecord.from_dict(e) for e in data["errors"]],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a {self.name} v{self.version} snapshot: {exc!r}") from exc


# -- handlers, one per canonical type ----------------------------------------------------------------------------
def _epic_started(state: SessionStatus, event: RecordedEvent, at: datetime, epic_id: str | None) -> None:
    epic_id = epic_id or "unnamed epic"
    epic = state.epics.get(epic_id)
    if epic is None:
        epic = state.epics[epic_id] = Epic(epic_id, "in_progress")
    epic.status, epic.started_at, epic.finished_at, epic.error = "in_progress", at, None, None
    epic.attempts += 1
    epic.feature = _str(event.data, "feature_name", "feature", "title") or epic.feature
    state.current_epic_id = epic_id


def _epic_finished(state: SessionStatus, event: RecordedEvent, at: datetime, epic_id: str | None) -> None:
    data = event.data
    epic_id = epic_id or state.current_epic_id or "unnamed epic"
    epic = state.epics.get(epic_id)
    if epic is None:
        epic = state.epics[epic_id] = Epic(epic_id, "in_progress")
    failed = canonical_type(event.type) == "epic_failed" or is_failure(event)
    epic.status, epic.finished_at, epic.result = ("failed" if failed else "completed"), at, dict(data)
    if failed:
        epic.error = failure_message(data)
    else:
        epic.tests_passed = _int(data, "tests_passed", "passed_count")
        epic.tests_total = _int(data, "tests_total", "test_count")
    state.current_epic_id = epic_id


def _test_result(state: SessionStatus, event: RecordedEvent, at: datetime, epic_id: str | None) -> None:
    data = event.data
    open_epic = state.open_epic
    run = TestRun(
        event_id=event.id,
        type=canonical_type(event.type),
        at=at,
        epic_id=epic_id or (open_epic.epic_id if open_epic else None),
        passed=_int(data, "passed_count", "tests_passed", "passed", "passedCount"),
        failed=_int(data, "failed_count", "tests_failed", "failed", "failedCount"),
        total=_int(data, "test_count", "total_count", "tests_total", "total", "testCount"),
        coverage=_float(data, "coverage_percent", "coverage"),
    )
    if run.total is None and run.passed is not None and run.failed is not None:
        run.total = run.passed + run.failed
    state.test_runs += 1
    state.test_runs_failed += 0 if run.ok else 1
    state.tests_passed += run.passed or 0
    state.tests_failed += run.failed or 0
    state.last_test_run = run
    if run.epic_id is not None and run.epic_id in state.epics:
        state.epics[run.epic_id].last_test_run = run


def _deployment_started(state: SessionStatus, event: RecordedEvent, at: datetime, epic_id: str | None) -> None:
    data = event.data
    service = _service(data)
    state.deployments[service] = Deployment(
        service=service,
        status="in_progress",
        event_id=event.id,
        started_at=at,
        environment=_str(data, "environment", "env"),
        version=_str(data, "version", "docker_image", "image"),
    )


def _deployment_finished(state: SessionStatus, event: RecordedEvent, at: datetime, epic_id: str | None) -> None:
    data = event.data
    service = _service(data)
    failed = canonical_type(event.type) == "deployment_failed" or is_failure(event)
    deployment = state.deployments.get(service)
    if deployment is None or deployment.status != "in_progress":
        # Finished without a start in this replay (or a one-shot ``deploy``): it started ``duration_ms`` earlier
        # when the payload says so, else it is taken as instantaneous.
        duration = _float(data, "duration_ms", "durationMs")
        started = at if duration is None else at - timedelta(milliseconds=duration)
        deployment = state.deployments[service] = Deployment(service, "in_progress", event.id, started)
    deployment.status, deployment.finished_at = ("failed" if failed else "succeeded"), at
    deployment.environment = _str(data, "environment", "env") or deployment.environment
    deployment.version = _str(data, "version", "docker_image", "image") or deployment.version
    deployment.error = failure_message(data) if failed else None


def _commit(state: SessionStatus, event: RecordedEvent, at: datetime, epic_id: str | None) -> None:
    data = event.data
    state.last_commit = Commit(
        event.id,
        at,
        _str(data, "hash", "sha", "commit", "git_commit"),
        _str(data, "message", "title"),
        _int(data, "files_changed"),
    )


def _pull_request(state: SessionStatus, event: RecordedEvent, at: datetime, epic_id: str | None) -> None:
    data = event.data
    url = _str(data, "url", "pr_url", "html_url")
    number = _int(data, "number", "pr_number")
    key = url or (f"#{number}" if number is not None else "#?")
    pr = state.pull_requests.get(key)
    if pr is None:
        pr = state.pull_requests[key] = PullRequest(key, "open", url, number)
    pr.title = _str(data, "title") or pr.title
    if canonical_type(event.type) == "pr_merged":
        pr.status, pr.merged_at = "merged", at
    else:
        pr.status, pr.opened_at = "open", at


def _checkpoint(state: SessionStatus, event: RecordedEvent, at: datetime, epic_id: str | None) -> None:
    state.checkpoint = Checkpoint(event.id, canonical_type(event.type), at, dict(event.data))


def _prd_updated(state: SessionStatus, event: RecordedEvent, at: datetime, epic_id: str | None) -> None:
    state.prd_updated = True
    open_epic = state.open_epic
    target = epic_id or (open_epic.epic_id if open_epic else state.current_epic_id)
    if target is not None and target in state.epics:
        state.epics[target].prd_updated = True


def _context(state: SessionStatus, event: RecordedEvent, at: datetime, epic_id: str | None) -> None:
    percent = _float(event.data, "context_percent", "percent", "context_window_percent")
    if percent is not None:
        state.context_percent = percent


_HANDLERS: Final = {
    "epic_started": _epic_started,
    "epic_completed": _epic_finished,
    "epic_failed": _epic_finished,
    "test_passed": _test_result,
    "test_failed": _test_result,
    "validation_passed": _test_result,
    "validation_failed": _test_result,
    "deployment_started": _deployment_started,
    "deployment_completed": _deployment_finished,
    "deployment_failed": _deployment_finished,
    "deploy": _deployment_finished,
    "commit_created": _commit,
    "pr_created": _pull_request,
    "pr_merged": _pull_request,
    "checkpoint_created": _checkpoint,
    "checkpoint_loaded": _checkpoint,
    "prd_updated": _prd_updated,
    "context_window_updated": _context,
}


# -- small helpers -----------------------------------------------------------------------------------------------
def describe_counts(passed: int | None, total: int | None, failed: int | None, *, ok: bool) -> str:
    """``"3 of 8 tests passed"``, ``"45 tests passed"``, ``"3 of 8 tests passed, 5 failed"``, ``"5 tests
    failed"``, ``"the tests passed"``, ``"the tests failed"``."""
    if passed is None:
        if failed:
            return f"{failed} {_tests(failed)} failed"
        return "the tests passed" if ok else "the tests failed"
    if total is not None and total != passed:
        text = f"{passed} of {total} tests passed"
    else:
        text = f"{passed} {_tests(passed)} passed"
    return f"{text}, {failed} failed" if failed else text


def _tests(n: int) -> str:
    return "test" if n == 1 else "tests"


def _epic_id(data: Mapping[str, Any]) -> str | None:
    return _str(data, "epic_id", "epic", "epicId")


def _service(data: Mapping[str, Any]) -> str:
    return _str(data, "service", "app", "name") or "unnamed service"


def _str(data: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def _int(data: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    return None


def _float(data: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _started_key(deployment: Deployment) -> float:
    return deployment.started_at.timestamp() if deployment.started_at else 0.0


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None
