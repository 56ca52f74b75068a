package sqlstore

import (
	"context"
	"database/sql"
)

// MigrateTo applies the migrations up to version on db under d's lock, as an older godwit would
// have left the database (tests of upgrades).
func MigrateTo(ctx context.Context, db *sql.DB, d Dialect, version int) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	unlock, err := d.Lock(ctx, conn)
	if err != nil {
		return err
	}
	defer unlock()
	return migrateTo(ctx, conn, d.Name, version)
}

// EventQuery is the SQL text and arguments QueryEvents runs for q.
var EventQuery = eventQuery

// RunsQuery is the SQL text and arguments ListRuns runs for q.
var RunsQuery = runsQuery

// LatestQuery is the SQL text and arguments LatestAssignments runs for q.
var LatestQuery = latestQuery

// RollbackFailuresQuery is the SQL text RollbackFailures runs for every agent.
const RollbackFailuresQuery = rollbackFailuresQuery + rollbackFailuresOrder

// CountLatestQuery is the SQL text CountLatestAssignments runs.
const CountLatestQuery = countLatestQuery

// CountAgentsQuery is the SQL text CountAgentsByStatus runs.
const CountAgentsQuery = countAgentsQuery

// Turn waits for the store's turn to write and returns the function that gives it up.
func (s *Store) Turn(ctx context.Context) (func(), error) { return s.turn(ctx) }

// WaitingWriters is how many writers wait for their turn.
func (s *Store) WaitingWriters() int { return int(s.waiting.Load()) }
