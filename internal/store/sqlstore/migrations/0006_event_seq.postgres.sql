-- Events keyed by arrival (seq) so that every secondary index carries a small integer instead of
-- the 36-character event id, the index by type goes (a type filter walks the time index), and
-- severities are indexed only for warnings and errors: each event written updates fewer and
-- smaller index pages. seq also breaks ties between events of the same time in listings.
--
-- Adding the identity column rewrites the table once; existing events are numbered in the
-- order the table holds them.
ALTER TABLE events ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (seq);
CREATE UNIQUE INDEX events_id ON events (id);

DROP INDEX events_time;
DROP INDEX events_agent_time;
DROP INDEX events_migration_time;
DROP INDEX events_type_time;
DROP INDEX events_severity_time;
CREATE INDEX events_time ON events (time, seq);
CREATE INDEX events_agent_time ON events (agent_id, time, seq);
CREATE INDEX events_migration_time ON events (migration, time, seq);
CREATE INDEX events_problems_time ON events (time, seq) WHERE severity > 0;
