-- meshlog schema for PostgreSQL, version 4: the instance registry (see meshlog.registry).

-- One row per registered instance; its events are in the stream instance:<id>. heartbeat_event_at is when the
-- last instance_heartbeat event was written (those events are coalesced).
CREATE TABLE __SCHEMA__.instances (
    tenant             text        NOT NULL,
    id                 text        NOT NULL,
    name               text,
    project            text,
    host               text,
    status             text        NOT NULL CHECK (status IN ('active', 'stale', 'closed')),
    registered_at      timestamptz NOT NULL,
    last_heartbeat     timestamptz NOT NULL,
    heartbeat_event_at timestamptz,
    closed_at          timestamptz,
    metadata           jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant, id)
);

-- The stale detector's scan (across tenants): active instances by last heartbeat.
CREATE INDEX instances_silent ON __SCHEMA__.instances (last_heartbeat) WHERE status = 'active';

-- Tenant isolation, as for every table that holds a tenant's data (see 0003_tenancy.sql).
ALTER TABLE __SCHEMA__.instances ENABLE ROW LEVEL SECURITY;
ALTER TABLE __SCHEMA__.instances FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON __SCHEMA__.instances USING (
    tenant = current_setting('meshlog.tenant', true) OR current_setting('meshlog.tenant', true) = '*'
);
