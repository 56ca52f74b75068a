package storetest

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

func runFleet(t *testing.T, setup func(t *testing.T) store.Store) {
	t.Run("Fleet", func(t *testing.T) {
		t.Run("AgentStatesLabels", func(t *testing.T) {
			// Agents with the same labels, others and none: each agent reads its own, in every
			// order the rows come in.
			s := setup(t)
			ctx := t.Context()
			createToken(t, s, "tok", "secret", 100, base.Add(time.Hour))
			labels := []map[string]string{{"site": "ams", "role": "web"}, {"site": "fra"}, {"site": "ams", "role": "web"}, nil, {"role": "web", "site": "ams"}}
			var ids []string
			for i, l := range labels {
				a := agent(fmt.Sprintf("l%d", i), fmt.Sprintf("node-%d", i))
				a.Labels = l
				if err := s.Enroll(ctx, "secret", base, a, "cred"); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, a.ID)
			}
			for _, q := range [][]string{nil, {"l4", "l1", "l0"}} {
				got, err := s.AgentStates(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range got {
					i := slices.Index(ids, a.ID)
					want := labels[i]
					if len(want) == 0 {
						want = nil
					}
					if len(a.Labels) == 0 {
						a.Labels = nil
					}
					if !reflect.DeepEqual(a.Labels, want) {
						t.Errorf("AgentStates(%v): %s has labels %v, want %v", q, a.ID, a.Labels, want)
					}
				}
			}
		})
		t.Run("AgentStatesAndRollbackFailures", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			createToken(t, s, "tok", "secret", 100, base.Add(time.Hour))
			for _, a := range []wire.Agent{agent("a2", "web-2"), agent("a1", "web-1"), agent("a3", "db-1")} {
				if err := s.Enroll(ctx, "secret", base, a, "cred"); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.UpdateLiveness(ctx, []store.Liveness{{AgentID: "a1", Status: wire.StatusOnline, LastSeen: base},
				{AgentID: "a2", Status: wire.StatusOffline, LastSeen: base}}); err != nil {
				t.Fatal(err)
			}
			if err := s.RevokeAgent(ctx, "a3", base); err != nil {
				t.Fatal(err)
			}
			all, err := s.AgentStates(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := []store.AgentState{{ID: "a3", Name: "db-1", Status: wire.StatusUnknown, Revoked: true, Labels: map[string]string{"site": "ams"}},
				{ID: "a1", Name: "web-1", Status: wire.StatusOnline, Labels: map[string]string{"site": "ams"}},
				{ID: "a2", Name: "web-2", Status: wire.StatusOffline, Labels: map[string]string{"site": "ams"}}}
			if !reflect.DeepEqual(all, want) {
				t.Fatalf("AgentStates(nil) = %+v\nwant %+v", all, want)
			}
			some, err := s.AgentStates(ctx, []string{"a2", "nope", "a1"})
			if err != nil || !reflect.DeepEqual(some, want[1:]) {
				t.Fatalf("AgentStates(a2, nope, a1) = %+v, %v", some, err)
			}

			// m1: a1's rollback failed on its latest attempt; a2's rollback failed on attempt 1
			// but attempt 2 follows. m2: a2's rollback failed.
			as := []wire.Assignment{assignment("m1", "a1", 1, 0), assignment("m1", "a2", 1, 0), assignment("m1", "a2", 2, 0)}
			as[0].State, as[1].State, as[2].State = "rollback_failed", "rollback_failed", "pending"
			if err := s.CreateMigration(ctx, migrationRecord("m1"), as); err != nil {
				t.Fatal(err)
			}
			bs := []wire.Assignment{assignment("m2", "a2", 1, 0), assignment("m2", "a1", 1, 0)}
			bs[0].State, bs[1].State = "rollback_failed", "rolled_back"
			if err := s.CreateMigration(ctx, migrationRecord("m2"), bs); err != nil {
				t.Fatal(err)
			}
			got, err := s.RollbackFailures(ctx, nil)
			if err != nil || !reflect.DeepEqual(got, map[string][]string{"a1": {"m1"}, "a2": {"m2"}}) {
				t.Fatalf("RollbackFailures(nil) = %v, %v", got, err)
			}
			got, err = s.RollbackFailures(ctx, []string{"a2", "a3"})
			if err != nil || !reflect.DeepEqual(got, map[string][]string{"a2": {"m2"}}) {
				t.Fatalf("RollbackFailures(a2, a3) = %v, %v", got, err)
			}
		})

		t.Run("ProblemCounts", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			evs := []store.StoredEvent{
				event("a1", "m1", wire.EventExecutionFailed, wire.SeverityError, 1*time.Minute),
				event("a2", "m1", wire.EventExecutionFailed, wire.SeverityError, 2*time.Minute),
				event("a1", "m2", wire.EventAssignmentReconciled, wire.SeverityWarning, 2*time.Minute),
				event("a1", "m1", wire.EventRollbackFailed, wire.SeverityError, 59*time.Minute),
				event("a1", "m1", wire.EventExecutionSucceeded, wire.SeverityInfo, 3*time.Minute), // info: not counted
				event("a1", "m1", wire.EventExecutionFailed, wire.SeverityError, 61*time.Minute),  // after until
				event("a1", "m1", wire.EventExecutionFailed, wire.SeverityError, -time.Minute),    // before since
			}
			if _, err := s.InsertEvents(ctx, evs, nil); err != nil {
				t.Fatal(err)
			}
			q := store.ProblemQuery{Since: base, Until: base.Add(time.Hour), Buckets: 4}
			got, err := s.ProblemCounts(ctx, q)
			want := []store.ProblemCount{
				{Bucket: 0, Type: wire.EventAssignmentReconciled, Severity: wire.SeverityWarning, Count: 1},
				{Bucket: 0, Type: wire.EventExecutionFailed, Severity: wire.SeverityError, Count: 2},
				{Bucket: 3, Type: wire.EventRollbackFailed, Severity: wire.SeverityError, Count: 1},
			}
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("ProblemCounts = %+v, %v\nwant %+v", got, err, want)
			}
			q.Migration = "m2"
			got, err = s.ProblemCounts(ctx, q)
			if err != nil || !reflect.DeepEqual(got, want[:1]) {
				t.Fatalf("ProblemCounts of m2 = %+v, %v", got, err)
			}
			q.Buckets = 0
			if _, err := s.ProblemCounts(ctx, q); !errorsIsInvalid(err) {
				t.Fatalf("ProblemCounts with 0 buckets: %v", err)
			}

			// The hub's own events of a migration (no agent), apart from the agents'.
			hub := event("", "m1", wire.EventMigrationStateChanged, wire.SeverityWarning, 5*time.Minute)
			if _, err := s.InsertEvents(ctx, []store.StoredEvent{hub}, nil); err != nil {
				t.Fatal(err)
			}
			page, _, err := s.QueryEvents(ctx, store.EventQuery{Migration: "m1", HubOnly: true, Limit: 10})
			if err != nil || len(page) != 1 || page[0].ID != hub.ID {
				t.Fatalf("QueryEvents HubOnly = %d events, %v; want the hub's one", len(page), err)
			}
		})
	})
}
