-- The migration page and the fleet map read a fleet-wide migration's assignments without a scan
-- and a sort of all of them: the grid's page walks (migration, batch, agent_id) in its order and
-- stops after the page, the next batch is a range of it, and the agents whose rollback failed
-- are a partial index of only those attempts (a handful), which the fleet map, the dashboard and
-- the approval's warnings read on every request.
CREATE INDEX assignments_grid ON assignments (migration, batch, agent_id, attempt);
CREATE INDEX assignments_rollback_failed ON assignments (agent_id, migration, attempt) WHERE state = 'rollback_failed';
