"""RFC 9457 problem details: every error the server answers is ``application/problem+json``.

``{"type": "urn:meshlog:problem:<code>", "title": ..., "status": ..., "detail": ..., ...extras}``. meshlog's
exceptions map to a status and code by :func:`from_meshlog_error`; everything the server itself refuses (a body
over the byte limit, malformed JSON, invalid UTF-8, unknown fields) is a :class:`Problem` raised by the route.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from starlette.responses import Response

from meshlog.errors import (
    ConfigurationError,
    EventTooLarge,
    IdempotencyConflict,
    InvalidCursor,
    MeshlogError,
    NotFound,
    StoreError,
    StoreUnavailable,
    ValidationError,
    WrongExpectedVersion,
)

__all__ = ["MEDIA_TYPE", "TITLES", "Problem", "from_meshlog_error", "problem_response"]

MEDIA_TYPE: Final = "application/problem+json"
TYPE_PREFIX: Final = "urn:meshlog:problem:"

TITLES: Final[Mapping[str, str]] = {
    "validation": "Invalid event",
    "event-too-large": "Event too large",
    "body-too-large": "Request body too large",
    "bad-request": "Bad request",
    "invalid-cursor": "Invalid cursor",
    "wrong-expected-version": "Wrong expected version",
    "idempotency-conflict": "Idempotency conflict",
    "unauthorized": "Unauthorized",
    "forbidden": "Forbidden",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "store-unavailable": "Store unavailable",
    "store-error": "Store error",
    "configuration": "Configuration error",
    "internal": "Internal server error",
}


class Problem(Exception):
    """A problem to answer with: ``status``, ``code`` (the last part of ``type``), ``detail`` and extras."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extras: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.extras = extras

    def to_dict(self) -> dict[str, Any]:
        """The problem+json body."""
        body: dict[str, Any] = {
            "type": TYPE_PREFIX + self.code,
            "title": TITLES.get(self.code, self.code.replace("-", " ").capitalize()),
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extras)
        return body


def from_meshlog_error(exc: MeshlogError) -> Problem:
    """The problem for one of meshlog's exceptions (see the table in docs/server.md)."""
    detail = str(exc)
    if isinstance(exc, EventTooLarge):
        return Problem(413, "event-too-large", detail, field=exc.field, size=exc.size, limit=exc.limit)
    if isinstance(exc, ValidationError):
        return Problem(422, "validation", detail, field=exc.field, rule=exc.rule)
    if isinstance(exc, InvalidCursor):
        return Problem(400, "invalid-cursor", detail)
    if isinstance(exc, WrongExpectedVersion):
        expected = exc.expected
        shown = expected if isinstance(expected, int) else getattr(expected, "value", str(expected))
        return Problem(409, "wrong-expected-version", detail, stream=exc.stream, expected=shown, actual=exc.actual)
    if isinstance(exc, IdempotencyConflict):
        return Problem(409, "idempotency-conflict", detail, key=exc.key, existing_id=exc.existing_id, reason=exc.reason)
    if isinstance(exc, NotFound):
        return Problem(404, "not-found", detail)
    if isinstance(exc, StoreUnavailable):
        return Problem(503, "store-unavailable", detail, headers={"Retry-After": "1"})
    if isinstance(exc, StoreError):
        return Problem(503, "store-error", detail)
    if isinstance(exc, ConfigurationError):
        return Problem(500, "configuration", detail)
    return Problem(500, "internal", detail)


def problem_response(problem: Problem) -> Response:
    """The HTTP response for ``problem``."""
    body = json.dumps(problem.to_dict(), ensure_ascii=False, allow_nan=False, default=str).encode()
    return Response(body, status_code=problem.status, media_type=MEDIA_TYPE, headers=problem.headers)
