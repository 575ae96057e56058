-- meshlog schema for PostgreSQL, version 5: the archive table that `meshlog archive restore` loads into.

-- Events that retention archived and dropped, loaded back from an archive file to be queried with SQL. Not
-- partitioned and not append-only: these are copies; delete them (or truncate the table) when done. A
-- position identifies an event across the live and archived tables, so restoring a file twice adds nothing.
CREATE TABLE __SCHEMA__.archived_events (
    position        bigint      PRIMARY KEY,
    recorded_at     timestamptz NOT NULL,
    id              uuid        NOT NULL,
    tenant          text        NOT NULL,
    stream          text        NOT NULL,
    stream_position bigint      NOT NULL,
    type            text        NOT NULL,
    version         integer     NOT NULL,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    trace_id        text,
    task_id         text,
    agent_id        text,
    parent_id       uuid,
    root_id         uuid        NOT NULL,
    depth           integer     NOT NULL,
    related         uuid[],
    idempotency_key text,
    occurred_at     timestamptz,
    archive         text        NOT NULL,
    restored_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX archived_events_stream ON __SCHEMA__.archived_events (tenant, stream, stream_position);
CREATE INDEX archived_events_recorded_at ON __SCHEMA__.archived_events (tenant, recorded_at);
CREATE INDEX archived_events_trace ON __SCHEMA__.archived_events (tenant, trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX archived_events_task ON __SCHEMA__.archived_events (tenant, task_id) WHERE task_id IS NOT NULL;
CREATE INDEX archived_events_archive ON __SCHEMA__.archived_events (archive);

-- The same tenant isolation as every other table of a tenant's data (see version 3).
ALTER TABLE __SCHEMA__.archived_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE __SCHEMA__.archived_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON __SCHEMA__.archived_events
    USING (tenant = current_setting('meshlog.tenant', true) OR current_setting('meshlog.tenant', true) = '*');
