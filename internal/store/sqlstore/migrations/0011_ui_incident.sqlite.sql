-- The web UI's incident views and pictures read warnings and errors, and a migration's decisions,
-- without visiting the events' rows: covering indexes of the problems only (about a tenth of the
-- events) and an index of the hub's own events (agent_id = ''), which are a handful per
-- migration (state changes, operator actions). Each event written updates them only if it is a
-- problem or the hub's. SQLite appends seq (the rowid) to every index entry by itself.
CREATE INDEX events_problems_kind ON events (time, type, severity) WHERE severity > 0;
CREATE INDEX events_problems_migration ON events (migration, time, type, severity) WHERE severity > 0;
CREATE INDEX events_hub_migration ON events (migration, time) WHERE agent_id = '';
