package sqlstore_test

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/store/sqlstore"
	"godwit.dev/godwit/internal/wire"
)

// Every filter of the events listing walks an index in the listing's order on SQLite: no scan of
// the whole table and no sort of what matched, however many events there are.
func TestEventListingsWalkAnIndex(t *testing.T) {
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Two events, so that a first page of one has a cursor to the next.
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var events []store.StoredEvent
	for i := range 2 {
		e := wire.NewEvent(wire.HubSource("h"), wire.EventOperatorAction, wire.SeverityInfo, wire.EventData{})
		e.Time = at.Add(time.Duration(i) * time.Second)
		events = append(events, store.StoredEvent{Event: e, ReceivedAt: e.Time})
	}
	if _, err := s.InsertEvents(t.Context(), events, nil); err != nil {
		t.Fatal(err)
	}
	_, cursor, err := s.QueryEvents(t.Context(), store.EventQuery{Limit: 1})
	if err != nil || cursor == "" {
		t.Fatalf("no cursor after a page of one of two events: %v", err)
	}
	agent := "0190f0c8-3b7a-7cc0-8000-000000000001"
	cases := []struct {
		name  string
		q     store.EventQuery
		index string
	}{
		{"everything", store.EventQuery{}, "events_time"},
		{"next page", store.EventQuery{Cursor: cursor}, "events_time"},
		{"time range", store.EventQuery{Since: at, Until: at.Add(time.Hour)}, "events_time"},
		{"type", store.EventQuery{Types: []string{wire.EventExecutionFailed}}, "events_time"},
		{"type prefix", store.EventQuery{Types: []string{"migration.rollback.*"}}, "events_time"},
		{"agent", store.EventQuery{AgentID: agent}, "events_agent_time"},
		{"agent, next page", store.EventQuery{AgentID: agent, Cursor: cursor}, "events_agent_time"},
		{"agent and time range", store.EventQuery{AgentID: agent, Since: at}, "events_agent_time"},
		{"migration", store.EventQuery{Migration: "m1"}, "events_migration_time"},
		{"migration and errors", store.EventQuery{Migration: "m1", Severities: []string{wire.SeverityError}}, "events_problems_migration_time"},
		{"migration, errors of a type", store.EventQuery{Migration: "m1", Severities: []string{wire.SeverityError}, Types: []string{"migration.*"}}, "events_problems_migration_time"},
		{"errors", store.EventQuery{Severities: []string{wire.SeverityError}}, "events_problems_time"},
		{"warnings and errors", store.EventQuery{Severities: []string{wire.SeverityWarning, wire.SeverityError}}, "events_problems_time"},
		{"errors in a time range", store.EventQuery{Severities: []string{wire.SeverityError}, Since: at}, "events_problems_time"},
		{"info", store.EventQuery{Severities: []string{wire.SeverityInfo}}, "events_time"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.q.Limit = 50
			text, args, err := sqlstore.EventQuery(c.q)
			if err != nil {
				t.Fatal(err)
			}
			assertWalks(t, s.DB(), c.name, c.index, text, args)
		})
	}
}

// A page of a sweep's runs (and of every sweep's) walks an index in the listing's order, the
// next pages too: paging through a long audit trail never sorts it.
func TestRunListingsWalkAnIndex(t *testing.T) {
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i, id := range []string{"r1", "r2"} {
		zero := 0
		r := wire.SweepRun{ID: id, Sweep: "nightly", Trigger: wire.TriggerAPI, FiredAt: at.Add(time.Duration(i) * time.Second), Deadline: at.Add(time.Hour),
			MaxSeconds: 300, Status: wire.SweepRunCompleted, ExitCode: &zero, UpdatedAt: at}
		if _, err := s.StartRun(t.Context(), store.Fence{}, nil, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	_, cursor, err := s.ListRuns(t.Context(), store.RunQuery{Sweep: "nightly", Limit: 1})
	if err != nil || cursor == "" {
		t.Fatalf("no cursor after a page of one of two runs: %v", err)
	}
	for _, c := range []struct {
		name  string
		q     store.RunQuery
		index string
	}{
		{"one sweep", store.RunQuery{Sweep: "nightly"}, "sweep_runs_sweep_fired"},
		{"one sweep, next page", store.RunQuery{Sweep: "nightly", Cursor: cursor}, "sweep_runs_sweep_fired"},
		{"every sweep", store.RunQuery{}, "sweep_runs_fired"},
		{"every sweep, next page", store.RunQuery{Cursor: cursor}, "sweep_runs_fired"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.q.Limit = 50
			text, args, err := sqlstore.RunsQuery(c.q)
			if err != nil {
				t.Fatal(err)
			}
			assertWalks(t, s.DB(), c.name, c.index, text, args)
		})
	}
}

// The migration page's reads of a fleet-wide migration's latest attempts walk a partial index of
// only the latest attempts in the page's order (a grid page stops after its rows instead of
// sorting every assignment, and no row is probed for a later attempt), the counts walk theirs in
// GROUP BY order, the failed agents and the agents whose rollback failed are read from their
// partial indexes, not from every assignment, and the agents are counted by status from an index.
func TestAssignmentReadsWalkAnIndex(t *testing.T) {
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	batch := 2
	cases := []struct {
		name, index string
		text        string
		args        []any
	}{
		{name: "rollback failures", index: "assignments_rollback_failed", text: sqlstore.RollbackFailuresQuery},
		{name: "counts", index: "assignments_latest_counts", text: sqlstore.CountLatestQuery, args: []any{"m"}},
		{name: "agents by status", index: "agents_status_revoked", text: sqlstore.CountAgentsQuery},
	}
	for _, c := range []struct {
		name, index string
		q           store.LatestQuery
	}{
		{"grid page", "assignments_latest", store.LatestQuery{Migration: "m", Limit: 400}},
		{"grid page 10", "assignments_latest", store.LatestQuery{Migration: "m", Limit: 400, Offset: 3600}},
		{"grid page of a state", "assignments_latest", store.LatestQuery{Migration: "m", State: "failed", Limit: 400}},
		{"next batch", "assignments_latest", store.LatestQuery{Migration: "m", Batch: &batch}},
		{"failed", "assignments_latest_failed", store.LatestQuery{Migration: "m", Failed: true}},
	} {
		text, args, err := sqlstore.LatestQuery(c.q)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct {
			name, index string
			text        string
			args        []any
		}{c.name, c.index, text, args})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assertWalks(t, s.DB(), c.name, c.index, c.text, c.args)
		})
	}
}

// assertWalks fails unless SQLite's plan of text walks index (the whole index name, not one it
// begins) without a temporary B-tree (a sort).
func assertWalks(t *testing.T, db *sql.DB, name, index, text string, args []any) {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+text, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	got := strings.Join(plan, "; ")
	if walks := strings.Contains(got+";", "INDEX "+index+";") || strings.Contains(got, "INDEX "+index+" "); !walks || strings.Contains(got, "TEMP B-TREE") {
		t.Fatalf("plan of %s\n  %s\nis %q; want a walk of %s without a sort", name, text, got, index)
	}
}
