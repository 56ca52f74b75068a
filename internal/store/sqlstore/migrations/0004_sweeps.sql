-- Sweeps (scheduled fleet-wide checks), their runs (one audit row per firing) and each run's
-- agents.

CREATE TABLE sweeps (
    name         TEXT PRIMARY KEY,
    spec         TEXT NOT NULL,
    spec_hash    TEXT NOT NULL,
    -- The next scheduled firing (0: no schedule). The scheduler moves it with compare-and-set,
    -- so a firing is claimed once and a restarted hub knows what it missed.
    next_fire_at BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    version      BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE sweep_runs (
    id              TEXT PRIMARY KEY,
    sweep           TEXT NOT NULL,
    trigger_kind    TEXT NOT NULL,
    triggered_by    TEXT NOT NULL DEFAULT '',
    scheduled_for   BIGINT NOT NULL DEFAULT 0,
    fired_at        BIGINT NOT NULL,
    deadline        BIGINT NOT NULL,
    finished_at     BIGINT NOT NULL DEFAULT 0,
    max_seconds     INTEGER NOT NULL,
    status          TEXT NOT NULL,
    lock_skipped    SMALLINT NOT NULL DEFAULT 0,
    exit_code       INTEGER,
    error           TEXT NOT NULL DEFAULT '',
    matched         INTEGER NOT NULL DEFAULT 0,
    processed       INTEGER NOT NULL DEFAULT 0,
    skipped_clean   INTEGER NOT NULL DEFAULT 0,
    skipped_missing INTEGER NOT NULL DEFAULT 0,
    skipped_budget  INTEGER NOT NULL DEFAULT 0,
    drifted         INTEGER NOT NULL DEFAULT 0,
    errors          INTEGER NOT NULL DEFAULT 0,
    drifted_agents  TEXT NOT NULL DEFAULT '[]',
    missed_firings  INTEGER NOT NULL DEFAULT 0,
    remediation     TEXT NOT NULL DEFAULT '',
    context         TEXT NOT NULL DEFAULT '{}',
    updated_at      BIGINT NOT NULL
);

-- The sweep lock: at most one running run per sweep, whichever hub replica inserts it.
CREATE UNIQUE INDEX sweep_runs_lock ON sweep_runs (sweep) WHERE status = 'running';
-- A scheduled instant is recorded once (run, lock-skipped or missed), even if two hubs race.
CREATE UNIQUE INDEX sweep_runs_firing ON sweep_runs (sweep, scheduled_for) WHERE trigger_kind = 'schedule';
CREATE INDEX sweep_runs_sweep_fired ON sweep_runs (sweep, fired_at, id);
CREATE INDEX sweep_runs_fired ON sweep_runs (fired_at, id);

CREATE TABLE sweep_run_agents (
    run_id        TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    agent_name    TEXT NOT NULL DEFAULT '',
    state         TEXT NOT NULL,
    exit_code     INTEGER,
    error         TEXT NOT NULL DEFAULT '',
    output_tail   TEXT NOT NULL DEFAULT '',
    duration_ms   BIGINT NOT NULL DEFAULT 0,
    dispatched_at BIGINT NOT NULL DEFAULT 0,
    finished_at   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, agent_id)
);
