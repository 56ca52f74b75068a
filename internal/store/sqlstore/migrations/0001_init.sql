-- Foundation: admin token, enrollment tokens, agents.
-- Times are BIGINT unix microseconds (UTC) on every engine, so ordering and comparison are exact.

CREATE TABLE hub_settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE enroll_tokens (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    max_uses    INTEGER NOT NULL,
    uses        INTEGER NOT NULL DEFAULT 0,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE agents (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    labels       TEXT NOT NULL DEFAULT '{}',
    version      TEXT NOT NULL DEFAULT '',
    system       TEXT NOT NULL DEFAULT '{}',
    enrolled_at  BIGINT NOT NULL,
    enroll_token TEXT NOT NULL DEFAULT '',
    last_seen    BIGINT NOT NULL DEFAULT 0,
    status       TEXT NOT NULL DEFAULT 'unknown',
    cred_hash    TEXT NOT NULL,
    revoked_at   BIGINT
);

CREATE INDEX agents_name ON agents (name);
CREATE INDEX agents_status ON agents (status);
