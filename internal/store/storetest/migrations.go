package storetest

import (
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
)

func migrationRecord(name string) store.Migration {
	return store.Migration{Name: name, Spec: "kind: Migration\n", SpecHash: "h1", State: "pending", Batches: 2,
		CurrentBatch: -1, CreatedAt: base, UpdatedAt: base}
}

func assignment(m, agent string, attempt, batch int) store.Assignment {
	return store.Assignment{Migration: m, AgentID: agent, Attempt: attempt, Batch: batch, State: "pending", Action: "apply",
		CreatedAt: base, UpdatedAt: base}
}

func runMigrations(t *testing.T, setup func(t *testing.T) store.Store) {
	t.Run("Migrations", func(t *testing.T) {
		t.Run("CreateGetList", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			as := []store.Assignment{assignment("m1", "a1", 1, 0), assignment("m1", "a2", 1, 1)}
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
			if err := s.CreateMigration(ctx, migrationRecord("m1"), []store.Assignment{assignment("m1", "a1", 1, 0)}); err != nil {
				t.Fatal(err)
			}
			m, _ := s.GetMigration(ctx, "m1")
			m.State, m.CurrentBatch = "running", 0
			a := assignment("m1", "a1", 1, 0)
			code := 3
			a.State, a.Error, a.ExitCode, a.Generation, a.DispatchedAt = "failed", "disk full", &code, 1, base.Add(time.Minute)
			retry := assignment("m1", "a1", 2, 0)
			retry.PreviousAttempt = 1
			if err := s.SaveMigration(ctx, store.Fence{}, m, []store.Assignment{a, retry}); err != nil {
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
			err = s.SaveMigration(ctx, store.Fence{Name: "controller", Epoch: old}, m, []store.Assignment{assignment("m1", "a1", 1, 0)})
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
