package storetest

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

func migrationRecord(name string) wire.Migration {
	return wire.Migration{Name: name, Spec: "kind: Migration\n", SpecHash: "h1", State: "pending", Batches: 2,
		CurrentBatch: -1, CreatedAt: base, UpdatedAt: base}
}

func assignment(m, agent string, attempt, batch int) wire.Assignment {
	return wire.Assignment{Migration: m, AgentID: agent, Attempt: attempt, Batch: batch, State: "pending", Action: "apply",
		CreatedAt: base, UpdatedAt: base}
}

func runMigrations(t *testing.T, setup func(t *testing.T) store.Store) {
	t.Run("Migrations", func(t *testing.T) {
		t.Run("CreateGetList", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			as := []wire.Assignment{assignment("m1", "a1", 1, 0), assignment("m1", "a2", 1, 1)}
			if err := s.CreateMigration(ctx, migrationRecord("m1"), as); err != nil {
				t.Fatal(err)
			}
			err := s.CreateMigration(ctx, migrationRecord("m1"), nil)
			requireIs(t, err, fault.ErrConflict, "second CreateMigration")
			m, err := s.GetMigration(ctx, "m1")
			if err != nil || m.State != "pending" || m.Version != 1 || m.Batches != 2 || m.CurrentBatch != -1 || !m.CreatedAt.Equal(stored(base)) {
				t.Fatalf("GetMigration = %+v, %v", m, err)
			}
			_, err = s.GetMigration(ctx, "nope")
			requireIs(t, err, fault.ErrNotFound, "GetMigration unknown")
			got, err := s.ListAssignments(ctx, "m1")
			if err != nil || len(got) != 2 || got[0].AgentID != "a1" || got[1].Batch != 1 || got[0].ExitCode != nil {
				t.Fatalf("ListAssignments = %+v, %v", got, err)
			}
			ms, err := s.ListMigrations(ctx)
			if err != nil || len(ms) != 1 {
				t.Fatalf("ListMigrations = %+v, %v", ms, err)
			}
		})

		t.Run("SaveIsVersioned", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			if err := s.CreateMigration(ctx, migrationRecord("m1"), []wire.Assignment{assignment("m1", "a1", 1, 0)}); err != nil {
				t.Fatal(err)
			}
			m, _ := s.GetMigration(ctx, "m1")
			m.State, m.CurrentBatch = "running", 0
			a := assignment("m1", "a1", 1, 0)
			code := 3
			a.State, a.Error, a.ExitCode, a.Generation, a.DispatchedAt = "failed", "disk full", &code, 1, base.Add(time.Minute)
			retry := assignment("m1", "a1", 2, 0)
			retry.PreviousAttempt = 1
			if err := s.SaveMigration(ctx, store.Fence{}, m, []wire.Assignment{a, retry}); err != nil {
				t.Fatal(err)
			}
			// A writer still holding version 1 loses.
			m.State = "paused"
			err := s.SaveMigration(ctx, store.Fence{}, m, nil)
			requireIs(t, err, fault.ErrConflict, "stale SaveMigration")
			now, _ := s.GetMigration(ctx, "m1")
			if now.State != "running" || now.Version != 2 {
				t.Fatalf("after stale save: %+v", now)
			}
			got, _ := s.ListAssignments(ctx, "m1")
			if len(got) != 2 || got[0].State != "failed" || got[0].ExitCode == nil || *got[0].ExitCode != 3 || got[1].PreviousAttempt != 1 ||
				!got[0].DispatchedAt.Equal(stored(base.Add(time.Minute))) {
				t.Fatalf("assignments after save: %+v", got)
			}
			unknown := migrationRecord("ghost")
			unknown.Version = 1
			requireIs(t, s.SaveMigration(ctx, store.Fence{}, unknown, nil), fault.ErrNotFound, "SaveMigration of unknown")
		})

		t.Run("SaveWritesEveryColumn", func(t *testing.T) {
			// A save upserts its rows one after the other: each column of a stored row takes the
			// new value (but created_at), whether an index holds it or not, an agent's second row
			// in one save is written after its first, and a row not stored is inserted.
			s := setup(t)
			ctx := t.Context()
			var as []wire.Assignment
			for i := range 6 {
				as = append(as, assignment("m1", fmt.Sprintf("a%d", i), 1, i%2))
			}
			if err := s.CreateMigration(ctx, migrationRecord("m1"), as); err != nil {
				t.Fatal(err)
			}
			want := map[[2]any]wire.Assignment{}
			for _, a := range as {
				want[[2]any{a.AgentID, a.Attempt}] = a
			}
			later := base.Add(time.Hour)
			code, zero := 7, 0
			everything := func(a wire.Assignment) wire.Assignment {
				a.Batch, a.State, a.Generation, a.AckedGeneration, a.Action = 1-a.Batch, "failed", 4, 3, "cancel"
				a.Step, a.StepName, a.Error, a.Failure, a.FailedStep, a.ExitCode = 2, "two", "boom", "exit 7", "two", &code
				a.PreviousAttempt, a.Applied, a.ActiveMS = 1, 2, 1234
				a.DispatchedAt, a.UnreachableSince, a.UpdatedAt, a.FinishedAt = later, later.Add(time.Second), later, later.Add(time.Minute)
				return a
			}
			dispatch := func(a wire.Assignment) wire.Assignment {
				a.Generation, a.DispatchedAt, a.UpdatedAt = a.Generation+1, later, later
				return a
			}
			var changed []wire.Assignment
			add := func(a wire.Assignment) {
				changed = append(changed, a)
				k := [2]any{a.AgentID, a.Attempt}
				if w, ok := want[k]; ok {
					a.CreatedAt = w.CreatedAt // kept from the insert
				}
				want[k] = a
			}
			add(everything(as[0]))
			add(dispatch(as[1]))
			failed := everything(as[2])
			add(failed)
			back := dispatch(failed) // then back to no failure and no exit code, in the same save
			back.State, back.Failure, back.ExitCode, back.Batch = "applying", "", nil, as[2].Batch
			add(back)
			exited := dispatch(as[3])
			exited.ExitCode = &zero
			add(exited)
			retry := assignment("m1", "a4", 2, 0)
			retry.PreviousAttempt, retry.CreatedAt = 1, later
			add(retry)
			m, _ := s.GetMigration(ctx, "m1")
			if err := s.SaveMigration(ctx, store.Fence{}, m, changed); err != nil {
				t.Fatal(err)
			}
			got, err := s.ListAssignments(ctx, "m1")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d assignments after save, want %d: %+v", len(got), len(want), got)
			}
			counts := map[store.AssignmentCount]int{}
			for _, g := range got {
				w := want[[2]any{g.AgentID, g.Attempt}]
				for _, t := range []*time.Time{&w.DispatchedAt, &w.UnreachableSince, &w.CreatedAt, &w.UpdatedAt, &w.FinishedAt} {
					if !t.IsZero() {
						*t = stored(*t)
					}
				}
				if !reflect.DeepEqual(g, w) {
					t.Errorf("after save: %+v\nwant %+v", g, w)
				}
				if g.AgentID != "a4" || g.Attempt == 2 {
					counts[store.AssignmentCount{Batch: g.Batch, State: g.State, Failed: g.Failure != ""}]++
				}
			}
			// The latest attempts' indexes hold the new batch, state and failure.
			cs, err := s.CountLatestAssignments(ctx, "m1")
			if err != nil {
				t.Fatal(err)
			}
			gotCounts := map[store.AssignmentCount]int{}
			for _, c := range cs {
				n := c.N
				c.N = 0
				gotCounts[c] = n
			}
			if !reflect.DeepEqual(gotCounts, counts) {
				t.Fatalf("CountLatestAssignments = %v, want %v", gotCounts, counts)
			}
			failedOnes, err := s.LatestAssignments(ctx, store.LatestQuery{Migration: "m1", Failed: true})
			if err != nil || len(failedOnes) != 1 || failedOnes[0].AgentID != "a0" {
				t.Fatalf("failed latest attempts: %+v, %v", failedOnes, err)
			}
		})

		t.Run("TransitionFieldsRoundTrip", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			if err := s.CreateMigration(ctx, migrationRecord("m1"), []wire.Assignment{assignment("m1", "a1", 1, 0)}); err != nil {
				t.Fatal(err)
			}
			m, _ := s.GetMigration(ctx, "m1")
			a := assignment("m1", "a1", 1, 0)
			a.State, a.Generation, a.AckedGeneration, a.UnreachableSince = "agent_unreachable", 3, 2, base.Add(time.Hour)
			if err := s.SaveMigration(ctx, store.Fence{}, m, []wire.Assignment{a}); err != nil {
				t.Fatal(err)
			}
			got, _ := s.ListAssignments(ctx, "m1")
			if len(got) != 1 || got[0].AckedGeneration != 2 || !got[0].UnreachableSince.Equal(stored(base.Add(time.Hour))) {
				t.Fatalf("after save: %+v", got)
			}
			// Back to zero: reachable again.
			m.Version++
			a.State, a.AckedGeneration, a.UnreachableSince = "applying", 3, time.Time{}
			if err := s.SaveMigration(ctx, store.Fence{}, m, []wire.Assignment{a}); err != nil {
				t.Fatal(err)
			}
			got, _ = s.ListAssignments(ctx, "m1")
			if len(got) != 1 || got[0].AckedGeneration != 3 || !got[0].UnreachableSince.IsZero() {
				t.Fatalf("after the second save: %+v", got)
			}
		})

		t.Run("DeleteKeepsTheNameAndTheEvents", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			as := []wire.Assignment{assignment("m1", "a1", 1, 0), assignment("m1", "a2", 1, 1)}
			if err := s.CreateMigration(ctx, migrationRecord("m1"), as); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateMigration(ctx, migrationRecord("m2"), []wire.Assignment{assignment("m2", "a1", 1, 0)}); err != nil {
				t.Fatal(err)
			}
			ev := event("a1", "m1", wire.EventExecutionSucceeded, wire.SeverityInfo, 0)
			if _, err := s.InsertEvents(ctx, []store.StoredEvent{ev}, nil); err != nil {
				t.Fatal(err)
			}
			m, _ := s.GetMigration(ctx, "m1")
			// A writer holding an older version loses, and nothing is deleted.
			requireIs(t, s.DeleteMigration(ctx, "m1", m.Version+1, base), fault.ErrConflict, "DeleteMigration of a stale version")
			if _, err := s.GetMigration(ctx, "m1"); err != nil {
				t.Fatalf("a refused delete deleted: %v", err)
			}
			requireIs(t, s.DeleteMigration(ctx, "nope", 1, base), fault.ErrNotFound, "DeleteMigration of an unknown name")
			if err := s.DeleteMigration(ctx, "m1", m.Version, base.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			_, err := s.GetMigration(ctx, "m1")
			requireIs(t, err, fault.ErrNotFound, "GetMigration after delete")
			if got, err := s.ListAssignments(ctx, "m1"); err != nil || len(got) != 0 {
				t.Fatalf("assignments after delete: %+v, %v", got, err)
			}
			if ms, err := s.ListMigrations(ctx); err != nil || len(ms) != 1 || ms[0].Name != "m2" {
				t.Fatalf("ListMigrations after delete: %+v, %v", ms, err)
			}
			if got, err := s.ListAssignments(ctx, "m2"); err != nil || len(got) != 1 {
				t.Fatalf("another migration's assignments after delete: %+v, %v", got, err)
			}
			// Its events are history: they stay.
			page, _, err := s.QueryEvents(ctx, store.EventQuery{Migration: "m1", Limit: 10})
			if err != nil || len(page) != 1 || page[0].ID != ev.ID {
				t.Fatalf("events of the deleted migration: %+v, %v", page, err)
			}
			// The name is never used again: agents keep results under it.
			err = s.CreateMigration(ctx, migrationRecord("m1"), nil)
			requireIs(t, err, fault.ErrConflict, "CreateMigration with a deleted name")
			if err == nil || !strings.Contains(err.Error(), "deleted at") {
				t.Fatalf("CreateMigration with a deleted name: %v, want it to say when it was deleted", err)
			}
			requireIs(t, s.DeleteMigration(ctx, "m1", m.Version, base), fault.ErrNotFound, "second DeleteMigration")
		})

		t.Run("AdoptEpoch", func(t *testing.T) {
			// The lease hands out epochs; the store keeps the newest and fences older writers.
			s := setup(t)
			ctx := t.Context()
			if err := s.AdoptEpoch(ctx, "controller", "hub-a", 7, base); err != nil {
				t.Fatal(err)
			}
			old := store.Fence{Name: "controller", Epoch: 7}
			if err := s.TouchEpoch(ctx, old, base); err != nil {
				t.Fatalf("TouchEpoch under the adopted epoch: %v", err)
			}
			// Adopting the same epoch again (a second worker of the same term) is allowed.
			if err := s.AdoptEpoch(ctx, "controller", "hub-a", 7, base); err != nil {
				t.Fatalf("adopting the current epoch again: %v", err)
			}
			if err := s.AdoptEpoch(ctx, "controller", "hub-b", 12, base); err != nil {
				t.Fatal(err)
			}
			requireIs(t, s.TouchEpoch(ctx, old, base), fault.ErrFenced, "TouchEpoch under the older epoch")
			requireIs(t, s.AdoptEpoch(ctx, "controller", "hub-a", 7, base), fault.ErrFenced, "adopting an older epoch")
			if holder, epoch, _, err := s.Leader(ctx, "controller"); err != nil || holder != "hub-b" || epoch != 12 {
				t.Fatalf("Leader = %s, %d, %v; want hub-b at 12", holder, epoch, err)
			}
			requireIs(t, s.AdoptEpoch(ctx, "controller", "hub-a", 0, base), fault.ErrInvalid, "adopting epoch 0")
			// A new NATS cluster counts epochs afresh: adopting it drops the stored epochs.
			if err := s.AdoptNATS(ctx, "nats-2", base); err != nil {
				t.Fatal(err)
			}
			if err := s.AdoptEpoch(ctx, "controller", "hub-c", 1, base); err != nil {
				t.Fatalf("epoch 1 after AdoptNATS: %v", err)
			}
			if v, err := s.EnsureSetting(ctx, "nats_identity", "other", base); err != nil || v != "nats-2" {
				t.Fatalf("nats_identity = %q, %v; want nats-2", v, err)
			}
		})

		t.Run("Replicas", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			a := wire.HubReplica{ID: "hub-a", Address: "https://a:7750", NATS: "n1", Role: wire.RoleLeader, Epoch: 3,
				Since: base, StartedAt: base, LastSeen: base}
			b := wire.HubReplica{ID: "hub-b", Address: "https://b:7750", NATS: "n1", Role: wire.RoleFollower, Epoch: 3,
				Since: base, StartedAt: base, LastSeen: base}
			for _, r := range []wire.HubReplica{b, a} {
				if err := s.SaveReplica(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			a.Role, a.LastSeen = wire.RoleFollower, base.Add(time.Second)
			if err := s.SaveReplica(ctx, a); err != nil {
				t.Fatal(err)
			}
			rs, err := s.ListReplicas(ctx)
			if err != nil || len(rs) != 2 || rs[0].ID != "hub-a" || rs[0].Role != wire.RoleFollower ||
				!rs[0].LastSeen.Equal(stored(base.Add(time.Second))) || rs[1].Address != b.Address {
				t.Fatalf("ListReplicas = %+v, %v", rs, err)
			}
			if err := s.DeleteReplica(ctx, "hub-a"); err != nil {
				t.Fatal(err)
			}
			if rs, err := s.ListReplicas(ctx); err != nil || len(rs) != 1 || rs[0].ID != "hub-b" {
				t.Fatalf("after DeleteReplica = %+v, %v", rs, err)
			}
			requireIs(t, s.SaveReplica(ctx, wire.HubReplica{}), fault.ErrInvalid, "SaveReplica without an id")
		})

		t.Run("ReconcileFindings", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			epoch, err := s.AcquireEpoch(ctx, "controller", "hub-a", base)
			if err != nil {
				t.Fatal(err)
			}
			fence := store.Fence{Name: "controller", Epoch: epoch}
			f1 := wire.CheckFinding{Kind: wire.FindingNeverReceived, Migration: "m1", AgentID: "a1", Attempt: 1, Detail: "asked 31s ago", Fix: "resent"}
			f2 := wire.CheckFinding{Kind: wire.FindingUnknownWork, Migration: "ghost", AgentID: "a2", Attempt: 3, Detail: "applying", Fix: "reported"}
			opened, resolved, err := s.ReconcileFindings(ctx, fence, []wire.CheckFinding{f1, f2}, base)
			if err != nil || len(opened) != 2 || len(resolved) != 0 {
				t.Fatalf("first reconcile = %+v, %+v, %v; want both opened", opened, resolved, err)
			}
			// Found again, with another detail: the same finding, nothing new.
			f1again := f1
			f1again.Detail = "asked 1m31s ago"
			opened, resolved, err = s.ReconcileFindings(ctx, fence, []wire.CheckFinding{f1again, f2, f2}, base.Add(time.Minute))
			if err != nil || len(opened) != 0 || len(resolved) != 0 {
				t.Fatalf("same findings again = %+v, %+v, %v; want nothing new", opened, resolved, err)
			}
			// f1 is gone, another attempt of the same agent and migration is new.
			f3 := f1
			f3.Attempt = 2
			opened, resolved, err = s.ReconcileFindings(ctx, fence, []wire.CheckFinding{f2, f3}, base.Add(2*time.Minute))
			if err != nil || len(opened) != 1 || opened[0] != f3 || len(resolved) != 1 || resolved[0].CheckFinding != f1 ||
				!resolved[0].FirstSeen.Equal(stored(base)) {
				t.Fatalf("after f1 was resolved = %+v, %+v, %v", opened, resolved, err)
			}
			// A deposed leader changes nothing.
			if _, err := s.AcquireEpoch(ctx, "controller", "hub-b", base); err != nil {
				t.Fatal(err)
			}
			_, _, err = s.ReconcileFindings(ctx, fence, nil, base.Add(3*time.Minute))
			requireIs(t, err, fault.ErrFenced, "ReconcileFindings with an old epoch")
			_, resolved, err = s.ReconcileFindings(ctx, store.Fence{}, nil, base.Add(4*time.Minute))
			if err != nil || len(resolved) != 2 {
				t.Fatalf("after the fenced call = %+v, %v; want the two open findings still there to resolve", resolved, err)
			}
		})

		t.Run("FencedWritesOfADeposedLeaderFail", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			if err := s.CreateMigration(ctx, migrationRecord("m1"), nil); err != nil {
				t.Fatal(err)
			}
			old, err := s.AcquireEpoch(ctx, "controller", "hub-a", base)
			if err != nil {
				t.Fatal(err)
			}
			cur, err := s.AcquireEpoch(ctx, "controller", "hub-b", base)
			if err != nil || cur <= old {
				t.Fatalf("second epoch %d, %v; want > %d", cur, err, old)
			}
			m, _ := s.GetMigration(ctx, "m1")
			m.State = "running"
			err = s.SaveMigration(ctx, store.Fence{Name: "controller", Epoch: old}, m, []wire.Assignment{assignment("m1", "a1", 1, 0)})
			requireIs(t, err, fault.ErrFenced, "write with the old epoch")
			if got, _ := s.ListAssignments(ctx, "m1"); len(got) != 0 {
				t.Fatalf("fenced write left assignments %+v", got)
			}
			if err := s.SaveMigration(ctx, store.Fence{Name: "controller", Epoch: cur}, m, nil); err != nil {
				t.Fatalf("write with the current epoch: %v", err)
			}
		})

		t.Run("LeaderSeen", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			_, _, _, err := s.Leader(ctx, "controller")
			requireIs(t, err, fault.ErrNotFound, "Leader before anyone held it")
			e, err := s.AcquireEpoch(ctx, "controller", "hub-a", base)
			if err != nil {
				t.Fatal(err)
			}
			later := base.Add(4 * time.Hour)
			if err := s.TouchEpoch(ctx, store.Fence{Name: "controller", Epoch: e}, later); err != nil {
				t.Fatal(err)
			}
			holder, epoch, seen, err := s.Leader(ctx, "controller")
			if err != nil || holder != "hub-a" || epoch != e || !seen.Equal(stored(later)) {
				t.Fatalf("Leader = %q %d %v %v", holder, epoch, seen, err)
			}
			requireIs(t, s.TouchEpoch(ctx, store.Fence{Name: "controller", Epoch: e + 1}, later), fault.ErrFenced, "TouchEpoch with a wrong epoch")
		})

		t.Run("ConcurrentEpochsAreUnique", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			var mu sync.Mutex
			seen := map[int64]bool{}
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					e, err := s.AcquireEpoch(ctx, "controller", "h", base)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					defer mu.Unlock()
					if seen[e] {
						t.Errorf("epoch %d handed out twice", e)
					}
					seen[e] = true
				}()
			}
			wg.Wait()
			if len(seen) != 8 {
				t.Fatalf("%d epochs", len(seen))
			}
		})
	})
}
