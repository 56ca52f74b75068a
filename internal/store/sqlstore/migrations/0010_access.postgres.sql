-- Access: API tokens with roles, the audit log, web UI sessions made with a role, and agent
-- names unique among unrevoked agents.

-- An API token. Only the SHA-256 of the secret is stored. role is viewer, operator or admin.
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_by  TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

-- One row per audited call (every method but GET, through the API or the web UI), in the order
-- written.
CREATE TABLE audit_log (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       BIGINT NOT NULL,
    token_id TEXT NOT NULL DEFAULT '',
    actor    TEXT NOT NULL DEFAULT '',
    role     TEXT NOT NULL DEFAULT '',
    method   TEXT NOT NULL,
    path     TEXT NOT NULL,
    route    TEXT NOT NULL,
    target   TEXT NOT NULL DEFAULT '',
    status   INTEGER NOT NULL,
    remote   TEXT NOT NULL DEFAULT '',
    via      TEXT NOT NULL
);
CREATE INDEX audit_log_token ON audit_log (token_id, seq);

-- Sessions remember the token they were made with, its role and who it describes. Sessions
-- made before roles existed were made with the admin token.
ALTER TABLE ui_sessions ADD COLUMN token_id TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE ui_sessions ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE ui_sessions ADD COLUMN actor TEXT NOT NULL DEFAULT 'admin token';
CREATE INDEX ui_sessions_token ON ui_sessions (token_id);

-- An agent's name in lower case, unique among unrevoked agents. Agents enrolled before this
-- migration under a name another unrevoked agent shares keep a NULL key (they are not renamed);
-- enrollment checks their names too.
ALTER TABLE agents ADD COLUMN name_key TEXT;
UPDATE agents SET name_key = lower(name)
    WHERE revoked_at IS NULL AND lower(name) IN
        (SELECT lower(name) FROM agents WHERE revoked_at IS NULL GROUP BY lower(name) HAVING COUNT(*) = 1);
CREATE UNIQUE INDEX agents_name_key ON agents (name_key) WHERE revoked_at IS NULL;
