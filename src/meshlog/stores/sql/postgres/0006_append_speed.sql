-- meshlog schema for PostgreSQL, version 6: the append function's lookups probe an index, whatever the planner
-- knows of the tables.
--
-- A PL/pgSQL function's statements are planned once per connection, and the plan is kept until the statistics of
-- a table it reads change. Version 1's lookups were planned from what the planner knew then. On a new schema, or
-- a month's partition that autovacuum has not analyzed yet, it guesses that a tenant holds 0.5 % of the rows and
-- knows nothing of ids and keys being unique: it planned the idempotency lookup as a pass over all the tenant's
-- keys, each parent lookup as an intersection with all the tenant's events, and (with statistics too, up to tens
-- of thousands of streams) the stream versions as a pass over all the tenant's streams, and the plans kept doing
-- so as the tables grew: the tracing writer's 500-event batches went from 40 ms to over 600 ms within 20,000
-- events. Now:
--
-- - each lookup is a LATERAL subquery per key, id or stream, fenced with OFFSET 0 so that the planner cannot turn
--   it into a join over the tenant's rows: it probes the primary key of idempotency_keys or streams, or the index
--   on events.id, once per key, id or stream;
-- - a parent is looked up by id alone and its tenant checked on the rows found, so that no index on the tenant is
--   a candidate;
-- - sequential scans are off in append_request: a table that was empty or tiny when last analyzed (the partitions
--   of the months ahead, a new schema) is otherwise planned as a sequential scan, a plan kept as the table fills.
--
-- The outcomes of a call are gathered in an array (version 1 concatenated jsonb, copying it for each request).
-- Outcomes are those of version 1, except that a request whose keys are only partly recorded now names its first
-- recorded key (in the request's order, as the other stores do) rather than any one of them.

CREATE OR REPLACE FUNCTION __SCHEMA__.append(p_requests jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    outcomes jsonb[] := '{}';
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
        PERFORM set_config('meshlog.tenant', req ->> 'tn', true);
        -- An array variable grows in place; a jsonb one would be copied whole for each request.
        outcomes := array_append(outcomes, __SCHEMA__.append_request(req, now_ts));
    END LOOP;
    PERFORM pg_notify(__SCHEMA_LIT__ || '.events', '');
    RETURN to_jsonb(outcomes);
END $$;

CREATE OR REPLACE FUNCTION __SCHEMA__.append_request(req jsonb, now_ts timestamptz) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
DECLARE
    evs jsonb := req -> 'e';
    tn text := req ->> 'tn';
    n integer := jsonb_array_length(req -> 'e');
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
        SELECT count(*) INTO known
          FROM jsonb_array_elements(evs) AS x(e)
          CROSS JOIN LATERAL (SELECT 1 FROM __SCHEMA__.idempotency_keys AS i
                               WHERE i.tenant = tn AND i.key = x.e ->> 'k' OFFSET 0) AS i;
        IF known > 0 THEN
            IF known <> n THEN
                SELECT i.key, i.event_id INTO bad
                  FROM jsonb_array_elements(evs) WITH ORDINALITY AS x(e, n)
                  CROSS JOIN LATERAL (SELECT i.key, i.event_id FROM __SCHEMA__.idempotency_keys AS i
                                       WHERE i.tenant = tn AND i.key = x.e ->> 'k' OFFSET 0) AS i
                 ORDER BY x.n LIMIT 1;
                RETURN jsonb_build_object('err', 'idempotency_conflict', 'key', bad.key, 'id', bad.event_id,
                                          'reason', 'request (only some of its keys are recorded)');
            END IF;
            SELECT x.e ->> 'k' AS key, ev.id,
                   CASE WHEN ev.type <> x.e ->> 't' THEN 'type'
                        WHEN ev.version <> (x.e ->> 'v')::integer THEN 'version'
                        WHEN ev.stream <> x.e ->> 's' THEN 'stream'
                        ELSE 'data' END AS reason
              INTO bad
              FROM jsonb_array_elements(evs) WITH ORDINALITY AS x(e, n)
              CROSS JOIN LATERAL (SELECT ev.* FROM __SCHEMA__.idempotency_keys AS i
                                    JOIN __SCHEMA__.events AS ev
                                      ON ev.position = i.position AND ev.recorded_at = i.recorded_at
                                   WHERE i.tenant = tn AND i.key = x.e ->> 'k' OFFSET 0) AS ev
             WHERE ev.type <> x.e ->> 't' OR ev.version <> (x.e ->> 'v')::integer
                OR ev.stream <> x.e ->> 's' OR ev.data <> x.e -> 'd'
             ORDER BY x.n LIMIT 1;
            IF FOUND THEN
                RETURN jsonb_build_object('err', 'idempotency_conflict', 'key', bad.key, 'id', bad.id,
                                          'reason', bad.reason);
            END IF;
            SELECT jsonb_agg(to_jsonb(ev) ORDER BY x.i) INTO result
              FROM jsonb_array_elements(evs) WITH ORDINALITY AS x(e, i)
              CROSS JOIN LATERAL (SELECT ev.* FROM __SCHEMA__.idempotency_keys AS k
                                    JOIN __SCHEMA__.events AS ev
                                      ON ev.position = k.position AND ev.recorded_at = k.recorded_at
                                   WHERE k.tenant = tn AND k.key = x.e ->> 'k' OFFSET 0) AS ev;
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

    -- Ids are checked across tenants, as the other stores do (row-level security narrows it to the tenant for
    -- a role it binds).
    IF (req ->> 'hg')::boolean THEN
        SELECT x.i - 1 AS index, x.e ->> 'id' AS id INTO bad
          FROM jsonb_array_elements(evs) WITH ORDINALITY AS x(e, i)
          CROSS JOIN LATERAL (SELECT 1 FROM __SCHEMA__.events AS ev
                               WHERE ev.id = (x.e ->> 'id')::uuid OFFSET 0) AS ev
         WHERE (x.e ->> 'g')::boolean
         ORDER BY x.i LIMIT 1;
        IF FOUND THEN
            RETURN jsonb_build_object('err', 'id_exists', 'index', bad.index, 'id', bad.id);
        END IF;
    END IF;

    -- Lineage. The client marks each event with its topmost ancestor inside this request ("a") and its
    -- distance to it ("ad"); only those topmost ancestors need their parent looked up here: by id alone, the
    -- tenant checked on the rows found (a condition on the tenant would invite a scan of the tenant's rows).
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
                  LEFT JOIN LATERAL (SELECT f.root_id, f.depth
                                       FROM (SELECT ev.tenant, ev.root_id, ev.depth FROM __SCHEMA__.events AS ev
                                              WHERE ev.id = (x.e ->> 'p')::uuid OFFSET 0) AS f
                                      WHERE f.tenant = tn) AS pe ON true
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
          LEFT JOIN LATERAL (SELECT st.version FROM __SCHEMA__.streams AS st
                              WHERE st.tenant = tn AND st.stream = s.stream OFFSET 0) AS st ON true
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
