-- What the migration controller needs to mark transitions rather than re-observed states, and
-- to delete a migration without losing what agents and other records depend on.

-- The highest generation of an attempt its agent has reported on: a request the agent has not
-- confirmed is still sent to it (a cancel after a deadline, for instance), and a migration with
-- one is not deleted.
ALTER TABLE assignments ADD COLUMN acked_generation INTEGER NOT NULL DEFAULT 0;

-- When the assignment last became agent_unreachable (0 while it is not): the event that says the
-- agent is reachable again says how long it was away, also after a restart of the hub.
ALTER TABLE assignments ADD COLUMN unreachable_since BIGINT NOT NULL DEFAULT 0;

-- Names of deleted migrations. Agents keep each attempt's result in their journals under the
-- migration's name, so a name is never used twice.
CREATE TABLE deleted_migrations (
    name       TEXT PRIMARY KEY,
    deleted_at BIGINT NOT NULL
);

-- The consistency check's open findings: one event when a finding appears and one when it is
-- gone, not one per check.
CREATE TABLE check_findings (
    kind       TEXT NOT NULL,
    migration  TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    detail     TEXT NOT NULL,
    fix        TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    PRIMARY KEY (kind, migration, agent_id, attempt)
);
