-- meshlog schema for SQLite, version 1.
-- position is INTEGER PRIMARY KEY AUTOINCREMENT: positions are never reused, even after a rollback.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
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
    UNIQUE (tenant, stream, stream_position)
);

CREATE UNIQUE INDEX events_idempotency ON events (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_tenant_position ON events (tenant, position);
CREATE INDEX events_type ON events (tenant, type, position);
CREATE INDEX events_trace ON events (tenant, trace_id, position) WHERE trace_id IS NOT NULL;
CREATE INDEX events_task ON events (tenant, task_id, position) WHERE task_id IS NOT NULL;
CREATE INDEX events_agent ON events (tenant, agent_id, position) WHERE agent_id IS NOT NULL;
CREATE INDEX events_recorded_at ON events (tenant, recorded_at);
CREATE INDEX events_parent ON events (parent_id) WHERE parent_id IS NOT NULL;

-- Append-only: the database itself refuses to change or remove an event.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'meshlog events are append-only: UPDATE is not allowed');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'meshlog events are append-only: DELETE is not allowed');
END;

CREATE TABLE streams (
    tenant        TEXT    NOT NULL,
    stream        TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    last_position INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant, stream)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    tenant     TEXT    NOT NULL,
    consumer   TEXT    NOT NULL,
    position   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, consumer)
) WITHOUT ROWID;
