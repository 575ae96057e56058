-- meshlog schema for PostgreSQL, version 1.
-- __SCHEMA__ is replaced by the quoted schema identifier, __SCHEMA_LIT__ by the schema name as a literal.

CREATE SEQUENCE __SCHEMA__.events_position AS bigint;

-- Events, partitioned by month on recorded_at. A unique index on a partitioned table must include the
-- partition key, so stream versions and idempotency keys are kept unique in tables of their own (below).
CREATE TABLE __SCHEMA__.events (
    position        bigint      NOT NULL,
    recorded_at     timestamptz NOT NULL,
    id              uuid        NOT NULL,
    tenant          text        NOT NULL,
    stream          text        NOT NULL,
    stream_position bigint      NOT NULL,
    type            text        NOT NULL,
    version         integer     NOT NULL,
    data            jsonb       NOT NULL CHECK (jsonb_typeof(data) = 'object'),
    metadata        jsonb       NOT NULL CHECK (jsonb_typeof(metadata) = 'object'),
    trace_id        text,
    task_id         text,
    agent_id        text,
    parent_id       uuid,
    root_id         uuid        NOT NULL,
    depth           integer     NOT NULL,
    related         uuid[],
    idempotency_key text,
    occurred_at     timestamptz,
    PRIMARY KEY (position, recorded_at)
) PARTITION BY RANGE (recorded_at);

-- Catches rows no monthly partition covers (a clock far ahead, say), so an insert never fails for want of a
-- partition. ensure_partitions() keeps monthly partitions created ahead, so normally it stays empty.
CREATE TABLE __SCHEMA__.events_default PARTITION OF __SCHEMA__.events DEFAULT;

CREATE INDEX events_tenant_position ON __SCHEMA__.events (tenant, position);
CREATE INDEX events_id ON __SCHEMA__.events (id);
CREATE INDEX events_stream ON __SCHEMA__.events (tenant, stream, stream_position);
CREATE INDEX events_type ON __SCHEMA__.events (tenant, type, position);
CREATE INDEX events_trace ON __SCHEMA__.events (tenant, trace_id, position) WHERE trace_id IS NOT NULL;
CREATE INDEX events_task ON __SCHEMA__.events (tenant, task_id, position) WHERE task_id IS NOT NULL;
CREATE INDEX events_agent ON __SCHEMA__.events (tenant, agent_id, position) WHERE agent_id IS NOT NULL;
CREATE INDEX events_parent ON __SCHEMA__.events (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX events_recorded_at ON __SCHEMA__.events USING brin (recorded_at);

-- Append-only, enforced by the database: any UPDATE, DELETE or TRUNCATE of events fails. Retention removes
-- data only by detaching and dropping whole expired partitions.
CREATE FUNCTION __SCHEMA__.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'meshlog events are append-only: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON __SCHEMA__.events
    FOR EACH ROW EXECUTE FUNCTION __SCHEMA__.refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON __SCHEMA__.events
    FOR EACH STATEMENT EXECUTE FUNCTION __SCHEMA__.refuse_change();

-- Each stream's version. The append function reads and advances it under the append lock, which is what
-- keeps stream_position gapless and unique (invariant 3).
CREATE TABLE __SCHEMA__.streams (
    tenant        text        NOT NULL,
    stream        text        NOT NULL,
    version       bigint      NOT NULL,
    last_position bigint      NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant, stream)
);

CREATE TABLE __SCHEMA__.idempotency_keys (
    tenant      text        NOT NULL,
    key         text        NOT NULL,
    event_id    uuid        NOT NULL,
    position    bigint      NOT NULL,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, key)
);

CREATE TABLE __SCHEMA__.checkpoints (
    tenant     text        NOT NULL,
    consumer   text        NOT NULL,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, consumer)
);

-- Creates the monthly partitions from this month to p_months_ahead months ahead (UTC) and returns the end of
-- the range they cover. A month whose rows already went to the default partition is skipped with a warning.
CREATE FUNCTION __SCHEMA__.ensure_partitions(p_months_ahead integer) RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    first_month date := date_trunc('month', clock_timestamp() AT TIME ZONE 'UTC')::date;
    month date;
    lo timestamptz;
    hi timestamptz;
    name text;
BEGIN
    PERFORM pg_advisory_xact_lock(1835365226, hashtext(__SCHEMA_LIT__));
    FOR i IN 0..p_months_ahead LOOP
        month := first_month + make_interval(months => i);
        lo := month::timestamp AT TIME ZONE 'UTC';
        hi := (month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        name := 'events_' || to_char(month, 'YYYY_MM');
        CONTINUE WHEN to_regclass(format('%I.%I', __SCHEMA_LIT__, name)) IS NOT NULL;
        IF EXISTS (SELECT 1 FROM __SCHEMA__.events_default WHERE recorded_at >= lo AND recorded_at < hi) THEN
            RAISE WARNING 'meshlog: rows for % are in the default partition; not creating %', month, name;
            CONTINUE;
        END IF;
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.events FOR VALUES FROM (%L) TO (%L)',
                       __SCHEMA_LIT__, name, __SCHEMA_LIT__, lo, hi);
    END LOOP;
    RETURN (first_month + make_interval(months => p_months_ahead + 1))::timestamp AT TIME ZONE 'UTC';
END $$;

-- Appends a group of requests in one transaction and returns one outcome per request.
--
-- Each request: {"tn": tenant, "s": stream or null, "x": expected version (null any, -1 no_stream,
-- -2 stream_exists, n exact), "e": [event, ...]}. Each event: {"id", "g": id given by the caller, "s": stream,
-- "t": type, "v": version, "d": data, "m": metadata, "tr", "tk", "ag": trace/task/agent ids, "p": parent id,
-- "a": index (0-based) of its topmost ancestor inside this request, "ad": its distance to that ancestor,
-- "xp": parent may be external, "r": related ids, "k": idempotency key, "o": occurred_at}.
--
-- Outcomes: {"ok": [stream_position, ...], "rt": [root_id, ...], "dp": [depth, ...], "p": first position,
-- "at": recorded_at in Unix microseconds} | {"dup": [event row, ...]} | {"err": code, ...}.
CREATE FUNCTION __SCHEMA__.append(p_requests jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    outcomes jsonb := '[]';
    req jsonb;
    now_ts timestamptz;
BEGIN
    -- Invariant 2 (no reader ever skips an event): take positions and commit in the same order. This lock
    -- is held until commit, so a transaction can only take positions after every earlier one is visible;
    -- a reader that has seen position p can never later find a smaller position committed. Group commit
    -- (many requests per call) keeps the cost of this serialization low. The lock is per schema, so stores in
    -- other schemas of the database do not wait for each other.
    PERFORM pg_advisory_xact_lock(1835365225, hashtext(__SCHEMA_LIT__));
    now_ts := clock_timestamp();
    FOR req IN SELECT value FROM jsonb_array_elements(p_requests) LOOP
        outcomes := outcomes || jsonb_build_array(__SCHEMA__.append_request(req, now_ts));
    END LOOP;
    PERFORM pg_notify(__SCHEMA_LIT__ || '.events', '');
    RETURN outcomes;
END $$;

CREATE FUNCTION __SCHEMA__.append_request(req jsonb, now_ts timestamptz) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    evs jsonb := req -> 'e';
    tn text := req ->> 'tn';
    n integer := jsonb_array_length(req -> 'e');
    keys text[];
    known integer;
    bad record;
    expected bigint := (req ->> 'x')::bigint;
    actual bigint;
    lineage jsonb;
    first_position bigint;
    result jsonb;
BEGIN
    -- Idempotency: a request whose keys are all recorded (with the same content) gets its original events.
    IF (req ->> 'hk')::boolean THEN
        SELECT array_agg(e ->> 'k') INTO keys FROM jsonb_array_elements(evs) AS e WHERE e ? 'k';
        SELECT count(*) INTO known FROM __SCHEMA__.idempotency_keys AS i WHERE i.tenant = tn AND i.key = ANY (keys);
        IF known > 0 THEN
            IF known <> n THEN
                SELECT i.key, i.event_id INTO bad FROM __SCHEMA__.idempotency_keys AS i
                    WHERE i.tenant = tn AND i.key = ANY (keys) LIMIT 1;
                RETURN jsonb_build_object('err', 'idempotency_conflict', 'key', bad.key, 'id', bad.event_id,
                                          'reason', 'request (only some of its keys are recorded)');
            END IF;
            SELECT x.e ->> 'k' AS key, ev.id,
                   CASE WHEN ev.type <> x.e ->> 't' THEN 'type'
                        WHEN ev.version <> (x.e ->> 'v')::integer THEN 'version'
                        WHEN ev.stream <> x.e ->> 's' THEN 'stream'
                        ELSE 'data' END AS reason
              INTO bad
              FROM jsonb_array_elements(evs) AS x(e)
              JOIN __SCHEMA__.idempotency_keys AS i ON i.tenant = tn AND i.key = x.e ->> 'k'
              JOIN __SCHEMA__.events AS ev ON ev.position = i.position AND ev.recorded_at = i.recorded_at
             WHERE ev.type <> x.e ->> 't' OR ev.version <> (x.e ->> 'v')::integer
                OR ev.stream <> x.e ->> 's' OR ev.data <> x.e -> 'd'
             LIMIT 1;
            IF FOUND THEN
                RETURN jsonb_build_object('err', 'idempotency_conflict', 'key', bad.key, 'id', bad.id,
                                          'reason', bad.reason);
            END IF;
            SELECT jsonb_agg(to_jsonb(ev) ORDER BY x.i) INTO result
              FROM jsonb_array_elements(evs) WITH ORDINALITY AS x(e, i)
              JOIN __SCHEMA__.idempotency_keys AS k ON k.tenant = tn AND k.key = x.e ->> 'k'
              JOIN __SCHEMA__.events AS ev ON ev.position = k.position AND ev.recorded_at = k.recorded_at;
            RETURN jsonb_build_object('dup', result);
        END IF;
    END IF;

    IF req ->> 's' IS NOT NULL THEN
        SELECT st.version INTO actual FROM __SCHEMA__.streams AS st WHERE st.tenant = tn AND st.stream = req ->> 's';
        actual := coalesce(actual, 0);
        IF (expected = -1 AND actual <> 0) OR (expected = -2 AND actual = 0)
           OR (expected >= 0 AND actual <> expected) THEN
            RETURN jsonb_build_object('err', 'wrong_expected_version', 'stream', req ->> 's', 'actual', actual);
        END IF;
    END IF;

    IF (req ->> 'hg')::boolean THEN
        SELECT x.i - 1 AS index, x.e ->> 'id' AS id INTO bad
          FROM jsonb_array_elements(evs) WITH ORDINALITY AS x(e, i)
         WHERE (x.e ->> 'g')::boolean
           AND EXISTS (SELECT 1 FROM __SCHEMA__.events AS ev WHERE ev.id = (x.e ->> 'id')::uuid)
         ORDER BY x.i LIMIT 1;
        IF FOUND THEN
            RETURN jsonb_build_object('err', 'id_exists', 'index', bad.index, 'id', bad.id);
        END IF;
    END IF;

    -- Lineage. The client marks each event with its topmost ancestor inside this request ("a") and its
    -- distance to it ("ad"); only those topmost ancestors need their parent looked up here.
    IF (req ->> 'hp')::boolean THEN
        SELECT jsonb_object_agg(top.a, jsonb_build_array(top.root, top.depth)) INTO lineage
          FROM (SELECT x.i - 1 AS a,
                       CASE WHEN x.e ->> 'p' IS NULL THEN (x.e ->> 'id')::uuid
                            ELSE coalesce(pe.root_id, CASE WHEN (x.e ->> 'xp')::boolean THEN (x.e ->> 'p')::uuid END)
                       END AS root,
                       CASE WHEN x.e ->> 'p' IS NULL THEN 0
                            ELSE coalesce(pe.depth + 1, CASE WHEN (x.e ->> 'xp')::boolean THEN 1 END)
                       END AS depth
                  FROM jsonb_array_elements(evs) WITH ORDINALITY AS x(e, i)
                  LEFT JOIN __SCHEMA__.events AS pe
                         ON x.e ->> 'p' IS NOT NULL AND pe.id = (x.e ->> 'p')::uuid AND pe.tenant = tn
                 WHERE (x.e ->> 'a')::integer = x.i - 1) AS top;
        SELECT key::integer AS index INTO bad FROM jsonb_each(lineage) WHERE value ->> 0 IS NULL
         ORDER BY key::integer LIMIT 1;
        IF FOUND THEN
            RETURN jsonb_build_object('err', 'parent_not_found', 'index', bad.index,
                                      'parent', evs -> bad.index ->> 'p');
        END IF;
    END IF;

    -- Positions: under the append lock nobody else draws from the sequence, so a block of n is ours.
    first_position := nextval('__SCHEMA__.events_position');
    IF n > 1 THEN
        PERFORM setval('__SCHEMA__.events_position', first_position + n - 1);
    END IF;

    WITH x AS (
        SELECT x.e, x.i FROM jsonb_array_elements(evs) WITH ORDINALITY AS x(e, i)
    ), base AS (
        SELECT s.stream, coalesce(st.version, 0) AS version
          FROM (SELECT DISTINCT x.e ->> 's' AS stream FROM x) AS s
          LEFT JOIN __SCHEMA__.streams AS st ON st.tenant = tn AND st.stream = s.stream
    ), rows AS (
        SELECT x.e, x.i, first_position + x.i - 1 AS position,
               base.version + row_number() OVER (PARTITION BY x.e ->> 's' ORDER BY x.i) AS stream_position,
               CASE WHEN lineage IS NULL THEN (x.e ->> 'id')::uuid
                    ELSE (lineage -> (x.e ->> 'a') ->> 0)::uuid END AS root_id,
               CASE WHEN lineage IS NULL THEN 0
                    ELSE (lineage -> (x.e ->> 'a') ->> 1)::integer + (x.e ->> 'ad')::integer END AS depth
          FROM x JOIN base ON base.stream = x.e ->> 's'
    ), inserted AS (
        INSERT INTO __SCHEMA__.events (position, recorded_at, id, tenant, stream, stream_position, type, version,
                                       data, metadata, trace_id, task_id, agent_id, parent_id, root_id, depth,
                                       related, idempotency_key, occurred_at)
        SELECT r.position, now_ts, (r.e ->> 'id')::uuid, tn, r.e ->> 's', r.stream_position, r.e ->> 't',
               (r.e ->> 'v')::integer, r.e -> 'd', r.e -> 'm', r.e ->> 'tr', r.e ->> 'tk', r.e ->> 'ag',
               (r.e ->> 'p')::uuid, r.root_id, r.depth,
               CASE WHEN r.e ? 'r' THEN ARRAY(SELECT jsonb_array_elements_text(r.e -> 'r'))::uuid[] END,
               r.e ->> 'k', (r.e ->> 'o')::timestamptz
          FROM rows AS r
    ), streams_written AS (
        INSERT INTO __SCHEMA__.streams AS st (tenant, stream, version, last_position, created_at, updated_at)
        SELECT tn, r.e ->> 's', max(r.stream_position), max(r.position), now_ts, now_ts
          FROM rows AS r GROUP BY r.e ->> 's'
        ON CONFLICT (tenant, stream) DO UPDATE
           SET version = excluded.version, last_position = excluded.last_position, updated_at = excluded.updated_at
    ), keys_written AS (
        INSERT INTO __SCHEMA__.idempotency_keys (tenant, key, event_id, position, recorded_at)
        SELECT tn, r.e ->> 'k', (r.e ->> 'id')::uuid, r.position, now_ts FROM rows AS r WHERE r.e ? 'k'
    )
    SELECT jsonb_build_object(
               'ok', jsonb_agg(r.stream_position ORDER BY r.i),
               'rt', jsonb_agg(r.root_id ORDER BY r.i),
               'dp', jsonb_agg(r.depth ORDER BY r.i),
               'p', first_position,
               'at', (extract(epoch FROM now_ts) * 1000000)::bigint)
      INTO result
      FROM rows AS r;
    RETURN result;
END $$;
