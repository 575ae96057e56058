-- meshlog schema for SQLite, version 4: the instance registry (see meshlog.registry).

-- One row per registered instance; its events are in the stream instance:<id>. Times in microseconds since the
-- epoch. heartbeat_event_at is when the last instance_heartbeat event was written (those events are coalesced).
CREATE TABLE instances (
    tenant             TEXT    NOT NULL,
    id                 TEXT    NOT NULL,
    name               TEXT,
    project            TEXT,
    host               TEXT,
    status             TEXT    NOT NULL CHECK (status IN ('active', 'stale', 'closed')),
    registered_at      INTEGER NOT NULL,
    last_heartbeat     INTEGER NOT NULL,
    heartbeat_event_at INTEGER,
    closed_at          INTEGER,
    metadata           TEXT    NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;

-- The stale detector's scan: active instances by last heartbeat.
CREATE INDEX instances_silent ON instances (status, last_heartbeat);
