"""Who is asking: API tokens on every request, once the store holds any.

A server whose store has no active token serves one tenant (``--tenant``) to anyone who can reach it, which is
why it binds to loopback unless told ``--insecure``. As soon as a token exists (``meshlog token create``) every
data route needs one, and the token decides the tenant: that is how one server serves many tenants. Requiring
tokens is sticky: revoking every token later does not reopen a running server.

Tokens are read from ``Authorization: Bearer <token>`` or, for Dapr's sidecar (its app API token feature),
``dapr-api-token: <token>``. A verified token is cached for ``cache_ttl`` seconds (a revocation takes effect
within that time), an unknown one for a few seconds, so a request costs one hash and one dictionary lookup.
"""

from __future__ import annotations

import hashlib
import time
from typing import Final

from starlette.requests import Request

from meshlog.log_async import AsyncEventLog
from meshlog.server.problems import Problem
from meshlog.tokens import ApiToken

__all__ = ["Authenticator", "credential"]

_REQUIRED_TTL: Final = 5.0
_NEGATIVE_TTL: Final = 5.0
_MAX_CACHED: Final = 10_000
_REALM: Final = 'Bearer realm="meshlog"'


def credential(request: Request) -> str | None:
    """The token the request carries, or None."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    dapr = request.headers.get("dapr-api-token")
    return dapr.strip() if dapr else None


class Authenticator:
    """Decides whether requests need a token and checks the ones they carry (see the module's docstring)."""

    def __init__(self, *, cache_ttl: float = 30.0) -> None:
        self.cache_ttl = cache_ttl
        self._required = False
        self._checked_at = -_REQUIRED_TTL
        self._cache: dict[bytes, tuple[float, ApiToken | None]] = {}

    async def required(self, log: AsyncEventLog) -> bool:
        """Whether requests need a token: the store holds an active token, or held one since the server started."""
        if self._required:
            return True
        now = time.monotonic()
        if now - self._checked_at >= min(_REQUIRED_TTL, self.cache_ttl):
            self._required = await log.has_tokens()
            self._checked_at = now
        return self._required

    async def check(self, log: AsyncEventLog, request: Request, scope: str) -> ApiToken:
        """The request's token, which grants ``scope``; Problem 401 without a valid token, 403 without the scope."""
        text = credential(request)
        if text is None:
            raise Problem(
                401, "unauthorized", "this server requires an API token", headers={"WWW-Authenticate": _REALM}
            )
        token = await self._lookup(log, text)
        if token is None or not token.active():
            raise Problem(
                401,
                "unauthorized",
                "the API token is not valid (unknown, revoked or expired)",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )
        if not token.allows(scope):
            raise Problem(
                403,
                "forbidden",
                f"the API token does not grant the {scope!r} scope",
                headers={"WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="{scope}"'},
                scope=scope,
            )
        return token

    async def _lookup(self, log: AsyncEventLog, text: str) -> ApiToken | None:
        key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        token = await log.authenticate(text)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (now + min(self.cache_ttl, _NEGATIVE_TTL if token is None else self.cache_ttl), token)
        return token
