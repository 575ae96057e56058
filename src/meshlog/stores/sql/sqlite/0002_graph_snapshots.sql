-- meshlog schema for SQLite, version 2: related-event lookups and projection snapshots.

-- One row per (event, id it names in `related`): the reverse direction of the related-events graph.
CREATE TABLE event_links (
    tenant    TEXT NOT NULL,
    target_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    PRIMARY KEY (tenant, target_id, source_id)
) WITHOUT ROWID;

INSERT OR IGNORE INTO event_links (tenant, target_id, source_id)
SELECT events.tenant, j.value, events.id FROM events, json_each(events.related) AS j WHERE events.related IS NOT NULL;

CREATE TABLE snapshots (
    tenant             TEXT    NOT NULL,
    stream             TEXT    NOT NULL,
    projection         TEXT    NOT NULL,
    projection_version INTEGER NOT NULL,
    stream_version     INTEGER NOT NULL,
    state              TEXT    NOT NULL,
    created_at         INTEGER NOT NULL,
    PRIMARY KEY (tenant, stream, projection)
) WITHOUT ROWID;
