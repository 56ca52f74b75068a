-- A migration's events and their severities go together: a migration that fails across a fleet
-- writes mostly errors, one that succeeds almost none. PostgreSQL's planner takes columns as
-- independent, so for a fleet-wide migration whose 10,000 events were all errors it expected a
-- few hundred, and read its newest 200 failure events by fetching and sorting all 10,000 rows
-- (9,500 pages) instead of walking its newest problems in time order (about 200). Statistics of
-- the most common (migration, severity) pairs let it count them as they are. They cost the
-- writes of events nothing: ANALYZE (autovacuum's too) builds them from its sample.
CREATE STATISTICS events_migration_severity (mcv) ON migration, severity FROM events;
ANALYZE events;
