-- Web UI: sessions, and the indexes its paged listings walk.

-- A login. Only the SHA-256 of the session id is stored; the id itself is in the browser's
-- cookie. csrf is the token every state-changing form of the session carries.
CREATE TABLE ui_sessions (
    id_hash    TEXT PRIMARY KEY,
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);

-- Agents by name with the id as tie-breaker (keyset pagination), overall and per status.
CREATE INDEX agents_name_id ON agents (name, id);
CREATE INDEX agents_status_name_id ON agents (status, name, id);

-- Migrations newest first (keyset pagination).
CREATE INDEX migrations_created_name ON migrations (created_at, name);
