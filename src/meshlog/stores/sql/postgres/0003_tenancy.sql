-- meshlog schema for PostgreSQL, version 3: API tokens, and tenant isolation enforced by the database.

-- Only a SHA-256 digest of each token's secret is kept; the secret itself is shown once, at creation.
CREATE TABLE __SCHEMA__.tokens (
    id          text        PRIMARY KEY,
    tenant      text        NOT NULL,
    scopes      text[]      NOT NULL,
    secret_hash text        NOT NULL,
    name        text,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX tokens_tenant ON __SCHEMA__.tokens (tenant, created_at);

-- Row-level security on every table that holds a tenant's data. Each connection of meshlog says whose data it
-- works on with the setting meshlog.tenant (the store sets it before every statement; the append function sets
-- it per request); rows of other tenants are invisible and cannot be written, even by a query that forgets its
-- `tenant = ...` condition. '*' is the administrative view (migrations, partition upkeep, token lookup,
-- retention); without the setting nothing is visible. FORCE makes the policies bind the tables' owner too;
-- only superusers and roles with BYPASSRLS are exempt, so run the server as an ordinary role.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'streams', 'idempotency_keys', 'checkpoints', 'snapshots', 'tokens'] LOOP
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', __SCHEMA_LIT__, t);
        EXECUTE format('ALTER TABLE %I.%I FORCE ROW LEVEL SECURITY', __SCHEMA_LIT__, t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I.%I USING '
            '(tenant = current_setting(''meshlog.tenant'', true) OR current_setting(''meshlog.tenant'', true) = ''*'')',
            __SCHEMA_LIT__, t);
    END LOOP;
END $$;

-- Partition upkeep runs as the schema's owner (creating a partition needs ownership of events), across tenants
-- (it checks the default partition for rows), so that a server connected as an ordinary role can keep
-- partitions ahead.
ALTER FUNCTION __SCHEMA__.ensure_partitions(integer) SECURITY DEFINER SET meshlog.tenant = '*';
REVOKE ALL ON FUNCTION __SCHEMA__.ensure_partitions(integer) FROM PUBLIC;

-- The append function, now setting each request's tenant for the row-level security policies.
CREATE OR REPLACE FUNCTION __SCHEMA__.append(p_requests jsonb) RETURNS jsonb
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
        PERFORM set_config('meshlog.tenant', req ->> 'tn', true);
        outcomes := outcomes || jsonb_build_array(__SCHEMA__.append_request(req, now_ts));
    END LOOP;
    PERFORM pg_notify(__SCHEMA_LIT__ || '.events', '');
    RETURN outcomes;
END $$;
