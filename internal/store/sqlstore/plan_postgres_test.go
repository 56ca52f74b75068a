package sqlstore_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/pgtest"
	"godwit.dev/godwit/internal/store/postgres"
	"godwit.dev/godwit/internal/store/sqlstore"
	"godwit.dev/godwit/internal/wire"
)

// On PostgreSQL, after ANALYZE, a migration page's reads of a migration that fails across the
// fleet (all of its events errors) walk a partial index of warnings and errors newest first and
// stop after the page: no sort of every error of the migration. Before its (migration, severity)
// statistics and the spelling of an errors-only filter as a lower bound, the planner expected a
// few dozen such errors where there were a thousand, and fetched and sorted all of them.
//
// The plan is the planner's choice from statistics of a sample, so the fixture makes it a clear
// one: 40,000 events, of which the failing migration's thousand errors are the newest.
func TestPostgresMigrationEventsWalkAnIndex(t *testing.T) {
	s, err := postgres.Open(t.Context(), pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	types := []string{wire.EventDetectionSucceeded, wire.EventExecutionSucceeded, wire.EventVerificationSucceeded, wire.EventAgentStarted}
	var batch []store.StoredEvent
	for range 40000 {
		agent := fmt.Sprintf("0190f0c8-3b7a-7cc0-8000-%012d", rng.IntN(2000))
		data := wire.EventData{AgentID: agent, Migration: fmt.Sprintf("m-%03d", rng.IntN(50))}
		typ, sev := types[rng.IntN(len(types))], wire.SeverityInfo
		at := now.Add(-time.Duration(rng.Int64N(int64(30 * 24 * time.Hour))))
		switch r := rng.IntN(40); {
		case r == 0:
			data.Migration, typ, sev = "fleet", wire.EventExecutionFailed, wire.SeverityError
			at = now.Add(-time.Duration(rng.Int64N(int64(6 * time.Hour))))
		case r < 2:
			typ, sev = wire.EventExecutionFailed, wire.SeverityError
		case r < 5:
			typ, sev = wire.EventAssignmentReconciled, wire.SeverityWarning
		}
		e := wire.NewEvent(wire.AgentSource(agent), typ, sev, data)
		e.Time = at
		batch = append(batch, store.StoredEvent{Event: e, ReceivedAt: at})
		if len(batch) == 5000 {
			if _, err := s.InsertEvents(t.Context(), batch, nil); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if _, err := s.DB().ExecContext(t.Context(), "VACUUM (ANALYZE) events"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		q    store.EventQuery
	}{
		// The migration page's newest failure events, read for their output (ui.failureEvents).
		{"failure events", store.EventQuery{Migration: "fleet", Severities: []string{wire.SeverityError}, Types: []string{"migration.*"}, Limit: 200}},
		{"errors", store.EventQuery{Migration: "fleet", Severities: []string{wire.SeverityError}, Limit: 200}},
		// Its newest warnings and errors.
		{"warnings and errors", store.EventQuery{Migration: "fleet", Severities: []string{wire.SeverityError, wire.SeverityWarning}, Limit: 10}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text, args, err := sqlstore.EventQuery(c.q)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := s.DB().QueryContext(t.Context(), "EXPLAIN "+text, args...)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "->")))
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			walks, sorts := false, false
			for _, l := range plan {
				walks = walks || strings.HasPrefix(l, "Index Scan Backward using events_problems_migration")
				// An incremental sort orders rows of one time by seq as the walk yields them.
				sorts = sorts || strings.HasPrefix(l, "Sort ") || strings.HasPrefix(l, "Bitmap")
			}
			if !walks || sorts {
				t.Fatalf("plan of %s\n  %s\nis\n  %s\nwant a walk of a partial index of the migration's problems, newest first, without a sort", c.name, text, strings.Join(plan, "\n  "))
			}
		})
	}
}
