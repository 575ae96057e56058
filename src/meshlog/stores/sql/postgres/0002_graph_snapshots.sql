-- meshlog schema for PostgreSQL, version 2: related-event lookups and projection snapshots.

-- Events that name a given event in `related` (the reverse direction of the related-events graph).
CREATE INDEX events_related ON __SCHEMA__.events USING gin (related) WHERE related IS NOT NULL;

-- The latest snapshot of each projection over each stream: replay starts from it instead of version 1.
-- Snapshots are derived data, not events: they are replaced as streams grow.
CREATE TABLE __SCHEMA__.snapshots (
    tenant             text        NOT NULL,
    stream             text        NOT NULL,
    projection         text        NOT NULL,
    projection_version integer     NOT NULL,
    stream_version     bigint      NOT NULL,
    state              jsonb       NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, stream, projection)
);
