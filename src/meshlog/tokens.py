"""API tokens: what a credential of the meshlog server may do, and for which tenant.

A token is shown once, when it is created, as ``mlk_<id>_<secret>``. Stores keep only the id, the tenant, the
scopes and a SHA-256 digest of the secret: the secret is 256 random bits, so a plain digest is as safe as a slow
password hash here and costs microseconds per request. Scopes nest: ``write`` includes ``read``, ``admin``
includes both (and lets its holder read ``/metrics``). Tokens are managed in the store itself (``meshlog token``),
never over HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeAlias

from meshlog._validation import check_tenant
from meshlog.errors import ValidationError

__all__ = ["SCOPES", "ApiToken", "Scope", "issue_token", "parse_token", "scopes_of"]

Scope: TypeAlias = Literal["read", "write", "admin"]
SCOPES: Final[tuple[Scope, ...]] = ("read", "write", "admin")
_IMPLIED: Final[dict[str, frozenset[str]]] = {
    "read": frozenset({"read"}),
    "write": frozenset({"read", "write"}),
    "admin": frozenset({"read", "write", "admin"}),
}
PREFIX: Final = "mlk_"
_ID_RE: Final = re.compile(r"[0-9a-f]{16}")
_TOKEN_RE: Final = re.compile(r"mlk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
MAX_NAME: Final = 200


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A stored token: everything but its secret."""

    id: str
    tenant: str
    scopes: tuple[str, ...]
    secret_hash: str
    name: str | None
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def allows(self, scope: str) -> bool:
        """Whether the token grants ``scope`` (directly or through a wider scope)."""
        return any(scope in _IMPLIED[granted] for granted in self.scopes if granted in _IMPLIED)

    def active(self, now: datetime | None = None) -> bool:
        """Not revoked and not expired."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or (now or datetime.now(UTC)) < self.expires_at

    def matches(self, secret: str) -> bool:
        """Whether ``secret`` is this token's secret (in constant time)."""
        return hmac.compare_digest(_digest(secret), self.secret_hash)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, without the digest."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "scopes": list(self.scopes),
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def scopes_of(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes, checked and in canonical order; ValidationError for an unknown or missing scope."""
    given = set()
    for scope in scopes:
        if scope not in _IMPLIED:
            raise ValidationError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}", field="scope")
        given.add(scope)
    if not given:
        raise ValidationError("a token needs at least one scope", field="scope", rule="required")
    return tuple(s for s in SCOPES if s in given)


def issue_token(
    tenant: str,
    scopes: Iterable[str],
    *,
    name: str | None = None,
    expires_in: timedelta | None = None,
    now: datetime | None = None,
) -> tuple[str, ApiToken]:
    """A new token for ``tenant``: the text to hand to its holder (shown once) and the record to store."""
    check_tenant(tenant)
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME or "\x00" in name):
        raise ValidationError(f"name must be a string of at most {MAX_NAME} characters", field="name")
    if expires_in is not None and expires_in <= timedelta(0):
        raise ValidationError("expires_in must be positive", field="expires_in", rule="min")
    created = now or datetime.now(UTC)
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = ApiToken(
        id=token_id,
        tenant=tenant,
        scopes=scopes_of(scopes),
        secret_hash=_digest(secret),
        name=name,
        created_at=created,
        expires_at=None if expires_in is None else created + expires_in,
    )
    return f"{PREFIX}{token_id}_{secret}", record


def parse_token(text: str) -> tuple[str, str] | None:
    """The id and secret of a token's text, or None when it is not shaped like a meshlog token."""
    match = _TOKEN_RE.fullmatch(text)
    return (match.group(1), match.group(2)) if match else None


def check_token_id(token_id: object) -> str:
    """``token_id`` if it is shaped like a token id; ValidationError otherwise."""
    if not isinstance(token_id, str) or not _ID_RE.fullmatch(token_id):
        raise ValidationError(f"not a token id: {token_id!r}", field="token_id", rule="pattern")
    return token_id
