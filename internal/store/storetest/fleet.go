package storetest

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
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

		t.Run("LatestAttemptsAgreeWithEveryAttempt", func(t *testing.T) {
			// The reads of latest attempts (counts, grid pages, failed agents, a batch's agents not
			// online, rollback failures) come from a column the store keeps as it writes attempts;
			// after every round of writes (new attempts, retries, an earlier attempt written after a
			// later one, updates of attempts already superseded) they equal what every attempt,
			// listed and reduced to the latest per agent, says.
			s := setup(t)
			ctx := t.Context()
			createToken(t, s, "tok", "secret", 100, base.Add(time.Hour))
			const agents = 30
			var ids []string
			var live []store.Liveness
			for i := range agents {
				a := agent(fmt.Sprintf("x%02d", (i*7)%agents), fmt.Sprintf("node-%02d", i))
				if err := s.Enroll(ctx, "secret", base, a, "cred"); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, a.ID)
				live = append(live, store.Liveness{AgentID: a.ID, LastSeen: base, Status: []string{wire.StatusOnline, wire.StatusOffline, wire.StatusUnknown, wire.StatusOnline}[i%4]})
			}
			if err := s.UpdateLiveness(ctx, live); err != nil {
				t.Fatal(err)
			}
			for _, id := range ids[:3] {
				if err := s.RevokeAgent(ctx, id, base); err != nil {
					t.Fatal(err)
				}
			}
			rng := rand.New(rand.NewPCG(7, 15))
			states := []string{"pending", "applying", "succeeded", "failed", "timed_out", "rolled_back", "rollback_failed", "cancelled"}
			migrations := []string{"lx", "ly"}
			for _, name := range migrations {
				var as []wire.Assignment
				for i, id := range ids {
					if name == "ly" && i%3 == 0 {
						continue // ly matched fewer agents
					}
					as = append(as, assignment(name, id, 1, i%3))
				}
				if err := s.CreateMigration(ctx, migrationRecord(name), as); err != nil {
					t.Fatal(err)
				}
			}
			save := func(name string, as []wire.Assignment) {
				t.Helper()
				m, err := s.GetMigration(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.SaveMigration(ctx, store.Fence{}, m, as); err != nil {
					t.Fatal(err)
				}
			}
			check := func(round int) {
				t.Helper()
				allStates, err := s.AgentStates(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				byID := map[string]store.AgentState{}
				wantByStatus := map[string]int{wire.StatusOnline: 0, wire.StatusOffline: 0, wire.StatusUnknown: 0, store.AgentRevoked: 0}
				for _, a := range allStates {
					a.Labels = nil
					byID[a.ID] = a
					if a.Revoked {
						wantByStatus[store.AgentRevoked]++
					} else {
						wantByStatus[a.Status]++
					}
				}
				if got, err := s.CountAgentsByStatus(ctx); err != nil || !reflect.DeepEqual(got, wantByStatus) {
					t.Fatalf("round %d: CountAgentsByStatus = %v, %v; want %v", round, got, err, wantByStatus)
				}
				wantBroken := map[string][]string{}
				for _, name := range migrations {
					every, err := s.ListAssignments(ctx, name)
					if err != nil {
						t.Fatal(err)
					}
					top := map[string]wire.Assignment{}
					for _, a := range every {
						if b, ok := top[a.AgentID]; !ok || a.Attempt > b.Attempt {
							top[a.AgentID] = a
						}
					}
					var latest []wire.Assignment
					for _, a := range top {
						latest = append(latest, a)
					}
					slices.SortFunc(latest, func(a, b wire.Assignment) int {
						if a.Batch != b.Batch {
							return a.Batch - b.Batch
						}
						return strings.Compare(a.AgentID, b.AgentID)
					})
					failed := func(a wire.Assignment) bool {
						return a.State == "failed" || a.State == "timed_out" || a.State == "rollback_failed" || a.Failure != ""
					}
					filter := func(keep func(wire.Assignment) bool) []wire.Assignment {
						var out []wire.Assignment
						for _, a := range latest {
							if keep(a) {
								out = append(out, a)
							}
						}
						return out
					}
					counts := map[store.AssignmentCount]int{}
					for _, a := range latest {
						counts[store.AssignmentCount{Batch: a.Batch, State: a.State, Failed: a.Failure != ""}]++
						if a.State == "rollback_failed" {
							wantBroken[a.AgentID] = append(wantBroken[a.AgentID], name)
						}
					}
					var wantCounts []store.AssignmentCount
					for c, n := range counts {
						c.N = n
						wantCounts = append(wantCounts, c)
					}
					gotCounts, err := s.CountLatestAssignments(ctx, name)
					if err != nil {
						t.Fatal(err)
					}
					sortCounts := func(cs []store.AssignmentCount) {
						slices.SortFunc(cs, func(a, b store.AssignmentCount) int {
							return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
						})
					}
					sortCounts(wantCounts)
					sortCounts(gotCounts)
					if !reflect.DeepEqual(gotCounts, wantCounts) {
						t.Fatalf("round %d: CountLatestAssignments(%s) = %v\nwant %v", round, name, gotCounts, wantCounts)
					}
					queries := []struct {
						q    store.LatestQuery
						want []wire.Assignment
					}{
						{store.LatestQuery{}, latest},
						{store.LatestQuery{Failed: true}, filter(failed)},
						{store.LatestQuery{Limit: 7, Offset: 7}, latest[min(7, len(latest)):min(14, len(latest))]},
					}
					for _, st := range states {
						queries = append(queries, struct {
							q    store.LatestQuery
							want []wire.Assignment
						}{store.LatestQuery{State: st}, filter(func(a wire.Assignment) bool { return a.State == st })})
					}
					for b := range 3 {
						queries = append(queries, struct {
							q    store.LatestQuery
							want []wire.Assignment
						}{store.LatestQuery{Batch: &b}, filter(func(a wire.Assignment) bool { return a.Batch == b })})

						// The agents of batch b not online: those whose attempt failed first.
						var want []store.AgentState
						for _, first := range []bool{true, false} {
							for _, a := range filter(func(a wire.Assignment) bool { return a.Batch == b && failed(a) == first }) {
								if st, ok := byID[a.AgentID]; ok && (st.Revoked || st.Status != wire.StatusOnline) {
									want = append(want, st)
								}
							}
						}
						got, err := s.NotOnlineInBatch(ctx, name, b)
						if err != nil || !reflect.DeepEqual(got, want) {
							t.Fatalf("round %d: NotOnlineInBatch(%s, %d) = %+v, %v\nwant %+v", round, name, b, got, err, want)
						}
					}
					for _, c := range queries {
						c.q.Migration = name
						got, err := s.LatestAssignments(ctx, c.q)
						if err != nil {
							t.Fatal(err)
						}
						if len(got) != len(c.want) || (len(got) > 0 && !reflect.DeepEqual(got, c.want)) {
							t.Fatalf("round %d: LatestAssignments(%+v) = %v\nwant %v", round, c.q, got, c.want)
						}
					}
				}
				if got, err := s.RollbackFailures(ctx, nil); err != nil || !reflect.DeepEqual(got, wantBroken) {
					t.Fatalf("round %d: RollbackFailures(nil) = %v, %v; want %v", round, got, err, wantBroken)
				}
			}
			check(0)
			attempts := map[[2]string]int{}
			for round := 1; round <= 6; round++ {
				for _, name := range migrations {
					every, err := s.ListAssignments(ctx, name)
					if err != nil {
						t.Fatal(err)
					}
					var changed []wire.Assignment
					for _, a := range every {
						k := [2]string{name, a.AgentID}
						attempts[k] = max(attempts[k], a.Attempt)
						switch r := rng.IntN(10); {
						case r < 4: // a new state, sometimes keeping a failure
							a.State = states[rng.IntN(len(states))]
							if a.State == "rolled_back" && rng.IntN(2) == 0 || a.State == "failed" || a.State == "rollback_failed" {
								a.Failure = fmt.Sprintf("exit %d", rng.IntN(3))
							}
							changed = append(changed, a)
						case r < 6 && a.Attempt == attempts[k]: // a retry of the latest attempt
							next := assignment(name, a.AgentID, a.Attempt+1, a.Batch)
							next.PreviousAttempt = a.Attempt
							attempts[k] = next.Attempt
							if rng.IntN(3) == 0 {
								// A later attempt written before this one: the next one is stored
								// first, this one after it, in the same write.
								later := assignment(name, a.AgentID, a.Attempt+2, a.Batch)
								later.State = states[rng.IntN(len(states))]
								attempts[k] = later.Attempt
								changed = append(changed, later)
							}
							changed = append(changed, next)
						}
					}
					save(name, changed)
				}
				// Liveness moves too.
				for i := range live {
					if rng.IntN(4) == 0 {
						live[i].Status = []string{wire.StatusOnline, wire.StatusOffline, wire.StatusUnknown}[rng.IntN(3)]
					}
				}
				if err := s.UpdateLiveness(ctx, live); err != nil {
					t.Fatal(err)
				}
				check(round)
			}
			// An earlier attempt stored in a later write than the attempt after it.
			save("lx", []wire.Assignment{assignment("lx", ids[5], 40, 1)})
			save("lx", []wire.Assignment{assignment("lx", ids[5], 39, 1)})
			check(7)
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
