-- A migration's page, its API description and the fleet map read a migration's latest attempts
-- (the one attempt of each agent that no later attempt of the same agent follows). Which attempt
-- is the latest was found row by row (a probe of the primary key for a later attempt, 10,000
-- probes on a fleet-wide migration, each request); it is now a column, kept by the store when it
-- writes an attempt (a new attempt clears it on the agent's earlier ones), so the reads below
-- walk partial indexes of only the latest attempts.
ALTER TABLE assignments ADD COLUMN latest INTEGER NOT NULL DEFAULT 1;
UPDATE assignments SET latest = 0 WHERE EXISTS (SELECT 1 FROM assignments l
    WHERE l.migration = assignments.migration AND l.agent_id = assignments.agent_id AND l.attempt > assignments.attempt);

-- The grid's pages and a batch's agents, in the grid's order (batch, agent), stopping after a page.
CREATE INDEX assignments_latest ON assignments (migration, batch, agent_id) WHERE latest = 1;
-- The counts by batch, state and whether the attempt keeps a failure, in GROUP BY order: one walk
-- of the index, no sort.
CREATE INDEX assignments_latest_counts ON assignments (migration, batch, state, (failure <> '')) WHERE latest = 1;
-- The failed agents (a few percent of a migration at most), in the grid's order.
CREATE INDEX assignments_latest_failed ON assignments (migration, batch, agent_id)
    WHERE latest = 1 AND (state IN ('failed', 'timed_out', 'rollback_failed') OR failure <> '');
-- The live page's change mark counts every attempt by state: from the index alone.
CREATE INDEX assignments_state ON assignments (migration, state);

-- Agents by status with the revoked apart (the dashboard and the agents list, each request): one
-- walk of this index in status order, no sort; it serves what agents_status served.
CREATE INDEX agents_status_revoked ON agents (status, revoked_at);
DROP INDEX agents_status;
