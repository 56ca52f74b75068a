-- Events keyed by arrival (seq) so that every secondary index carries a small integer instead of
-- the 36-character event id, the index by type goes (a type filter walks the time index), and
-- severities are indexed only for warnings and errors: each event written updates fewer and
-- smaller index pages. seq also breaks ties between events of the same time in listings.
--
-- The table is rebuilt (SQLite cannot change a primary key in place); existing events keep
-- their order of arrival.
CREATE TABLE events_seq (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL,
    time        BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    source      TEXT NOT NULL,
    type        TEXT NOT NULL,
    severity    SMALLINT NOT NULL,
    agent_id    TEXT NOT NULL DEFAULT '',
    migration   TEXT NOT NULL DEFAULT '',
    body        TEXT NOT NULL
);
INSERT INTO events_seq (id, time, received_at, source, type, severity, agent_id, migration, body)
    SELECT id, time, received_at, source, type, severity, agent_id, migration, body FROM events
    ORDER BY received_at, id;
DROP TABLE events;
ALTER TABLE events_seq RENAME TO events;

-- SQLite appends the rowid (seq) to every index entry by itself.
CREATE UNIQUE INDEX events_id ON events (id);
CREATE INDEX events_time ON events (time);
CREATE INDEX events_agent_time ON events (agent_id, time);
CREATE INDEX events_migration_time ON events (migration, time);
CREATE INDEX events_problems_time ON events (time) WHERE severity > 0;
