-- meshlog schema for SQLite, version 5: the archive table that `meshlog archive restore` loads into.

-- Events that retention archived and deleted, loaded back from an archive file to be queried with SQL. Not
-- append-only: these are copies; delete them when done. Restoring a file twice adds nothing.
CREATE TABLE archived_events (
    position        INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL,
    tenant          TEXT    NOT NULL,
    stream          TEXT    NOT NULL,
    stream_position INTEGER NOT NULL,
    type            TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    data            TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    trace_id        TEXT,
    task_id         TEXT,
    agent_id        TEXT,
    parent_id       TEXT,
    root_id         TEXT    NOT NULL,
    depth           INTEGER NOT NULL,
    related         TEXT,
    idempotency_key TEXT,
    occurred_at     INTEGER,
    recorded_at     INTEGER NOT NULL,
    archive         TEXT    NOT NULL,
    restored_at     INTEGER NOT NULL
);

CREATE INDEX archived_events_stream ON archived_events (tenant, stream, stream_position);
CREATE INDEX archived_events_recorded_at ON archived_events (tenant, recorded_at);
CREATE INDEX archived_events_archive ON archived_events (archive);
