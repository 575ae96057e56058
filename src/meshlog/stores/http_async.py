"""The HTTP store: a remote meshlog server behind the store port, over its HTTP API (v1).

``AsyncHttpStore("http://host:8080")`` speaks the API of ``meshlog.server``; wrapped in an event log it behaves like
any other store. What differs, and why:

- **Tenant.** The server serves one tenant (the one it was started with); the tenant of a request is not sent,
  and recorded events carry the server's tenant.
- **Idempotency.** Every event is sent with an idempotency key. When the caller gave none, the store assigns
  ``auto:<event id>`` (or ``auto:<random>`` for a caller-given id) before the first attempt, so a retry after a
  lost response is answered with the events already recorded instead of writing them twice. Such keys are stored
  with the events like any other.
- **Retries.** Connection failures, timeouts and the answers 429, 502, 503 and 504 are retried with exponential
  backoff and jitter (honouring ``Retry-After``); other answers never are. When the retries run out the call
  fails with ``StoreUnavailable`` (``StoreError`` for a server-side store error).
- **The spool** (opt-in, ``spool=path``): an append the server could not take after the retries is kept in a
  local :class:`~meshlog.spool.Spool` and fails with :class:`~meshlog.spool.Spooled`; spooled requests are
  delivered first, in order, by the next append once the server answers again (or by :meth:`flush_spool`).
- **Snapshots** stay in this process: the server's API has no snapshot routes, and a snapshot is only a shortcut
  for replay, so :meth:`save_snapshot` keeps it in memory for :meth:`load_snapshot` of this store object.
- **Waiting** for new events polls ``GET /v1/head`` every ``poll_interval`` seconds.
- **Instances** are registered, beaten and closed by the server (``/v1/instances``), which writes their events
  with its own clock and settings; stale detection runs in the server, so :meth:`mark_instance_stale` and
  :meth:`silent_instances` are not offered here.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx

from meshlog import __version__
from meshlog._concurrency import AsyncLock, async_sleep
from meshlog._validation import AppendRequest, PreparedEvent
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
from meshlog.events import RecordedEvent, StreamInfo, StreamState, uuid7
from meshlog.query import EventFilter, Order
from meshlog.registry import Instance, InstanceChange
from meshlog.spool import DEFAULT_MAX_BYTES, DeliveryReport, Spool, Spooled, SpoolFull, is_final
from meshlog.stats import EventStats, TraceSummary
from meshlog.store_async import AppendOutcome
from meshlog.tokens import ApiToken

__all__ = ["AUTO_KEY_PREFIX", "AsyncHttpStore", "decode_event", "encode_request", "error_from_response"]

AUTO_KEY_PREFIX: Final = "auto:"
"""The prefix of the idempotency keys the store assigns to events sent without one."""
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
"""Answers that mean "try again later": retried, like connection failures. No other answer is retried."""
MAX_PAGE: Final = 1000
"""The most events the server returns per read."""
URL_OPTIONS: Final = frozenset({"spool", "spool_max_bytes", "timeout", "retries"})
"""meshlog's own options in an ``http(s)://`` store URL's query string."""
_PROBLEM_PREFIX: Final = "urn:meshlog:problem:"


class AsyncHttpStore:
    """A meshlog server as a store (see the module's docstring).

    ``url`` is the server's base URL (``http://host:8080``, or with a path prefix), optionally with options in the
    query string: ``spool`` (a spool file path), ``spool_max_bytes``, ``timeout`` (seconds) and ``retries``;
    keyword arguments win over them. ``token`` (default ``$MESHLOG_TOKEN``) is sent as ``Authorization: Bearer``.
    ``retries`` is how many times a failed attempt is repeated; the wait before attempt ``n`` is about
    ``backoff * 2**n`` seconds (at most ``max_backoff``), half of it random. ``timeout`` bounds each attempt,
    ``connect_timeout`` its connection. ``spool_probe_interval`` is how long, after a failed delivery, appends go
    straight to the spool before one tries to deliver it again.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float | None = None,
        connect_timeout: float = 5.0,
        retries: int | None = None,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        poll_interval: float = 0.25,
        spool: str | os.PathLike[str] | Spool | None = None,
        spool_max_bytes: int | None = None,
        spool_probe_interval: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base, options = parse_http_url(url)
        self.url = _redact(url)
        self.base_url = base
        self.retries = _count(retries if retries is not None else options.get("retries", "3"), "retries")
        seconds = timeout if timeout is not None else _seconds(options.get("timeout", "30"), "timeout")
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.poll_interval = poll_interval
        self.spool_probe_interval = spool_probe_interval
        token = token if token is not None else os.environ.get("MESHLOG_TOKEN") or None
        headers = {"Accept": "application/json", "User-Agent": f"meshlog/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        spool = spool if spool is not None else options.get("spool")
        self._owns_spool = not isinstance(spool, Spool)
        if isinstance(spool, Spool) or spool is None:
            self._spool = spool
        else:
            limit = spool_max_bytes or _count(options.get("spool_max_bytes", DEFAULT_MAX_BYTES), "spool_max_bytes")
            self._spool = Spool(spool, max_bytes=limit)
        self._client = httpx.AsyncClient(
            base_url=base,
            headers=headers,
            timeout=httpx.Timeout(seconds, connect=min(connect_timeout, seconds)),
            transport=transport,
            follow_redirects=False,
        )
        # One append (with the spool delivery before it) at a time: spooled requests must reach the server before
        # any request that came after them, and two deliveries of one spool would only race.
        self._append_lock = AsyncLock()
        self._next_probe = 0.0
        self._snapshots: dict[tuple[str, str, str, int], tuple[int, str]] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    @property
    def spool(self) -> Spool | None:
        """The spool that keeps appends while the server is unreachable, or None."""
        return self._spool

    # -- transport ----------------------------------------------------------------------------------------------
    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Exponential backoff with jitter: half the delay fixed, half random, so that clients that failed together
        do not all come back at the same moment; at least the server's ``Retry-After`` (capped)."""
        delay = min(self.max_backoff, self.backoff * 2.0**attempt)
        delay = delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - jitter, not a secret
        if response is not None:
            try:
                asked = float(response.headers.get("Retry-After", "0"))
            except ValueError:
                asked = 0.0
            delay = max(delay, min(self.max_backoff, asked))
        return delay

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        body: str | None = None,
        retries: int | None = None,
    ) -> httpx.Response:
        """Send a request, retrying connection failures and 429/502/503/504; return any other answer.

        Raises StoreUnavailable (StoreError for the server's ``store-error``) when the retries run out. Retrying a
        POST of events is safe because every event carries an idempotency key.
        """
        retries = self.retries if retries is None else retries
        headers = {"Content-Type": "application/json"} if body is not None else None
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                query: list[tuple[str, str | int | float | bool | None]] | None = (
                    None if params is None else list(params)
                )
                response = await self._client.request(method, path, params=query, content=body, headers=headers)
            except httpx.UnsupportedProtocol as exc:
                raise ConfigurationError(f"{self.url}: {exc}") from exc
            except httpx.TransportError as exc:
                error: MeshlogError = StoreUnavailable(f"cannot reach the meshlog server at {self.url}: {exc!r}")
                error.__cause__ = exc
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                error = error_from_response(response)
            if attempt >= retries:
                raise error
            await async_sleep(self._delay(attempt, response))
            attempt += 1

    async def _get(self, path: str, params: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        response = await self._request("GET", path, params=params)
        if response.status_code != 200:
            raise error_from_response(response)
        return _json(response)

    # -- the store port -----------------------------------------------------------------------------------------
    async def migrate(self) -> None:
        """Check that the server is ready (``GET /readyz``); the server migrates its own store.

        With a spool an unreachable server is not an error: appends go to the spool until it answers.
        """
        try:
            response = await self._request("GET", "/readyz")
        except StoreError:
            if self._spool is not None:
                return
            raise
        if response.status_code != 200:
            error = error_from_response(response)
            if self._spool is not None and isinstance(error, StoreError):
                return
            raise error

    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        """Send each request as one ``POST /v1/events`` (one event, or an atomic batch), in order.

        Every event gets its idempotency key before the first attempt (see the module's docstring). When the server
        stays unreachable, the request's outcome is ``StoreUnavailable`` and the later requests of the call are not
        attempted; with a spool, they are all spooled instead (outcome :class:`~meshlog.spool.Spooled`, or
        :class:`~meshlog.spool.SpoolFull` when the spool has no room). Pending spooled requests are delivered
        before any new one.
        """
        async with self._append_lock:
            outcomes: list[AppendOutcome] = []
            down: MeshlogError | None = None
            if self._spool is not None and self._spool.has_pending():
                down = await self._drain(probe=True)
            for request in requests:
                body, ids = encode_request(request)
                if down is not None:
                    outcomes.append(self._hold(body, ids, down))
                    continue
                try:
                    outcomes.append(await self._post(body))
                except MeshlogError as exc:
                    down = exc
                    self._next_probe = time.monotonic() + self.spool_probe_interval
                    outcomes.append(self._hold(body, ids, exc) if self._spool is not None else exc)
            return outcomes

    async def _post(self, body: str, *, retries: int | None = None) -> AppendOutcome:
        """The server's final answer to one append: the recorded events or the error that stopped it. Raises when
        there is no final answer (unreachable, a store error, a refused token)."""
        response = await self._request("POST", "/v1/events", body=body, retries=retries)
        if response.status_code in (200, 201):
            payload = _json(response)
            try:
                if "events" in payload:
                    return [decode_event(e) for e in payload["events"]]
                return [decode_event(payload["event"])]
            except (KeyError, TypeError, ValueError) as exc:
                raise StoreError(f"unexpected answer from {self.url}: {exc!r}") from exc
        error = error_from_response(response)
        if is_final(error):
            return error
        raise error

    def _hold(self, body: str, ids: Sequence[str], reason: MeshlogError) -> MeshlogError:
        """The outcome of a request that could not be sent because of ``reason``: spooled when there is a spool."""
        if self._spool is None:
            again = type(reason)(f"not sent: an earlier request of this append failed: {reason}")
            again.__cause__ = reason
            return again
        try:
            entry = self._spool.put(body)
        except (SpoolFull, StoreError) as exc:
            exc.__cause__ = reason
            return exc
        spooled = Spooled(
            f"{reason}; the request was spooled to {self._spool.path} (entry {entry}) and will be delivered later",
            path=self._spool.path,
            entry_id=entry,
            event_ids=ids,
        )
        spooled.__cause__ = reason
        return spooled

    async def _drain(self, *, probe: bool) -> MeshlogError | None:
        """Deliver the spool in order. Returns None when it is empty, else why delivery stopped.

        A probe (before an append) makes one attempt per entry, and after a failure none until
        ``spool_probe_interval`` has passed, so that appends do not each wait through the retries while the server
        is down; :meth:`flush_spool` retries as configured.
        """
        assert self._spool is not None
        if probe and time.monotonic() < self._next_probe:
            return StoreUnavailable(f"the meshlog server at {self.url} was unreachable moments ago")
        after = 0
        while True:
            entries = self._spool.pending(100, after=after)
            if not entries:
                return None
            for entry in entries:
                after = entry.id
                try:
                    outcome = await self._post(entry.body, retries=0 if probe else None)
                except MeshlogError as exc:
                    self._spool.note_failure(entry.id, str(exc))
                    self._next_probe = time.monotonic() + self.spool_probe_interval
                    return exc
                if isinstance(outcome, MeshlogError):
                    self._spool.reject(entry.id, f"{type(outcome).__name__}: {outcome}")
                else:
                    self._spool.ack(entry.id)

    async def flush_spool(self) -> DeliveryReport:
        """Deliver the spooled requests in order, with the usual retries, stopping at the first that cannot be.

        Safe to run while appends happen (they wait) and from several processes at once (keys make a request
        that two of them send count once).
        """
        if self._spool is None:
            raise ConfigurationError("this store has no spool (AsyncHttpStore(url, spool=path))")
        async with self._append_lock:
            before = self._spool.status()
            error = await self._drain(probe=False)
            after = self._spool.status()
        return DeliveryReport(
            delivered=after.delivered - before.delivered,
            rejected=after.rejected - before.rejected,
            remaining=after.pending,
            error=None if error is None else f"{type(error).__name__}: {error}",
        )

    async def get(self, tenant: str, event_id: str) -> RecordedEvent | None:
        response = await self._request("GET", f"/v1/events/{_segment(event_id)}", params=[("raw", "true")])
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise error_from_response(response)
        return _decode(self.url, _json(response)["event"])

    async def query(self, tenant: str, flt: EventFilter, *, order: Order, limit: int) -> list[RecordedEvent]:
        """Reads pages of at most 1,000 events, continuing after the last position read (keyset paging)."""
        rows: list[RecordedEvent] = []
        run = flt
        while len(rows) < limit:
            size = min(MAX_PAGE, limit - len(rows))
            params = [*_filter_params(run), ("order", order), ("limit", str(size)), ("raw", "true")]
            payload = await self._get("/v1/events", params)
            page = [_decode(self.url, e) for e in payload["events"]]
            rows.extend(page)
            if len(page) < size or not payload.get("has_more"):
                break
            last = page[-1].position
            run = replace(run, after_position=last) if order == "asc" else replace(run, before_position=last)
        return rows

    async def count(self, tenant: str, flt: EventFilter) -> int:
        params = [*_filter_params(flt), ("limit", "1"), ("total_count", "true")]
        total = (await self._get("/v1/events", params)).get("total_count")
        if not isinstance(total, int):
            raise StoreError(f"unexpected answer from {self.url}: no total_count")
        return total

    async def stats(self, tenant: str, since: datetime, until: datetime, bucket_seconds: int) -> EventStats:
        """``GET /v1/stats`` for the window (the server counts in its own store)."""
        params = [("since", since.isoformat()), ("until", until.isoformat()), ("bucket", str(bucket_seconds))]
        payload = await self._get("/v1/stats", params)
        try:
            return EventStats.from_dict(payload)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"unexpected stats from {self.url}: {exc!r}") from exc

    async def traces(
        self, tenant: str, since: datetime, until: datetime, limit: int, agent_id: str | None
    ) -> list[TraceSummary]:
        """``GET /v1/traces`` for the window (the server groups in its own store)."""
        params = [("since", since.isoformat()), ("until", until.isoformat()), ("limit", str(limit))]
        if agent_id is not None:
            params.append(("agent_id", agent_id))
        payload = await self._get("/v1/traces", params)
        try:
            return [TraceSummary.from_dict(item) for item in payload["traces"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"unexpected traces from {self.url}: {exc!r}") from exc

    async def read_stream(
        self,
        tenant: str,
        stream: str,
        *,
        from_version: int,
        to_version: int | None,
        backwards: bool,
        limit: int,
    ) -> list[RecordedEvent]:
        rows: list[RecordedEvent] = []
        low, high = from_version, to_version
        while len(rows) < limit and (high is None or low <= high):
            size = min(MAX_PAGE, limit - len(rows))
            params = [("from_version", str(low)), ("backwards", _bool(backwards)), ("limit", str(size))]
            if high is not None:
                params.append(("to_version", str(high)))
            params.append(("raw", "true"))
            payload = await self._get(f"/v1/streams/{_segment(stream)}/events", params)
            page = [_decode(self.url, e) for e in payload["events"]]
            rows.extend(page)
            if len(page) < size:
                break
            if backwards:
                high = page[-1].stream_position - 1
            else:
                low = page[-1].stream_position + 1
        return rows

    async def stream_version(self, tenant: str, stream: str) -> int:
        return _int(self.url, (await self._get(f"/v1/streams/{_segment(stream)}/version"))["version"])

    async def list_streams(self, tenant: str, *, prefix: str | None, after: str | None, limit: int) -> list[StreamInfo]:
        params = [("limit", str(limit))]
        if prefix is not None:
            params.append(("prefix", prefix))
        if after is not None:
            params.append(("after", after))
        payload = await self._get("/v1/streams", params)
        try:
            return [
                StreamInfo(
                    stream=s["stream"],
                    version=s["version"],
                    last_position=s["last_position"],
                    created_at=datetime.fromisoformat(s["created_at"]),
                    updated_at=datetime.fromisoformat(s["updated_at"]),
                )
                for s in payload["streams"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"unexpected answer from {self.url}: {exc!r}") from exc

    async def head_position(self, tenant: str) -> int:
        return _int(self.url, (await self._get("/v1/head"))["position"])

    async def wait_for_events(self, tenant: str, after_position: int, timeout: float) -> None:
        """Polls ``GET /v1/head`` every ``poll_interval`` seconds until it passes ``after_position``."""
        deadline = time.monotonic() + timeout
        while await self.head_position(tenant) <= after_position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await async_sleep(min(remaining, self.poll_interval))

    async def lineage(self, tenant: str, event_id: str) -> tuple[list[RecordedEvent], list[RecordedEvent]] | None:
        response = await self._request("GET", f"/v1/events/{_segment(event_id)}/lineage")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise error_from_response(response)
        payload = _json(response)
        ancestors = [_decode(self.url, e) for e in payload["ancestors"]]
        return ancestors, [_decode(self.url, e) for e in payload["descendants"]]

    async def graph(
        self, tenant: str, event_id: str, *, max_depth: int, limit: int
    ) -> tuple[list[tuple[RecordedEvent, int]], bool]:
        path = f"/v1/events/{_segment(event_id)}/graph"
        response = await self._request("GET", path, params=[("max_depth", str(max_depth)), ("limit", str(limit))])
        if response.status_code == 404:
            return [], False
        if response.status_code != 200:
            raise error_from_response(response)
        payload = _json(response)
        nodes = [(_decode(self.url, n["event"]), _int(self.url, n["distance"])) for n in payload["nodes"]]
        # A server that does not know the limit answers with every event within reach.
        return nodes[:limit], payload.get("truncated") is True or len(nodes) > limit

    async def save_snapshot(
        self, tenant: str, stream: str, projection: str, projection_version: int, stream_version: int, state: str
    ) -> None:
        """Kept in this store object only (the HTTP API has no snapshots); see the module's docstring."""
        self._snapshots[(tenant, stream, projection, projection_version)] = (stream_version, state)

    async def load_snapshot(
        self, tenant: str, stream: str, projection: str, projection_version: int
    ) -> tuple[int, str] | None:
        return self._snapshots.get((tenant, stream, projection, projection_version))

    async def get_checkpoint(self, tenant: str, consumer: str) -> int | None:
        position = (await self._get(f"/v1/checkpoints/{_segment(consumer)}"))["position"]
        return None if position is None else _int(self.url, position)

    async def set_checkpoint(self, tenant: str, consumer: str, position: int) -> None:
        body = json.dumps({"position": position})
        response = await self._request("PUT", f"/v1/checkpoints/{_segment(consumer)}", body=body)
        if response.status_code != 200:
            raise error_from_response(response)

    # Tokens live in the server's own store: manage them there (``meshlog token create --url <its database>``).
    def _no_tokens(self) -> ConfigurationError:
        return ConfigurationError(f"{self.url}: API tokens are managed on the server's store, not over HTTP")

    async def save_token(self, token: ApiToken) -> None:
        raise self._no_tokens()

    async def find_token(self, token_id: str) -> ApiToken | None:
        raise self._no_tokens()

    async def list_tokens(self, tenant: str) -> list[ApiToken]:
        raise self._no_tokens()

    async def revoke_token(self, tenant: str, token_id: str) -> bool:
        raise self._no_tokens()

    async def has_tokens(self) -> bool:
        raise self._no_tokens()

    # -- instances: whole operations on the server, which writes their events -------------------------------
    async def _change(self, path: str, body: Mapping[str, Any], tenant: str) -> InstanceChange | None:
        response = await self._request("POST", path, body=json.dumps(body, separators=(",", ":")))
        if response.status_code == 404 and _json_or_empty(response).get("type") == _PROBLEM_PREFIX + "not-found":
            return None
        if response.status_code not in (200, 201):
            raise error_from_response(response)
        payload = _json(response)
        previous = payload.get("previous")
        return InstanceChange(
            previous=None if previous is None else Instance.from_dict(previous, tenant=tenant),
            current=Instance.from_dict(payload["instance"], tenant=tenant),
            heartbeat_event=bool(payload.get("heartbeat_event")),
            events_recorded=True,
        )

    async def register_instance(self, tenant: str, instance: Instance) -> InstanceChange:
        body = {
            "id": instance.id,
            "name": instance.name,
            "project": instance.project,
            "host": instance.host,
            "metadata": dict(instance.metadata),
        }
        change = await self._change("/v1/instances", body, tenant)
        if change is None:
            raise StoreError(f"unexpected answer from {self.url}: no instance registered")
        return change

    async def heartbeat_instance(
        self, tenant: str, instance_id: str, at: datetime, *, event_every: float, data: Mapping[str, Any]
    ) -> InstanceChange | None:
        return await self._change(f"/v1/instances/{_segment(instance_id)}/heartbeat", {"data": dict(data)}, tenant)

    async def close_instance(
        self, tenant: str, instance_id: str, at: datetime, *, reason: str | None
    ) -> InstanceChange | None:
        body = {} if reason is None else {"reason": reason}
        return await self._change(f"/v1/instances/{_segment(instance_id)}/close", body, tenant)

    async def mark_instance_stale(
        self, tenant: str, instance_id: str, last_heartbeat: datetime
    ) -> InstanceChange | None:
        raise ConfigurationError(f"{self.url}: stale instances are detected by the server, not over HTTP")

    async def silent_instances(self, tenant: str, before: datetime, limit: int) -> list[Instance]:
        raise ConfigurationError(f"{self.url}: stale instances are detected by the server, not over HTTP")

    async def get_instance(self, tenant: str, instance_id: str) -> Instance | None:
        response = await self._request("GET", f"/v1/instances/{_segment(instance_id)}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise error_from_response(response)
        return Instance.from_dict(_json(response), tenant=tenant)

    async def list_instances(
        self, tenant: str, *, status: str | None, project: str | None, after: str | None, limit: int
    ) -> list[Instance]:
        params = [(k, v) for k, v in (("status", status), ("project", project), ("after", after)) if v is not None]
        payload = await self._get("/v1/instances", [*params, ("limit", str(limit))])
        return [Instance.from_dict(i, tenant=tenant) for i in payload["instances"]]

    async def close(self) -> None:
        await self._client.aclose()
        if self._spool is not None and self._owns_spool:
            self._spool.close()


# -- URLs ---------------------------------------------------------------------------------------------------------
def parse_http_url(url: str) -> tuple[str, dict[str, str]]:
    """The server's base URL and meshlog's options from an ``http(s)://`` store URL. Raises ConfigurationError."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigurationError(f"an HTTP store URL looks like http://host:8080, got {_redact(url)!r}")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(options) - URL_OPTIONS
    if unknown:
        raise ConfigurationError(f"unknown HTTP store options {sorted(unknown)}; known: {sorted(URL_OPTIONS)}")
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return base, options


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
    return url


def _count(value: object, name: str) -> int:
    try:
        number = int(str(value))
    except ValueError:
        number = -1
    if isinstance(value, bool) or number < 0:
        raise ConfigurationError(f"{name} must be an integer >= 0, got {value!r}")
    return number


def _seconds(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
    return number


def _segment(value: str) -> str:
    """One path segment, percent-encoded (stream names hold ``:`` and ``/``)."""
    return quote(value, safe="")


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _filter_params(flt: EventFilter) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for name in ("stream", "trace_id", "task_id", "agent_id", "parent_id", "text"):
        value = getattr(flt, name)
        if value is not None:
            params.append((name, value))
    params.extend(("type", t) for t in flt.types or ())
    if flt.since is not None:
        params.append(("since", flt.since.isoformat()))
    if flt.until is not None:
        params.append(("until", flt.until.isoformat()))
    if flt.after_position is not None:
        params.append(("after_position", str(flt.after_position)))
    if flt.before_position is not None:
        params.append(("before_position", str(flt.before_position)))
    return params


# -- bodies -------------------------------------------------------------------------------------------------------
def encode_request(request: AppendRequest) -> tuple[str, list[str]]:
    """The ``POST /v1/events`` body for one append request, and the ids its events will have.

    Every event gets an idempotency key here, before anything is sent: the caller's, else ``auto:<event id>``.
    An id the caller chose gets a random key instead, so that reusing that id for another append is still
    reported as a reused id rather than answered with the first event.
    """
    events = [_encode_event(e) for e in request.events]
    expected = request.expected_version
    shown: int | str = expected.value if isinstance(expected, StreamState) else expected
    body: dict[str, Any] = dict(events[0]) if len(events) == 1 else {"events": events}
    if shown != StreamState.ANY.value:
        body["expected_version"] = shown
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text, [e.id for e in request.events]


def _encode_event(event: PreparedEvent) -> dict[str, Any]:
    key = event.idempotency_key
    if key is None:
        key = f"{AUTO_KEY_PREFIX}{uuid7() if event.id_given else event.id}"
    out: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "version": event.version,
        "stream": event.stream,
        "data": json.loads(event.data_json),
        "idempotency_key": key,
    }
    if event.metadata_json != "{}":
        out["metadata"] = json.loads(event.metadata_json)
    for name in ("trace_id", "task_id", "agent_id", "parent_id"):
        value = getattr(event, name)
        if value is not None:
            out[name] = value
    if event.related:
        out["related"] = list(event.related)
    if event.occurred_at is not None:
        out["occurred_at"] = event.occurred_at.isoformat()
    if event.external_parent:
        out["external_parent"] = True
    return out


def decode_event(raw: Mapping[str, Any]) -> RecordedEvent:
    """A :class:`~meshlog.RecordedEvent` from its JSON form (``RecordedEvent.to_dict()``)."""
    occurred = raw.get("occurred_at")
    return RecordedEvent(
        id=raw["id"],
        position=raw["position"],
        stream=raw["stream"],
        stream_position=raw["stream_position"],
        type=raw["type"],
        version=raw["version"],
        data=raw["data"],
        metadata=raw.get("metadata") or {},
        trace_id=raw.get("trace_id"),
        task_id=raw.get("task_id"),
        agent_id=raw.get("agent_id"),
        parent_id=raw.get("parent_id"),
        root_id=raw["root_id"],
        depth=raw["depth"],
        related=tuple(raw.get("related") or ()),
        idempotency_key=raw.get("idempotency_key"),
        tenant=raw["tenant"],
        occurred_at=datetime.fromisoformat(occurred) if occurred else None,
        recorded_at=datetime.fromisoformat(raw["recorded_at"]),
        outcome=raw.get("outcome"),
    )


def _decode(url: str, raw: Any) -> RecordedEvent:
    try:
        return decode_event(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"unexpected event from {url}: {exc!r}") from exc


def _int(url: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreError(f"unexpected answer from {url}: {value!r} is not an integer")
    return value


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError as exc:
        raise StoreError(f"{response.request.url} answered {response.status_code} with invalid JSON") from exc
    if not isinstance(value, dict):
        raise StoreError(f"{response.request.url} answered {response.status_code} with {type(value).__name__}")
    return value


def _expected(value: object) -> object:
    if isinstance(value, str):
        try:
            return StreamState(value)
        except ValueError:
            return value
    return value


def error_from_response(response: httpx.Response) -> MeshlogError:
    """The meshlog error for an error answer: from its problem details (RFC 9457) when it has them."""
    problem: dict[str, Any] = {}
    if response.headers.get("Content-Type", "").split(";")[0].strip() in {
        "application/problem+json",
        "application/json",
    }:
        try:
            value = response.json()
        except ValueError:
            value = None
        if isinstance(value, dict):
            problem = value
    status = response.status_code
    kind = str(problem.get("type", ""))
    code = kind[len(_PROBLEM_PREFIX) :] if kind.startswith(_PROBLEM_PREFIX) else ""
    detail = str(problem.get("detail") or problem.get("title") or response.reason_phrase or f"HTTP {status}")
    field = problem.get("field")
    try:
        if code == "validation":
            return ValidationError(detail, field=field, rule=problem.get("rule"))
        if code == "event-too-large":
            return EventTooLarge(detail, field=field, size=int(problem["size"]), limit=int(problem["limit"]))
        if code == "body-too-large":
            return ValidationError(detail, field=None, rule="max_body_bytes")
        if code == "bad-request":
            return ValidationError(detail, field=field, rule="bad_request")
        if code == "invalid-cursor":
            return InvalidCursor(detail)
        if code == "wrong-expected-version":
            return WrongExpectedVersion(
                str(problem["stream"]), _expected(problem.get("expected")), int(problem["actual"])
            )
        if code == "idempotency-conflict":
            return IdempotencyConflict(str(problem["key"]), str(problem["existing_id"]), str(problem["reason"]))
    except (KeyError, TypeError, ValueError):
        pass
    if code == "not-found" or status == 404:
        return NotFound(detail)
    if code == "store-error":
        return StoreError(detail)
    if code == "store-unavailable" or status in RETRY_STATUSES:
        return StoreUnavailable(f"the meshlog server answered {status}: {detail}")
    if status in (401, 403):
        return ConfigurationError(f"the meshlog server refused the request ({status}: {detail}); check the token")
    if code == "configuration":
        return ConfigurationError(detail)
    if 400 <= status < 500:
        return ValidationError(
            f"the meshlog server refused the request ({status}): {detail}", rule="http_" + str(status)
        )
    return StoreError(f"the meshlog server answered {status}: {detail}")
