-- Events: every result on every agent, stored once per producer-assigned id.
-- body keeps the event exactly as received; the other columns exist to filter and sort.

CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    time        BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    source      TEXT NOT NULL,
    type        TEXT NOT NULL,
    severity    SMALLINT NOT NULL,
    agent_id    TEXT NOT NULL DEFAULT '',
    migration   TEXT NOT NULL DEFAULT '',
    body        TEXT NOT NULL
);

CREATE INDEX events_time ON events (time, id);
CREATE INDEX events_agent_time ON events (agent_id, time, id);
CREATE INDEX events_migration_time ON events (migration, time, id);
CREATE INDEX events_type_time ON events (type, time, id);
CREATE INDEX events_severity_time ON events (severity, time, id);

-- Per-agent state derived from events: the latest event overall (migration = '') and per
-- migration. Ingest rehydrates it from here on the first event of an agent after a restart.
CREATE TABLE agent_event_state (
    agent_id      TEXT NOT NULL,
    migration     TEXT NOT NULL,
    last_event_id TEXT NOT NULL,
    last_type     TEXT NOT NULL,
    last_severity SMALLINT NOT NULL,
    last_time     BIGINT NOT NULL,
    PRIMARY KEY (agent_id, migration)
);
