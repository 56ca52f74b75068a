-- The migration page and the fleet map read a fleet-wide migration's assignments without a scan
-- and a sort of all of them: the grid's page walks (migration, batch, agent_id) in its order and
-- stops after the page, the next batch is a range of it, and the agents whose rollback failed
-- are a partial index of only those attempts (a handful), which the fleet map, the dashboard and
-- the approval's warnings read on every request.
CREATE INDEX assignments_grid ON assignments (migration, batch, agent_id, attempt);
CREATE INDEX assignments_rollback_failed ON assignments (agent_id, migration, attempt) WHERE state = 'rollback_failed';

-- A migration's newest errors (the migration page reads up to 200 for their output) walk only its
-- warnings and errors, newest first in the listing's order (time, seq), instead of every event of
-- the migration: a migration across 50 sites has about 20,000 events of which 2 percent are errors.
-- (events_problems_migration of 0011 has type and severity between time and seq, so it cannot
-- give that order.)
CREATE INDEX events_problems_migration_time ON events (migration, time, seq) WHERE severity > 0;
