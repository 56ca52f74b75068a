-- Migrations, their assignments (one row per migration × agent × attempt), and the controller's
-- fencing epoch.

CREATE TABLE migrations (
    name           TEXT PRIMARY KEY,
    spec           TEXT NOT NULL,
    spec_hash      TEXT NOT NULL,
    state          TEXT NOT NULL,
    reason         TEXT NOT NULL DEFAULT '',
    batches        INTEGER NOT NULL,
    current_batch  INTEGER NOT NULL DEFAULT -1,
    approved_batch INTEGER NOT NULL DEFAULT 0,
    active_ms      BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    finished_at    BIGINT NOT NULL DEFAULT 0,
    version        BIGINT NOT NULL DEFAULT 1
);

CREATE INDEX migrations_state ON migrations (state);

CREATE TABLE assignments (
    migration        TEXT NOT NULL,
    agent_id         TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    batch            INTEGER NOT NULL,
    state            TEXT NOT NULL,
    generation       INTEGER NOT NULL DEFAULT 0,
    action           TEXT NOT NULL DEFAULT 'apply',
    step             INTEGER NOT NULL DEFAULT 0,
    step_name        TEXT NOT NULL DEFAULT '',
    error            TEXT NOT NULL DEFAULT '',
    failure          TEXT NOT NULL DEFAULT '',
    failed_step      TEXT NOT NULL DEFAULT '',
    exit_code        INTEGER,
    previous_attempt INTEGER NOT NULL DEFAULT 0,
    applied          INTEGER NOT NULL DEFAULT 0,
    active_ms        BIGINT NOT NULL DEFAULT 0,
    dispatched_at    BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (migration, agent_id, attempt)
);

CREATE INDEX assignments_agent ON assignments (agent_id, state);

CREATE TABLE leadership (
    name       TEXT PRIMARY KEY,
    epoch      BIGINT NOT NULL,
    holder     TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
