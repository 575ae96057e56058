-- meshlog schema for SQLite, version 3: API tokens of the server.

-- Only a SHA-256 digest of each token's secret is kept; the secret itself is shown once, at creation.
CREATE TABLE tokens (
    id          TEXT    PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    scopes      TEXT    NOT NULL,
    secret_hash TEXT    NOT NULL,
    name        TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
) WITHOUT ROWID;

CREATE INDEX tokens_tenant ON tokens (tenant, created_at);
