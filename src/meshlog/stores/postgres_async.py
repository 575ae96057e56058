"""``postgresql://...``: the production store (psycopg 3 and its connection pool).

How it keeps the invariants:

- Every append is one round trip: ``SELECT <schema>.append(requests)`` in autocommit mode. The function takes a
  transaction-scoped advisory lock, checks versions, idempotency keys and lineage, draws positions and inserts,
  so positions are assigned and committed in the same order (no reader skips an event) and a group of
  requests costs one commit. See ``sql/postgres/0001_initial.sql`` (and the function's current version in
  ``0006_append_speed.sql``).
- ``events`` is partitioned by month on ``recorded_at``; the store creates partitions months ahead on
  migration and again whenever the covered range runs short, and a default partition catches the rest, so an
  insert never fails for want of a partition.
- Triggers refuse UPDATE, DELETE and TRUNCATE of events.
- Readers use plain autocommit queries; subscribers wait on LISTEN/NOTIFY as a wake-up hint and poll behind it.
"""

from __future__ import annotations

import json
import logging
import re
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Final

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from meshlog._concurrency import AsyncCondition
from meshlog._validation import AppendRequest
from meshlog.errors import (
    ConfigurationError,
    IdempotencyConflict,
    StoreError,
    StoreUnavailable,
    ValidationError,
    WrongExpectedVersion,
)
from meshlog.events import RecordedEvent, StreamInfo, StreamState
from meshlog.query import EventFilter, Order
from meshlog.registry import Instance, InstanceChange
from meshlog.stats import (
    LLM_CALL_TYPE,
    LLM_RESULT_TYPES,
    EventStats,
    TraceSummary,
    build_stats,
    failure_type_sql,
    trace_agents,
)
from meshlog.store_async import AppendOutcome
from meshlog.stores._sql import INSTANCE_COLUMNS, TOKEN_COLUMNS, order_by, where
from meshlog.tokens import ApiToken

__all__ = ["AsyncPostgresStore"]

logger = logging.getLogger("meshlog")

_SCHEMA_RE: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MIGRATE_LOCK: Final = 1835365224  # with the schema's hash: serializes concurrent migrations
_PARTITION_MONTHS_AHEAD: Final = 3
_PARTITION_MARGIN: Final = timedelta(days=20)
_POLL_SECONDS: Final = 1.0
_SET_TENANT: Final = "SELECT set_config('meshlog.tenant', %s, false)"
_ALL_TENANTS: Final = "*"
# Payloads come as text and are decoded here: psycopg's jsonb path costs several times more per row.
_COLUMNS: Final = (
    "id::text, position, stream, stream_position, type, version, data::text, metadata::text, trace_id, task_id, "
    "agent_id, parent_id::text, root_id::text, depth, related::text[], idempotency_key, tenant, occurred_at, "
    "recorded_at"
)
_TEXT_CLAUSE: Final = (
    "EXISTS (SELECT 1 FROM jsonb_path_query(data, 'strict $.**') AS v "
    "WHERE jsonb_typeof(v) = 'string' "
    # lower() under the C collation folds ASCII letters only, as the other stores do
    'AND strpos(lower((v #>> ARRAY[]::text[]) COLLATE "C"), lower(%s::text COLLATE "C")) > 0)'
)
_QUALIFIED: Final = ", ".join(f"events.{c.strip()}" for c in _COLUMNS.split(","))
# Parents are recorded before their children, so parent links never form a cycle.
_ANCESTORS: Final = (
    "WITH RECURSIVE up(id, n) AS ("
    " SELECT parent_id, 1 FROM {events} WHERE id = %(id)s::uuid AND tenant = %(t)s AND parent_id IS NOT NULL"
    " UNION ALL"
    " SELECT e.parent_id, up.n + 1 FROM {events} AS e JOIN up ON e.id = up.id"
    " WHERE e.tenant = %(t)s AND e.parent_id IS NOT NULL)"
    " SELECT " + _QUALIFIED + " FROM {events} AS events JOIN up ON events.id = up.id WHERE events.tenant = %(t)s"
    " ORDER BY up.n DESC"
)
_DESCENDANTS: Final = (
    "WITH RECURSIVE down(id) AS ("
    " SELECT %(id)s::uuid UNION SELECT c.id FROM {events} AS c JOIN down ON c.parent_id = down.id"
    " WHERE c.tenant = %(t)s)"
    " SELECT " + _COLUMNS + " FROM {events} WHERE id IN (SELECT id FROM down) AND id <> %(id)s::uuid"
    " AND tenant = %(t)s ORDER BY position"
)
# Related links may form cycles: UNION and the depth bound end the walk; each event keeps its shortest distance.
_GRAPH: Final = (
    "WITH RECURSIVE walk(id, dist) AS ("
    " SELECT %(id)s::uuid, 0"
    " UNION"
    # Expand only from events recorded in the tenant: an external parent, a dangling related id or another
    # tenant's event is never a bridge between two of the tenant's events.
    " SELECT n.id, w.dist + 1 FROM walk AS w"
    " JOIN {events} AS e ON e.id = w.id AND e.tenant = %(t)s"
    " CROSS JOIN LATERAL ("
    "  SELECT e.parent_id AS id WHERE e.parent_id IS NOT NULL"
    "  UNION ALL SELECT c.id FROM {events} AS c WHERE c.parent_id = e.id AND c.tenant = %(t)s"
    "  UNION ALL SELECT unnest(e.related)"
    "  UNION ALL SELECT r.id FROM {events} AS r WHERE r.related @> ARRAY[e.id] AND r.tenant = %(t)s"
    " ) AS n WHERE w.dist < %(d)s)"
    " SELECT " + _QUALIFIED + ", d.distance"
    " FROM (SELECT id, min(dist) AS distance FROM walk GROUP BY id) AS d"
    " JOIN {events} AS events ON events.id = d.id AND events.tenant = %(t)s"
    " WHERE EXISTS (SELECT 1 FROM {events} AS s WHERE s.id = %(id)s::uuid AND s.tenant = %(t)s)"
    " ORDER BY d.distance, events.position LIMIT %(n)s"
)
# One pass over the window (monthly partitions pruned, the BRIN index on recorded_at): the timeline and the
# (type, agent) counts as two grouping sets; GROUPING tells them apart (an agent_id may itself be NULL). The bucket
# index is exact: epochs are numeric, in microseconds.
_STATS: Final = (
    "SELECT GROUPING(b, type, agent_id) AS g, b, type, agent_id, count(*) FROM ("
    " SELECT ((extract(epoch FROM recorded_at) - extract(epoch FROM %(since)s::timestamptz)) * 1000000)::bigint"
    " / %(us)s AS b, type, agent_id"
    " FROM {events} WHERE tenant = %(t)s AND recorded_at >= %(since)s AND recorded_at < %(until)s) AS w"
    " GROUP BY GROUPING SETS ((b), (type, agent_id))"
)
# meshlog.stats.event_tokens in SQL (NULL + n is NULL; numeric: no overflow). A key's count is a nested CASE, as
# PostgreSQL may evaluate the operands of AND in any order and the cast fails on a string.
_TOKENS: Final = "coalesce({total}, {input} + {output})".format(
    **{
        name: f"CASE WHEN jsonb_typeof(e.data -> '{key}') = 'number' THEN CASE WHEN (e.data ->> '{key}')::numeric >= 0"
        f" THEN trunc((e.data ->> '{key}')::numeric) END END"
        for name, key in (("total", "total_tokens"), ("input", "input_tokens"), ("output", "output_tokens"))
    }
)
# One statement (one snapshot): the window as for _STATS grouped by trace with the cheap figures, the `limit` last
# active kept (with an agent, those it took part in); then the agents, the failure rule and the tokens (payloads of
# LLM responses) over those traces' events in the window only (the planner joins them through the trace index).
# Trace ids sort by code point (COLLATE "C"), as in the other stores.
_TRACES: Final = (
    "WITH top AS (SELECT trace_id, min(recorded_at) AS lo, max(recorded_at) AS hi, count(*) AS n,"
    f" count(*) FILTER (WHERE type = '{LLM_CALL_TYPE}') AS calls FROM {{events}}"
    " WHERE tenant = %(t)s AND recorded_at >= %(since)s AND recorded_at < %(until)s AND trace_id IS NOT NULL"
    " GROUP BY trace_id HAVING %(agent)s::text IS NULL OR count(*) FILTER (WHERE agent_id = %(agent)s) > 0"
    ' ORDER BY hi DESC, trace_id COLLATE "C" LIMIT %(limit)s)'
    " SELECT top.trace_id, top.lo, top.hi, top.n,"
    " array_agg(DISTINCT e.agent_id) FILTER (WHERE e.agent_id IS NOT NULL), top.calls,"
    f" coalesce(sum({_TOKENS}) FILTER (WHERE e.type IN {LLM_RESULT_TYPES!r}), 0),"
    f" count(*) FILTER (WHERE {failure_type_sql('e.type')})"
    " FROM top JOIN {events} AS e ON e.tenant = %(t)s AND e.trace_id = top.trace_id"
    " AND e.recorded_at >= %(since)s AND e.recorded_at < %(until)s"
    ' GROUP BY top.trace_id, top.lo, top.hi, top.n, top.calls ORDER BY top.hi DESC, top.trace_id COLLATE "C"'
)
_EXPECTED: Final = {StreamState.ANY: None, StreamState.NO_STREAM: -1, StreamState.STREAM_EXISTS: -2}


_decode = json.JSONDecoder().decode
_scan = json.JSONDecoder().raw_decode


def _payload(text: str) -> Any:
    """A payload PostgreSQL printed (no surrounding whitespace): decoded without json.loads' extra passes."""
    return {} if text == "{}" else _scan(text)[0]


def _loads(data: str | bytes) -> Any:
    """jsonb values to Python, skipping json.loads' encoding detection (PostgreSQL always sends UTF-8)."""
    if data == b"{}":
        return {}
    return _decode(data if isinstance(data, str) else bytes(data).decode())


def _event(row: TupleRow) -> RecordedEvent:
    # Positional, in _COLUMNS order (RecordedEvent's field order): this runs for every row read.
    return RecordedEvent(
        row[0], row[1], row[2], row[3], row[4], row[5], _payload(row[6]), _payload(row[7]),
        row[8], row[9], row[10], row[11], row[12], row[13], tuple(row[14]) if row[14] else (), row[15], row[16],
        row[17], row[18],
    )  # fmt: skip


def _event_from_json(row: dict[str, Any]) -> RecordedEvent:
    occurred = row.get("occurred_at")
    return RecordedEvent(
        position=int(row["position"]),
        id=row["id"],
        tenant=row["tenant"],
        stream=row["stream"],
        stream_position=int(row["stream_position"]),
        type=row["type"],
        version=int(row["version"]),
        data=row["data"],
        metadata=row["metadata"],
        trace_id=row.get("trace_id"),
        task_id=row.get("task_id"),
        agent_id=row.get("agent_id"),
        parent_id=row.get("parent_id"),
        root_id=row["root_id"],
        depth=int(row["depth"]),
        related=tuple(row.get("related") or ()),
        idempotency_key=row.get("idempotency_key"),
        occurred_at=datetime.fromisoformat(occurred).astimezone(UTC) if occurred else None,
        recorded_at=datetime.fromisoformat(row["recorded_at"]).astimezone(UTC),
    )


def _encode(requests: Sequence[AppendRequest]) -> str:
    """The JSON argument of the append function (payloads are spliced in already serialized)."""
    parts = []
    for request in requests:
        events = []
        has_parent = any(e.parent_id is not None for e in request.events)
        tops: dict[str, tuple[int, int]] = {}
        for index, e in enumerate(request.events):
            head: dict[str, Any] = {"id": e.id, "s": e.stream, "t": e.type, "v": e.version}
            if e.id_given:
                head["g"] = True
            for key, value in (
                ("tr", e.trace_id),
                ("tk", e.task_id),
                ("ag", e.agent_id),
                ("k", e.idempotency_key),
            ):
                if value is not None:
                    head[key] = value
            if e.related:
                head["r"] = list(e.related)
            if e.occurred_at is not None:
                head["o"] = e.occurred_at.isoformat()
            if has_parent:
                # Topmost ancestor inside this request and the distance to it; the function looks up only
                # the parents of those tops.
                top = tops.get(e.parent_id) if e.parent_id is not None else None
                a, distance = (top[0], top[1] + 1) if top is not None else (index, 0)
                tops[e.id] = (a, distance)
                head["a"], head["ad"] = str(a), distance
                if e.parent_id is not None:
                    head["p"] = e.parent_id
                if e.external_parent:
                    head["xp"] = True
            encoded = json.dumps(head, ensure_ascii=False, separators=(",", ":"))
            events.append(f'{encoded[:-1]},"d":{e.data_json},"m":{e.metadata_json}}}')
        req: dict[str, Any] = {"tn": request.tenant}
        if request.stream is not None:
            expected = request.expected_version
            req["s"] = request.stream
            req["x"] = _EXPECTED[expected] if isinstance(expected, StreamState) else expected
        if any(e.idempotency_key is not None for e in request.events):
            req["hk"] = True
        if any(e.id_given for e in request.events):
            req["hg"] = True
        if has_parent:
            req["hp"] = True
        head_json = json.dumps(req, ensure_ascii=False, separators=(",", ":"))
        parts.append(f'{head_json[:-1]},"e":[{",".join(events)}]}}')
    return f"[{','.join(parts)}]"


_MAX_COMBINED_EVENTS: Final = 1000


def _merge(requests: Sequence[AppendRequest]) -> list[list[int]]:
    """Which requests of a group to send as one combined request (indexes into ``requests``).

    The append function handles a request's events in one set-based insert, but each request costs a pass of
    its own; group commit under load means many small requests, so consecutive requests of one tenant are
    combined. Not combined: requests with an expected version (checked per request), requests with ids given
    by the caller, and requests whose idempotency keys repeat one already in the combination (the second must
    see the first as recorded). A combined request that fails is retried request by request.
    """
    groups: list[list[int]] = []
    current: list[int] | None = None
    keys: set[str] = set()
    size = 0
    for index, request in enumerate(requests):
        own = {e.idempotency_key for e in request.events if e.idempotency_key is not None}
        combinable = request.stream is None and not any(e.id_given for e in request.events)
        if (
            combinable
            and current is not None
            and requests[current[0]].tenant == request.tenant
            and not own & keys
            and size + len(request.events) <= _MAX_COMBINED_EVENTS
        ):
            current.append(index)
            keys |= own
            size += len(request.events)
            continue
        groups.append([index])
        if combinable:
            current, keys, size = groups[-1], own, len(request.events)
        else:
            current = None
    return groups


def _combine(requests: Sequence[AppendRequest], group: list[int]) -> AppendRequest:
    if len(group) == 1:
        return requests[group[0]]
    first = requests[group[0]]
    return AppendRequest(tenant=first.tenant, events=[e for i in group for e in requests[i].events])


def _distribute(
    requests: Sequence[AppendRequest], group: list[int], raw: dict[str, Any], outcomes: list[AppendOutcome | None]
) -> None:
    """Split a combined request's outcome back into the outcomes of its requests."""
    offset = 0
    for index in group:
        count = len(requests[index].events)
        part = {
            "ok": raw["ok"][offset : offset + count],
            "rt": raw["rt"][offset : offset + count],
            "dp": raw["dp"][offset : offset + count],
            "p": int(raw["p"]) + offset,
            "at": raw["at"],
        }
        outcomes[index] = _outcome(requests[index], part)
        offset += count


def _outcome(request: AppendRequest, raw: dict[str, Any]) -> AppendOutcome:
    if "ok" in raw:
        first = int(raw["p"])
        recorded_at = _EPOCH + timedelta(microseconds=int(raw["at"]))
        out = []
        for i, e in enumerate(request.events):
            out.append(
                RecordedEvent(
                    id=e.id,
                    position=first + i,
                    stream=e.stream,
                    stream_position=int(raw["ok"][i]),
                    type=e.type,
                    version=e.version,
                    data=json.loads(e.data_json),
                    metadata={} if e.metadata_json == "{}" else json.loads(e.metadata_json),
                    trace_id=e.trace_id,
                    task_id=e.task_id,
                    agent_id=e.agent_id,
                    parent_id=e.parent_id,
                    root_id=raw["rt"][i],
                    depth=int(raw["dp"][i]),
                    related=e.related,
                    idempotency_key=e.idempotency_key,
                    tenant=request.tenant,
                    occurred_at=e.occurred_at,
                    recorded_at=recorded_at,
                )
            )
        return out
    if "dup" in raw:
        return [_event_from_json(row) for row in raw["dup"]]
    code = raw.get("err")
    if code == "wrong_expected_version":
        return WrongExpectedVersion(raw["stream"], request.expected_version, int(raw["actual"]))
    if code == "idempotency_conflict":
        return IdempotencyConflict(raw["key"], raw["id"], raw["reason"])
    if code == "id_exists":
        i = raw["index"]
        return ValidationError(
            f"events[{i}].id {raw['id']} is already recorded", field=f"events[{i}].id", rule="unique"
        )
    if code == "parent_not_found":
        i = raw["index"]
        return ValidationError(
            f"events[{i}].parent_id {raw['parent']} is not a recorded event of this tenant "
            "(set external_parent=True for a parent stored elsewhere)",
            field=f"events[{i}].parent_id",
            rule="parent_exists",
        )
    return StoreError(f"unexpected append outcome from PostgreSQL: {raw!r}")


def _token(row: TupleRow) -> ApiToken:
    return ApiToken(
        id=row[0],
        tenant=row[1],
        scopes=tuple(row[2]),
        secret_hash=row[3],
        name=row[4],
        created_at=row[5],
        expires_at=row[6],
        revoked_at=row[7],
    )


def _instance(row: Sequence[Any]) -> Instance:
    # In INSTANCE_COLUMNS order (Instance's field order).
    return Instance(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8] or {}, row[9], row[10]
    )  # fmt: skip


def _prefixed(prefix: str) -> str:
    return ", ".join(f"{prefix}.{c.strip()}" for c in INSTANCE_COLUMNS.split(","))


_NUM_INSTANCE_COLUMNS: Final = len(INSTANCE_COLUMNS.split(","))
# Instance changes lock the row first (the CTE), then update it from the locked, latest version: of concurrent
# heartbeats exactly one finds no recent heartbeat event and claims it. A closed instance matches no row.
_HEARTBEAT: Final = (
    "WITH old AS (SELECT " + INSTANCE_COLUMNS + " FROM {tbl} WHERE tenant = %(t)s AND id = %(id)s FOR UPDATE)"
    " UPDATE {tbl} AS i SET last_heartbeat = greatest(i.last_heartbeat, %(at)s), status = 'active',"
    " heartbeat_event_at = CASE WHEN i.heartbeat_event_at IS NULL"
    " OR i.heartbeat_event_at <= %(at)s - make_interval(secs => %(every)s) THEN %(at)s ELSE i.heartbeat_event_at END"
    " FROM old WHERE i.tenant = old.tenant AND i.id = old.id AND old.status <> 'closed'"
    " RETURNING " + _prefixed("old") + ", " + _prefixed("i") + ", i.heartbeat_event_at IS DISTINCT FROM"
    " old.heartbeat_event_at"
)
_CLOSE: Final = (
    "WITH old AS (SELECT " + INSTANCE_COLUMNS + " FROM {tbl} WHERE tenant = %(t)s AND id = %(id)s FOR UPDATE)"
    " UPDATE {tbl} AS i SET status = 'closed', closed_at = %(at)s"
    " FROM old WHERE i.tenant = old.tenant AND i.id = old.id AND old.status <> 'closed'"
    " RETURNING " + _prefixed("old") + ", " + _prefixed("i")
)
_REGISTER: Final = (
    "WITH old AS (SELECT " + INSTANCE_COLUMNS + " FROM {tbl} WHERE tenant = %(t)s AND id = %(id)s FOR UPDATE),"
    " new AS (INSERT INTO {tbl} (" + INSTANCE_COLUMNS + ") VALUES (%(id)s, %(t)s, %(status)s, %(registered_at)s,"
    " %(last_heartbeat)s, %(name)s, %(project)s, %(host)s, %(metadata)s::jsonb, %(heartbeat_event_at)s,"
    " %(closed_at)s) ON CONFLICT (tenant, id) DO UPDATE SET status = excluded.status,"
    " registered_at = excluded.registered_at, last_heartbeat = excluded.last_heartbeat, name = excluded.name,"
    " project = excluded.project, host = excluded.host, metadata = excluded.metadata,"
    " heartbeat_event_at = excluded.heartbeat_event_at, closed_at = excluded.closed_at RETURNING 1)"
    " SELECT " + INSTANCE_COLUMNS + " FROM old, new"
)


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("meshlog.stores") / "sql" / "postgres"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _translate(exc: Exception, doing: str) -> StoreError:
    if isinstance(exc, (PoolTimeout, psycopg.OperationalError)):
        return StoreUnavailable(f"PostgreSQL unavailable while {doing}: {exc}")
    return StoreError(f"PostgreSQL failed while {doing}: {exc}")


class AsyncPostgresStore:
    """A store in a PostgreSQL schema (default ``meshlog``), through a connection pool."""

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "meshlog",
        min_size: int = 1,
        max_size: int = 10,
        url: str = "",
        connect_timeout: float = 10.0,
    ) -> None:
        if not _SCHEMA_RE.fullmatch(schema):
            raise ConfigurationError(f"schema must match {_SCHEMA_RE.pattern}, got {schema!r}")
        self.url = url or "postgresql://"
        self.schema = schema
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True},
            configure=self._configure,
            timeout=connect_timeout,
            name=f"meshlog-{schema}",
        )
        ident = sql.Identifier(schema)
        self._ident = ident
        self._append_sql = sql.SQL("SELECT {}.append(%s::jsonb)").format(ident)
        self._events = sql.SQL("{}.events").format(ident)
        self._streams = sql.SQL("{}.streams").format(ident)
        self._checkpoints = sql.SQL("{}.checkpoints").format(ident)
        self._instances = sql.SQL("{}.instances").format(ident)
        self._channel = sql.Identifier(f"{schema}.events")
        self._partitions_until: datetime | None = None
        self._listener: AsyncConnection[TupleRow] | None = None
        self._listen_cond = AsyncCondition()
        self._listening = False
        self._tenant_of: weakref.WeakKeyDictionary[AsyncConnection[TupleRow], str] = weakref.WeakKeyDictionary()

    @staticmethod
    async def _configure(conn: AsyncConnection[TupleRow]) -> None:
        set_json_loads(_loads, conn)
        await conn.execute("SET TIME ZONE 'UTC'")

    async def open(self) -> None:
        """Open the pool; raises StoreUnavailable when the server cannot be reached."""
        try:
            # One direct connection first: it fails fast with the server's own reason, where the pool would
            # retry quietly until its timeout.
            probe = await AsyncConnection.connect(self._conninfo, connect_timeout=max(1, int(self._connect_timeout)))
            await probe.close()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL at {self.url}: {exc}") from exc
        try:
            await self._pool.open(wait=True, timeout=self._connect_timeout)
        except (PoolTimeout, psycopg.Error) as exc:
            await self._pool.close()
            raise StoreUnavailable(f"cannot connect to PostgreSQL at {self.url}: {exc}") from exc

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        await self._pool.close()

    # -- schema ------------------------------------------------------------------------------------------------
    async def migrate(self) -> None:
        if await self._migrated():
            # Nothing to do, and no DDL run: a server connected as a role without CREATE rights starts fine.
            await self.ensure_partitions()
            return
        ident = self._ident
        literal = sql.Literal(self.schema)
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_MIGRATE_LOCK, self.schema))
                await conn.execute("SELECT set_config('meshlog.tenant', '*', true)")
                await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
                await conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {}.schema_migrations "
                        "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                    ).format(ident)
                )
                cur = await conn.execute(sql.SQL("SELECT version FROM {}.schema_migrations").format(ident))
                applied = {row[0] for row in await cur.fetchall()}
                for version, script in _migrations():
                    if version in applied:
                        continue
                    text = script.replace("__SCHEMA_LIT__", literal.as_string(conn)).replace(
                        "__SCHEMA__", ident.as_string(conn)
                    )
                    await conn.execute(text.encode())
                    await conn.execute(
                        sql.SQL("INSERT INTO {}.schema_migrations (version) VALUES (%s)").format(ident),
                        (version,),
                    )
        except psycopg.Error as exc:
            raise _translate(exc, "migrating") from exc
        await self.ensure_partitions()

    async def _migrated(self) -> bool:
        """Whether every migration is applied already."""
        versions = [version for version, _ in _migrations()]
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT to_regclass(%s) IS NOT NULL", (f"{self._ident.as_string(conn)}.schema_migrations",)
                )
                row = await cur.fetchone()
                if row is None or not row[0]:
                    return False
                cur = await conn.execute(
                    sql.SQL("SELECT count(*) FROM {}.schema_migrations WHERE version = ANY (%s)").format(self._ident),
                    (versions,),
                )
                row = await cur.fetchone()
        except psycopg.Error as exc:
            raise _translate(exc, "migrating") from exc
        return row is not None and int(row[0]) == len(versions)

    async def grant(self, role: str) -> None:
        """Let ``role`` (an existing, ordinary role) use the store: read and append events, keep streams, keys,
        checkpoints, snapshots, tokens and instances, and create partitions ahead. Run after :meth:`migrate`, as the
        schema's owner. Row-level security keeps each tenant's rows apart for that role."""
        ident = self._ident
        role_ident = sql.Identifier(role)
        statements = [
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}"),
            sql.SQL("GRANT SELECT, INSERT ON {}.events TO {}"),
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE ON {0}.streams, {0}.idempotency_keys, {0}.checkpoints, "
                "{0}.snapshots, {0}.tokens, {0}.instances TO {1}"
            ),
            sql.SQL("GRANT SELECT ON {}.schema_migrations TO {}"),
            sql.SQL("GRANT USAGE, SELECT, UPDATE ON SEQUENCE {}.events_position TO {}"),
            sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {} TO {}"),
        ]
        try:
            async with self._pool.connection() as conn, conn.transaction():
                for statement in statements:
                    await conn.execute(statement.format(ident, role_ident))
        except psycopg.Error as exc:
            raise _translate(exc, f"granting access to {role!r}") from exc

    async def ensure_partitions(self, months_ahead: int = _PARTITION_MONTHS_AHEAD) -> datetime:
        """Create monthly partitions from this month to ``months_ahead`` ahead; returns the covered end."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                # Creating a partition locks the parent table; never queue behind a long reader for long.
                await conn.execute("SET LOCAL lock_timeout = '5s'")
                cur = await conn.execute(
                    sql.SQL("SELECT {}.ensure_partitions(%s)").format(self._ident), (months_ahead,)
                )
                row = await cur.fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            raise _translate(exc, "creating partitions") from exc
        assert row is not None
        until: datetime = row[0]
        self._partitions_until = until
        return until

    # -- writing -----------------------------------------------------------------------------------------------
    async def append(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        until = self._partitions_until
        if until is None or datetime.now(UTC) + _PARTITION_MARGIN > until:
            try:
                await self.ensure_partitions()
            except StoreError as exc:
                # Not fatal: the default partition takes the rows. Try again in an hour.
                logger.warning("meshlog: could not create partitions ahead (%s); retrying later", exc)
                self._partitions_until = datetime.now(UTC) + _PARTITION_MARGIN + timedelta(hours=1)
        groups = _merge(requests)
        merged = [_combine(requests, group) for group in groups]
        raw = await self._call_append(merged)
        outcomes: list[AppendOutcome | None] = [None] * len(requests)
        retry: list[int] = []
        for group, request, outcome in zip(groups, merged, raw, strict=True):
            if len(group) == 1:
                outcomes[group[0]] = _outcome(request, outcome)
            elif "ok" in outcome:
                _distribute(requests, group, outcome, outcomes)
            else:
                # A combined request wrote nothing: one of its requests failed (or was a retry). Write each alone
                # so that every caller gets its own outcome.
                retry.extend(group)
        if retry:
            alone = [requests[i] for i in retry]
            for index, request, outcome in zip(retry, alone, await self._call_append(alone), strict=True):
                outcomes[index] = _outcome(request, outcome)
        return [outcome for outcome in outcomes if outcome is not None]

    async def _call_append(self, requests: Sequence[AppendRequest]) -> list[dict[str, Any]]:
        payload = _encode(requests)
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(self._append_sql, (payload,))
                row = await cur.fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            raise _translate(exc, "appending") from exc
        assert row is not None
        raw: list[dict[str, Any]] = row[0]
        return raw

    # -- reading -----------------------------------------------------------------------------------------------
    async def _as_tenant(self, conn: AsyncConnection[TupleRow], tenant: str) -> None:
        """Say whose rows ``conn`` works on, for the row-level security policies (a round trip only when the
        connection last worked for another tenant)."""
        if self._tenant_of.get(conn) != tenant:
            await conn.execute(_SET_TENANT, (tenant,))
            self._tenant_of[conn] = tenant

    async def _fetch(
        self, tenant: str, query: sql.Composed, params: Sequence[object] | Mapping[str, object]
    ) -> list[TupleRow]:
        try:
            async with self._pool.connection() as conn:
                await self._as_tenant(conn, tenant)
                cur = await conn.execute(query, params)
                rows: list[TupleRow] = await cur.fetchall()
                return rows
        except (psycopg.Error, PoolTimeout) as exc:
            raise _translate(exc, "reading") from exc

    async def get(self, tenant: str, event_id: str) -> RecordedEvent | None:
        rows = await self._fetch(
            tenant,
            sql.SQL("SELECT " + _COLUMNS + " FROM {} WHERE id = %s::uuid AND tenant = %s").format(self._events),
            (event_id, tenant),
        )
        return _event(rows[0]) if rows else None

    async def query(self, tenant: str, flt: EventFilter, *, order: Order, limit: int) -> list[RecordedEvent]:
        clause, params = where(tenant, flt, ph="%s", text_clause=_TEXT_CLAUSE, time_value=lambda t: t)
        query = sql.SQL(
            "SELECT " + _COLUMNS + " FROM {} WHERE " + clause + " ORDER BY " + order_by(order, flt) + " LIMIT %s"
        ).format(self._events)
        return [_event(row) for row in await self._fetch(tenant, query, [*params, limit])]

    async def count(self, tenant: str, flt: EventFilter) -> int:
        clause, params = where(tenant, flt, ph="%s", text_clause=_TEXT_CLAUSE, time_value=lambda t: t)
        rows = await self._fetch(
            tenant, sql.SQL("SELECT count(*) FROM {} WHERE " + clause).format(self._events), params
        )
        return int(rows[0][0])

    async def stats(self, tenant: str, since: datetime, until: datetime, bucket_seconds: int) -> EventStats:
        params = {"t": tenant, "since": since, "until": until, "us": bucket_seconds * 1_000_000}
        rows = await self._fetch(tenant, sql.SQL(_STATS).format(events=self._events), params)
        buckets: list[tuple[int, int]] = []
        types: list[tuple[str, int]] = []
        agents: list[tuple[str | None, int]] = []
        for grouping, bucket, kind, agent, count in rows:
            if grouping == 0b011:
                buckets.append((int(bucket), int(count)))
            else:
                types.append((kind, int(count)))
                agents.append((agent, int(count)))
        return build_stats(since, until, bucket_seconds, buckets=buckets, by_type=types, by_agent=agents)

    async def traces(
        self, tenant: str, since: datetime, until: datetime, limit: int, agent_id: str | None
    ) -> list[TraceSummary]:
        params = {"t": tenant, "since": since, "until": until, "agent": agent_id, "limit": limit}
        rows = await self._fetch(tenant, sql.SQL(_TRACES).format(events=self._events), params)
        return [
            TraceSummary(
                trace_id=trace_id,
                started=lo.astimezone(UTC),
                last=hi.astimezone(UTC),
                events=int(n),
                agents=trace_agents(agents or ()),
                llm_calls=int(calls),
                tokens=int(tokens),
                failures=int(failures),
            )
            for trace_id, lo, hi, n, agents, calls, tokens, failures in rows
        ]

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
        text = "SELECT " + _COLUMNS + " FROM {} WHERE tenant = %s AND stream = %s AND stream_position >= %s"
        params: list[object] = [tenant, stream, from_version]
        if to_version is not None:
            text += " AND stream_position <= %s"
            params.append(to_version)
        text += " ORDER BY stream_position " + ("DESC" if backwards else "ASC") + " LIMIT %s"
        rows = await self._fetch(tenant, sql.SQL(text).format(self._events), [*params, limit])
        return [_event(row) for row in rows]

    async def stream_version(self, tenant: str, stream: str) -> int:
        rows = await self._fetch(
            tenant,
            sql.SQL("SELECT version FROM {} WHERE tenant = %s AND stream = %s").format(self._streams),
            (tenant, stream),
        )
        return int(rows[0][0]) if rows else 0

    async def list_streams(self, tenant: str, *, prefix: str | None, after: str | None, limit: int) -> list[StreamInfo]:
        text = "SELECT stream, version, last_position, created_at, updated_at FROM {} WHERE tenant = %s"
        params: list[object] = [tenant]
        if prefix:
            text += " AND left(stream, %s) = %s"
            params += [len(prefix), prefix]
        if after is not None:
            text += ' AND stream > %s COLLATE "C"'
            params.append(after)
        text += ' ORDER BY stream COLLATE "C" LIMIT %s'
        rows = await self._fetch(tenant, sql.SQL(text).format(self._streams), [*params, limit])
        return [StreamInfo(r[0], int(r[1]), int(r[2]), r[3], r[4]) for r in rows]

    async def head_position(self, tenant: str) -> int:
        rows = await self._fetch(
            tenant,
            sql.SQL("SELECT coalesce(max(position), 0) FROM {} WHERE tenant = %s").format(self._events),
            (tenant,),
        )
        return int(rows[0][0])

    async def wait_for_events(self, tenant: str, after_position: int, timeout: float) -> None:
        # NOTIFY is only a hint: it makes waiters return early; the caller's re-query decides what is new,
        # and the timeout (polling) covers a lost notification or a dropped listener connection.
        deadline = time.monotonic() + timeout
        while await self.head_position(tenant) <= after_position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await self._wait_notify(min(remaining, _POLL_SECONDS))

    async def _wait_notify(self, timeout: float) -> None:
        async with self._listen_cond:
            if self._listening:
                # Another waiter reads the notifications and wakes everyone when one arrives or its own
                # timeout (at most _POLL_SECONDS) passes.
                await self._listen_cond.wait()
                return
            self._listening = True
        try:
            conn = self._listener
            if conn is None or conn.closed:
                self._listener = None
                conn = await AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=max(1, int(self._connect_timeout))
                )
                self._listener = conn
                await conn.execute(sql.SQL("LISTEN {}").format(self._channel))
            async for _ in conn.notifies(timeout=timeout, stop_after=1):
                break
        except psycopg.Error:
            # Polling carries on without the hint; the next wait reconnects.
            broken, self._listener = self._listener, None
            if broken is not None:
                await broken.close()
        finally:
            async with self._listen_cond:
                self._listening = False
                self._listen_cond.notify_all()

    async def lineage(self, tenant: str, event_id: str) -> tuple[list[RecordedEvent], list[RecordedEvent]] | None:
        if await self.get(tenant, event_id) is None:
            return None
        params = {"id": event_id, "t": tenant}
        ancestors = await self._fetch(tenant, sql.SQL(_ANCESTORS).format(events=self._events), params)
        descendants = await self._fetch(tenant, sql.SQL(_DESCENDANTS).format(events=self._events), params)
        return [_event(r) for r in ancestors], [_event(r) for r in descendants]

    async def graph(
        self, tenant: str, event_id: str, *, max_depth: int, limit: int
    ) -> tuple[list[tuple[RecordedEvent, int]], bool]:
        params = {"id": event_id, "t": tenant, "d": max_depth, "n": limit + 1}
        rows = await self._fetch(tenant, sql.SQL(_GRAPH).format(events=self._events), params)
        return [(_event(r), int(r[-1])) for r in rows[:limit]], len(rows) > limit

    async def save_snapshot(
        self, tenant: str, stream: str, projection: str, projection_version: int, stream_version: int, state: str
    ) -> None:
        await self._fetch(
            tenant,
            sql.SQL(
                "INSERT INTO {}.snapshots (tenant, stream, projection, projection_version, stream_version, state) "
                "VALUES (%s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (tenant, stream, projection) DO UPDATE SET "
                "projection_version = excluded.projection_version, stream_version = excluded.stream_version, "
                "state = excluded.state, created_at = now() RETURNING 1"
            ).format(self._ident),
            (tenant, stream, projection, projection_version, stream_version, state),
        )

    async def load_snapshot(
        self, tenant: str, stream: str, projection: str, projection_version: int
    ) -> tuple[int, str] | None:
        rows = await self._fetch(
            tenant,
            sql.SQL(
                "SELECT stream_version, state::text FROM {}.snapshots WHERE tenant = %s AND stream = %s "
                "AND projection = %s AND projection_version = %s"
            ).format(self._ident),
            (tenant, stream, projection, projection_version),
        )
        return (int(rows[0][0]), rows[0][1]) if rows else None

    async def get_checkpoint(self, tenant: str, consumer: str) -> int | None:
        rows = await self._fetch(
            tenant,
            sql.SQL("SELECT position FROM {} WHERE tenant = %s AND consumer = %s").format(self._checkpoints),
            (tenant, consumer),
        )
        return int(rows[0][0]) if rows else None

    async def set_checkpoint(self, tenant: str, consumer: str, position: int) -> None:
        await self._fetch(
            tenant,
            sql.SQL(
                "INSERT INTO {} (tenant, consumer, position, updated_at) VALUES (%s, %s, %s, now()) "
                "ON CONFLICT (tenant, consumer) DO UPDATE SET position = excluded.position, "
                "updated_at = excluded.updated_at RETURNING position"
            ).format(self._checkpoints),
            (tenant, consumer, position),
        )

    # -- tokens ------------------------------------------------------------------------------------------------
    async def save_token(self, token: ApiToken) -> None:
        await self._fetch(
            token.tenant,
            sql.SQL(
                "INSERT INTO {}.tokens (id, tenant, scopes, secret_hash, name, created_at, expires_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING 1"
            ).format(self._ident),
            (
                token.id,
                token.tenant,
                list(token.scopes),
                token.secret_hash,
                token.name,
                token.created_at,
                token.expires_at,
            ),
        )

    async def find_token(self, token_id: str) -> ApiToken | None:
        rows = await self._fetch(
            _ALL_TENANTS,
            sql.SQL("SELECT " + TOKEN_COLUMNS + " FROM {}.tokens WHERE id = %s").format(self._ident),
            (token_id,),
        )
        return _token(rows[0]) if rows else None

    async def list_tokens(self, tenant: str) -> list[ApiToken]:
        rows = await self._fetch(
            tenant,
            sql.SQL("SELECT " + TOKEN_COLUMNS + " FROM {}.tokens WHERE tenant = %s ORDER BY created_at, id").format(
                self._ident
            ),
            (tenant,),
        )
        return [_token(row) for row in rows]

    async def revoke_token(self, tenant: str, token_id: str) -> bool:
        rows = await self._fetch(
            tenant,
            sql.SQL(
                "UPDATE {}.tokens SET revoked_at = now() WHERE id = %s AND tenant = %s AND revoked_at IS NULL "
                "RETURNING 1"
            ).format(self._ident),
            (token_id, tenant),
        )
        return bool(rows)

    async def has_tokens(self) -> bool:
        rows = await self._fetch(
            _ALL_TENANTS,
            sql.SQL(
                "SELECT EXISTS (SELECT 1 FROM {}.tokens WHERE revoked_at IS NULL "
                "AND (expires_at IS NULL OR expires_at > now()))"
            ).format(self._ident),
            (),
        )
        return bool(rows[0][0])

    # -- instances ---------------------------------------------------------------------------------------------
    async def register_instance(self, tenant: str, instance: Instance) -> InstanceChange:
        instance = replace(instance, tenant=tenant)
        params = {
            "t": tenant,
            "id": instance.id,
            "status": instance.status,
            "registered_at": instance.registered_at,
            "last_heartbeat": instance.last_heartbeat,
            "name": instance.name,
            "project": instance.project,
            "host": instance.host,
            "metadata": json.dumps(dict(instance.metadata), separators=(",", ":"), ensure_ascii=False),
            "heartbeat_event_at": instance.heartbeat_event_at,
            "closed_at": instance.closed_at,
        }
        rows = await self._fetch(tenant, sql.SQL(_REGISTER).format(tbl=self._instances), params)
        return InstanceChange(_instance(rows[0]) if rows else None, instance)

    async def heartbeat_instance(
        self, tenant: str, instance_id: str, at: datetime, *, event_every: float, data: Mapping[str, Any]
    ) -> InstanceChange | None:
        params = {"t": tenant, "id": instance_id, "at": at, "every": float(event_every)}
        rows = await self._fetch(tenant, sql.SQL(_HEARTBEAT).format(tbl=self._instances), params)
        if not rows:
            return await self._unchanged(tenant, instance_id)
        n = _NUM_INSTANCE_COLUMNS
        row = rows[0]
        return InstanceChange(_instance(row[:n]), _instance(row[n : 2 * n]), heartbeat_event=bool(row[2 * n]))

    async def _unchanged(self, tenant: str, instance_id: str) -> InstanceChange | None:
        current = await self.get_instance(tenant, instance_id)
        return None if current is None else InstanceChange(current, current)

    async def close_instance(
        self, tenant: str, instance_id: str, at: datetime, *, reason: str | None
    ) -> InstanceChange | None:
        rows = await self._fetch(
            tenant, sql.SQL(_CLOSE).format(tbl=self._instances), {"t": tenant, "id": instance_id, "at": at}
        )
        if not rows:
            return await self._unchanged(tenant, instance_id)
        n = _NUM_INSTANCE_COLUMNS
        return InstanceChange(_instance(rows[0][:n]), _instance(rows[0][n:]))

    async def mark_instance_stale(
        self, tenant: str, instance_id: str, last_heartbeat: datetime
    ) -> InstanceChange | None:
        rows = await self._fetch(
            tenant,
            sql.SQL(
                "UPDATE {} SET status = 'stale' WHERE tenant = %s AND id = %s AND status = 'active' "
                "AND last_heartbeat = %s RETURNING " + INSTANCE_COLUMNS
            ).format(self._instances),
            (tenant, instance_id, last_heartbeat),
        )
        if not rows:
            return None
        current = _instance(rows[0])
        return InstanceChange(replace(current, status="active"), current)

    async def get_instance(self, tenant: str, instance_id: str) -> Instance | None:
        rows = await self._fetch(
            tenant,
            sql.SQL("SELECT " + INSTANCE_COLUMNS + " FROM {} WHERE tenant = %s AND id = %s").format(self._instances),
            (tenant, instance_id),
        )
        return _instance(rows[0]) if rows else None

    async def list_instances(
        self, tenant: str, *, status: str | None, project: str | None, after: str | None, limit: int
    ) -> list[Instance]:
        text = "SELECT " + INSTANCE_COLUMNS + " FROM {} WHERE tenant = %s"
        params: list[object] = [tenant]
        for column, value in (("status", status), ("project", project)):
            if value is not None:
                text += f" AND {column} = %s"
                params.append(value)
        if after is not None:
            text += ' AND id > %s COLLATE "C"'
            params.append(after)
        text += ' ORDER BY id COLLATE "C" LIMIT %s'
        rows = await self._fetch(tenant, sql.SQL(text).format(self._instances), [*params, limit])
        return [_instance(r) for r in rows]

    async def silent_instances(self, tenant: str, before: datetime, limit: int) -> list[Instance]:
        # Tenant "*" is the administrative view of every tenant (the stale detector of a server).
        text = "SELECT " + INSTANCE_COLUMNS + " FROM {} WHERE status = 'active' AND last_heartbeat < %s"
        params: list[object] = [before]
        if tenant != _ALL_TENANTS:
            text += " AND tenant = %s"
            params.append(tenant)
        text += ' ORDER BY last_heartbeat, tenant COLLATE "C", id COLLATE "C" LIMIT %s'
        rows = await self._fetch(tenant, sql.SQL(text).format(self._instances), [*params, limit])
        return [_instance(r) for r in rows]
