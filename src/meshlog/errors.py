"""The exceptions meshlog raises.

Every error meshlog raises on purpose derives from :class:`MeshlogError`::

    MeshlogError
    ├── ValidationError            bad input; nothing was written
    │   └── EventTooLarge          data + metadata over the per-event limit
    ├── ConcurrencyError           the append lost a race; nothing was written
    │   ├── WrongExpectedVersion   the stream is not at the version the caller expected
    │   └── IdempotencyConflict    the key was already used for different content
    ├── NotFound                   no such event (or not visible to this tenant)
    ├── InvalidCursor              a query cursor that meshlog did not issue for this query
    ├── ConfigurationError         a URL or option meshlog cannot use
    └── StoreError                 the store failed; the caller may retry
        └── StoreUnavailable       the store cannot be reached

A :class:`ValidationError` or :class:`ConcurrencyError` means nothing was written. A :class:`StoreError`
means the outcome is unknown to meshlog only if the connection broke during commit; emit with an
``idempotency_key`` to make such a retry safe. Adapters translate driver errors into this tree with
``raise ... from exc`` so the original stays visible in the traceback.
"""

from __future__ import annotations

__all__ = [
    "ConcurrencyError",
    "ConfigurationError",
    "EventTooLarge",
    "IdempotencyConflict",
    "InvalidCursor",
    "MeshlogError",
    "NotFound",
    "StoreError",
    "StoreUnavailable",
    "ValidationError",
    "WrongExpectedVersion",
]


class MeshlogError(Exception):
    """Base class of every error meshlog raises on purpose."""


class ValidationError(MeshlogError, ValueError):
    """The input is invalid; nothing was written.

    ``field`` names the offending field (``data``, ``events[3].type``, ...) and ``rule`` the rule it broke
    (``json_object``, ``no_nul``, ``required``, ...), so callers and HTTP layers can report it precisely.
    """

    def __init__(self, message: str, *, field: str | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.rule = rule


class EventTooLarge(ValidationError):
    """The serialized ``data`` and ``metadata`` of one event exceed the store's limit."""

    def __init__(self, message: str, *, field: str | None = None, size: int, limit: int) -> None:
        super().__init__(message, field=field, rule="max_event_bytes")
        self.size = size
        self.limit = limit


class ConcurrencyError(MeshlogError):
    """An append conflicted with what is already stored; nothing was written."""


class WrongExpectedVersion(ConcurrencyError):
    """The stream's version is not the one the append expected.

    ``actual`` is the stream's version when the append was checked (0 when the stream has no events).
    """

    def __init__(self, stream: str, expected: object, actual: int) -> None:
        super().__init__(f"stream {stream!r} is at version {actual}, expected {expected}")
        self.stream = stream
        self.expected = expected
        self.actual = actual


class IdempotencyConflict(ConcurrencyError):
    """The idempotency key was already used for an event with different content."""

    def __init__(self, key: str, existing_id: str, reason: str) -> None:
        super().__init__(f"idempotency key {key!r} already recorded event {existing_id} with different {reason}")
        self.key = key
        self.existing_id = existing_id
        self.reason = reason


class NotFound(MeshlogError, LookupError):
    """No such event, or not one this tenant may see."""


class InvalidCursor(MeshlogError, ValueError):
    """The cursor is malformed or was issued for a different query."""


class ConfigurationError(MeshlogError, ValueError):
    """A store URL, option or environment variable meshlog cannot use."""


class StoreError(MeshlogError):
    """The store failed while serving a request."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (connection refused, pool exhausted, server gone)."""
