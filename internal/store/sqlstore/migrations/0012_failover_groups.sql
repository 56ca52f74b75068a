-- Failover groups: the spec as applied (canonical JSON), the maintenance pause, and one row per
-- member agent. An agent is a member of at most one group (the primary key of
-- failover_members), so two groups can never both hold it; a selector is resolved to agent ids
-- when the group is applied.
CREATE TABLE failover_groups (
    name         TEXT PRIMARY KEY,
    spec         TEXT NOT NULL,
    spec_hash    TEXT NOT NULL,
    paused       SMALLINT NOT NULL DEFAULT 0,
    pause_reason TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    version      BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE failover_members (
    agent_id  TEXT PRIMARY KEY,
    grp       TEXT NOT NULL REFERENCES failover_groups (name) ON DELETE CASCADE,
    position  INTEGER NOT NULL
);

CREATE INDEX failover_members_grp ON failover_members (grp, position);
