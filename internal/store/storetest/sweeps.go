package storetest

import (
	"encoding/json"
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

func sweepRecord(name string) wire.Sweep {
	return wire.Sweep{Name: name, Spec: "kind: Sweep\n", SpecHash: "h1", NextFireAt: base.Add(15 * time.Minute), CreatedAt: base, UpdatedAt: base}
}

// sweepRun is a running run fired at base+offset.
func sweepRun(id, sweep string, offset time.Duration) wire.SweepRun {
	fired := base.Add(offset)
	return wire.SweepRun{ID: id, Sweep: sweep, Trigger: wire.TriggerAPI, TriggeredBy: "test", FiredAt: fired,
		Deadline: fired.Add(5 * time.Minute), MaxSeconds: 300, Status: wire.SweepRunRunning, Matched: 2,
		Context: json.RawMessage(`{"spec_hash":"h1"}`), UpdatedAt: fired}
}

func runAgent(run, agent, state string) wire.SweepRunAgent {
	return wire.SweepRunAgent{RunID: run, AgentID: agent, AgentName: "name-" + agent, State: state}
}

func runSweeps(t *testing.T, setup func(t *testing.T) store.Store) {
	t.Run("Sweeps", func(t *testing.T) {
		t.Run("CreateGetUpdateDelete", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			for _, n := range []string{"b-sweep", "a-sweep"} {
				if err := s.CreateSweep(ctx, sweepRecord(n)); err != nil {
					t.Fatalf("CreateSweep(%s): %v", n, err)
				}
			}
			requireIs(t, s.CreateSweep(ctx, sweepRecord("a-sweep")), fault.ErrConflict, "second CreateSweep")
			got, err := s.GetSweep(ctx, "a-sweep")
			if err != nil || got.Version != 1 || got.SpecHash != "h1" || !got.NextFireAt.Equal(stored(base.Add(15*time.Minute))) ||
				got.NextFireAt.Location() != time.UTC || !got.CreatedAt.Equal(stored(base)) {
				t.Fatalf("GetSweep = %+v, %v", got, err)
			}
			_, err = s.GetSweep(ctx, "nope")
			requireIs(t, err, fault.ErrNotFound, "GetSweep unknown")
			list, err := s.ListSweeps(ctx)
			if err != nil || len(list) != 2 || list[0].Name != "a-sweep" || list[1].Name != "b-sweep" {
				t.Fatalf("ListSweeps = %+v, %v", list, err)
			}

			// Without reschedule the stored next firing stays, whatever the caller carries.
			upd := got
			upd.Spec, upd.SpecHash, upd.NextFireAt, upd.UpdatedAt = "kind: Sweep # 2\n", "h2", base.Add(99*time.Hour), base.Add(time.Minute)
			if err := s.UpdateSweep(ctx, upd, false); err != nil {
				t.Fatalf("UpdateSweep: %v", err)
			}
			got, _ = s.GetSweep(ctx, "a-sweep")
			if got.Version != 2 || got.SpecHash != "h2" || !got.NextFireAt.Equal(stored(base.Add(15*time.Minute))) || !got.UpdatedAt.Equal(stored(base.Add(time.Minute))) {
				t.Fatalf("after UpdateSweep without reschedule: %+v", got)
			}
			// A writer still holding version 1 loses.
			requireIs(t, s.UpdateSweep(ctx, upd, true), fault.ErrConflict, "stale UpdateSweep")
			upd.Version = 2
			upd.NextFireAt = time.Time{} // no schedule any more
			if err := s.UpdateSweep(ctx, upd, true); err != nil {
				t.Fatalf("UpdateSweep with reschedule: %v", err)
			}
			if got, _ = s.GetSweep(ctx, "a-sweep"); got.Version != 3 || !got.NextFireAt.IsZero() {
				t.Fatalf("after UpdateSweep with reschedule: %+v", got)
			}
			ghost := sweepRecord("ghost")
			ghost.Version = 1
			requireIs(t, s.UpdateSweep(ctx, ghost, false), fault.ErrNotFound, "UpdateSweep unknown")

			if err := s.DeleteSweep(ctx, "a-sweep"); err != nil {
				t.Fatalf("DeleteSweep: %v", err)
			}
			requireIs(t, s.DeleteSweep(ctx, "a-sweep"), fault.ErrNotFound, "DeleteSweep twice")
			if list, _ := s.ListSweeps(ctx); len(list) != 1 || list[0].Name != "b-sweep" {
				t.Fatalf("ListSweeps after delete = %+v", list)
			}
		})

		t.Run("FiringIsClaimedOnce", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			sw := sweepRecord("nightly")
			if err := s.CreateSweep(ctx, sw); err != nil {
				t.Fatal(err)
			}
			fire := func(id string, f store.SweepFiring) (wire.SweepRun, error) {
				r := sweepRun(id, "nightly", 15*time.Minute)
				r.Trigger, r.ScheduledFor = wire.TriggerSchedule, f.From
				return s.StartRun(ctx, store.Fence{}, &f, r, nil)
			}
			claim := store.SweepFiring{Sweep: "nightly", SpecHash: "h1", From: sw.NextFireAt, Next: sw.NextFireAt.Add(15 * time.Minute)}
			// A claim made under another spec, or from another next firing, changes nothing.
			for _, bad := range []store.SweepFiring{
				{Sweep: "nightly", SpecHash: "old", From: claim.From, Next: claim.Next},
				{Sweep: "nightly", SpecHash: "h1", From: claim.From.Add(-time.Minute), Next: claim.Next},
				{Sweep: "ghost", SpecHash: "h1", From: claim.From, Next: claim.Next},
			} {
				_, err := fire("r-bad", bad)
				requireIs(t, err, fault.ErrConflict, fmt.Sprintf("claim %+v", bad))
			}
			if _, err := s.GetRun(ctx, "r-bad"); err == nil {
				t.Fatal("a refused claim stored its run")
			}
			run, err := fire("r-1", claim)
			if err != nil || run.Status != wire.SweepRunRunning || run.LockSkipped {
				t.Fatalf("first claim = %+v, %v", run, err)
			}
			if got, _ := s.GetSweep(ctx, "nightly"); !got.NextFireAt.Equal(stored(claim.Next)) {
				t.Fatalf("next firing after the claim = %v, want %v", got.NextFireAt, stored(claim.Next))
			}
			// A second hub that saw the same next firing loses, even though the lock is free again.
			done := run
			done.Status, done.ExitCode = wire.SweepRunCompleted, new(int)
			if err := s.SaveRun(ctx, store.Fence{}, done, nil); err != nil {
				t.Fatal(err)
			}
			_, err = fire("r-2", claim)
			requireIs(t, err, fault.ErrConflict, "second claim of the same firing")
			// The firing index backs that up: the same scheduled instant is recorded once.
			dup := sweepRun("r-3", "nightly", 15*time.Minute)
			dup.Trigger, dup.ScheduledFor = wire.TriggerSchedule, claim.From
			_, err = s.StartRun(ctx, store.Fence{}, nil, dup, nil)
			requireIs(t, err, fault.ErrConflict, "a second run for the same scheduled instant")
			if runs, _ := s.ListRuns(ctx, "nightly", 10); len(runs) != 1 {
				t.Fatalf("runs = %+v, want only r-1", runs)
			}
		})

		t.Run("LockAdmitsOneRun", func(t *testing.T) {
			// Triggers racing on one sweep: exactly one runs; every other one is recorded as
			// lock-skipped naming the run that held the lock. Another sweep is not affected.
			s := setup(t)
			ctx := t.Context()
			const n = 8
			got := make([]wire.SweepRun, n)
			errs := make([]error, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					<-start
					id := fmt.Sprintf("r-%d", i)
					got[i], errs[i] = s.StartRun(ctx, store.Fence{}, nil, sweepRun(id, "nightly", time.Duration(i)*time.Second),
						[]wire.SweepRunAgent{runAgent(id, "a1", wire.CheckPending), runAgent(id, "a2", wire.CheckPending)})
				})
			}
			close(start)
			wg.Wait()
			winner := ""
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("StartRun #%d: %v", i, errs[i])
				}
				r := got[i]
				switch r.Status {
				case wire.SweepRunRunning:
					if winner != "" {
						t.Fatalf("two runs hold the lock: %s and %s", winner, r.ID)
					}
					winner = r.ID
				case wire.SweepRunSkipped:
					if !r.LockSkipped || r.ExitCode == nil || *r.ExitCode != 0 || !r.FinishedAt.Equal(r.FiredAt) || r.Matched != 0 {
						t.Fatalf("skipped run = %+v", r)
					}
				default:
					t.Fatalf("run %s status %s", r.ID, r.Status)
				}
			}
			if winner == "" {
				t.Fatal("no run took the lock")
			}
			for _, r := range got {
				if r.LockSkipped && !strings.Contains(r.Error, winner) {
					t.Fatalf("skipped run %s says %q, want the lock holder %s", r.ID, r.Error, winner)
				}
				stored, err := s.GetRun(ctx, r.ID)
				if err != nil || stored.Status != r.Status || stored.LockSkipped != r.LockSkipped {
					t.Fatalf("GetRun(%s) = %+v, %v; StartRun returned %+v", r.ID, stored, err, r)
				}
				agents, err := s.ListRunAgents(ctx, r.ID)
				if err != nil || (r.ID == winner) != (len(agents) == 2) || (r.ID != winner && len(agents) != 0) {
					t.Fatalf("agents of %s = %+v, %v", r.ID, agents, err)
				}
			}
			running, err := s.RunningRuns(ctx)
			if err != nil || len(running) != 1 || running[0].ID != winner {
				t.Fatalf("RunningRuns = %+v, %v; want only %s", running, err, winner)
			}
			if other, err := s.StartRun(ctx, store.Fence{}, nil, sweepRun("other", "weekly", 0), nil); err != nil || other.Status != wire.SweepRunRunning {
				t.Fatalf("a run of another sweep = %+v, %v", other, err)
			}
			// Ending the run releases the lock.
			w, _ := s.GetRun(ctx, winner)
			w.Status, w.ExitCode = wire.SweepRunCompleted, new(int)
			if err := s.SaveRun(ctx, store.Fence{}, w, nil); err != nil {
				t.Fatal(err)
			}
			if next, err := s.StartRun(ctx, store.Fence{}, nil, sweepRun("next", "nightly", time.Hour), nil); err != nil || next.Status != wire.SweepRunRunning {
				t.Fatalf("a run after the lock was released = %+v, %v", next, err)
			}
		})

		t.Run("SaveRun", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			epoch, err := s.AcquireEpoch(ctx, "sweeps", "hub-1", base)
			if err != nil {
				t.Fatal(err)
			}
			fence := store.Fence{Name: "sweeps", Epoch: epoch}
			r, err := s.StartRun(ctx, fence, nil, sweepRun("r1", "nightly", 0),
				[]wire.SweepRunAgent{runAgent("r1", "a2", wire.CheckPending), runAgent("r1", "a1", wire.CheckPending)})
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := s.GetRun(ctx, "r1"); got.ExitCode != nil || len(got.DriftedAgents) != 0 || string(got.Context) != `{"spec_hash":"h1"}` {
				t.Fatalf("running run = %+v (want no exit code yet, the context kept)", got)
			}
			// Progress: one agent drifted, the other still running.
			code := 1
			a1 := runAgent("r1", "a1", wire.CheckDrifted)
			a1.ExitCode, a1.OutputTail, a1.DurationMS, a1.DispatchedAt, a1.FinishedAt = &code, "sha mismatch", 1500, base, base.Add(2*time.Second)
			a2 := runAgent("r1", "a2", wire.CheckRunning)
			a2.DispatchedAt = base
			r.Processed, r.Drifted, r.DriftedAgents, r.UpdatedAt = 1, 1, []wire.SweepAgentRef{{ID: "a1", Name: "name-a1"}}, base.Add(2*time.Second)
			if err := s.SaveRun(ctx, fence, r, []wire.SweepRunAgent{a1, a2}); err != nil {
				t.Fatalf("SaveRun: %v", err)
			}
			agents, err := s.ListRunAgents(ctx, "r1")
			if err != nil || len(agents) != 2 || agents[0].AgentID != "a1" || agents[0].ExitCode == nil || *agents[0].ExitCode != 1 ||
				agents[0].DurationMS != 1500 || !agents[0].FinishedAt.Equal(stored(base.Add(2*time.Second))) || agents[1].State != wire.CheckRunning ||
				agents[1].ExitCode != nil {
				t.Fatalf("ListRunAgents = %+v, %v", agents, err)
			}
			// A deposed leader's write is refused and changes nothing.
			if _, err := s.AcquireEpoch(ctx, "sweeps", "hub-2", base); err != nil {
				t.Fatal(err)
			}
			stale := r
			stale.Status, stale.ExitCode = wire.SweepRunFailed, &code
			requireIs(t, s.SaveRun(ctx, fence, stale, nil), fault.ErrFenced, "SaveRun with an old epoch")
			_, err = s.StartRun(ctx, fence, nil, sweepRun("r2", "weekly", 0), nil)
			requireIs(t, err, fault.ErrFenced, "StartRun with an old epoch")
			if got, _ := s.GetRun(ctx, "r1"); got.Status != wire.SweepRunRunning {
				t.Fatalf("fenced SaveRun changed the run: %+v", got)
			}
			fence.Epoch++
			zero := 0
			r.Status, r.ExitCode, r.FinishedAt, r.SkippedBudget = wire.SweepRunCompleted, &zero, base.Add(5*time.Minute), 1
			a2.State, a2.Error = wire.CheckBudget, "no answer within the budget"
			if err := s.SaveRun(ctx, fence, r, []wire.SweepRunAgent{a2}); err != nil {
				t.Fatalf("final SaveRun: %v", err)
			}
			got, _ := s.GetRun(ctx, "r1")
			want := r
			want.FiredAt, want.Deadline, want.FinishedAt, want.UpdatedAt = stored(r.FiredAt), stored(r.Deadline), stored(r.FinishedAt), stored(r.UpdatedAt)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("final run:\n got %+v\nwant %+v", got, want)
			}
			// A final run is the audit record: it cannot be written again.
			requireIs(t, s.SaveRun(ctx, fence, r, nil), fault.ErrConflict, "SaveRun of a final run")
			ghost := sweepRun("ghost", "nightly", 0)
			requireIs(t, s.SaveRun(ctx, fence, ghost, nil), fault.ErrNotFound, "SaveRun of an unknown run")
			_, err = s.GetRun(ctx, "ghost")
			requireIs(t, err, fault.ErrNotFound, "GetRun unknown")
			// Agent rows must belong to the run they are written with.
			r3, err := s.StartRun(ctx, fence, nil, sweepRun("r3", "nightly", time.Hour), nil)
			if err != nil {
				t.Fatal(err)
			}
			requireIs(t, s.SaveRun(ctx, fence, r3, []wire.SweepRunAgent{runAgent("r1", "a1", wire.CheckClean)}), fault.ErrInvalid, "SaveRun with another run's agent")
		})

		t.Run("ListRuns", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			// Records of firings that did not run are stored as given.
			missed := sweepRun("m1", "nightly", 0)
			zero := 0
			missed.Trigger, missed.TriggeredBy, missed.ScheduledFor, missed.Status, missed.ExitCode, missed.MissedFirings, missed.FinishedAt =
				wire.TriggerSchedule, "scheduler", base, wire.SweepRunMissed, &zero, 3, base
			missed.Matched = 0
			if got, err := s.StartRun(ctx, store.Fence{}, nil, missed, nil); err != nil || got.Status != wire.SweepRunMissed {
				t.Fatalf("StartRun(missed) = %+v, %v", got, err)
			}
			for i, id := range []string{"r1", "r2", "r3"} {
				r := sweepRun(id, "nightly", time.Duration(i+1)*time.Minute)
				r.Status, r.ExitCode = wire.SweepRunCompleted, &zero
				if _, err := s.StartRun(ctx, store.Fence{}, nil, r, nil); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.StartRun(ctx, store.Fence{}, nil, sweepRun("w1", "weekly", 30*time.Second), nil); err != nil {
				t.Fatal(err)
			}
			ids := func(rs []wire.SweepRun) []string {
				var out []string
				for _, r := range rs {
					out = append(out, r.ID)
				}
				return out
			}
			for _, tc := range []struct {
				sweep string
				limit int
				want  []string
			}{
				{"nightly", 10, []string{"r3", "r2", "r1", "m1"}},
				{"nightly", 2, []string{"r3", "r2"}},
				{"weekly", 10, []string{"w1"}},
				{"", 3, []string{"r3", "r2", "r1"}},
				{"", 10, []string{"r3", "r2", "r1", "w1", "m1"}},
				{"ghost", 10, nil},
			} {
				got, err := s.ListRuns(ctx, tc.sweep, tc.limit)
				if err != nil || !reflect.DeepEqual(ids(got), tc.want) {
					t.Fatalf("ListRuns(%q, %d) = %v, %v; want %v", tc.sweep, tc.limit, ids(got), err, tc.want)
				}
			}
			m, _ := s.GetRun(ctx, "m1")
			if m.MissedFirings != 3 || m.Trigger != wire.TriggerSchedule || !m.ScheduledFor.Equal(stored(base)) || m.ExitCode == nil {
				t.Fatalf("missed record = %+v", m)
			}
			for _, limit := range []int{0, -1, 1001} {
				_, err := s.ListRuns(ctx, "nightly", limit)
				requireIs(t, err, fault.ErrInvalid, fmt.Sprintf("ListRuns limit %d", limit))
			}
			running, err := s.RunningRuns(ctx)
			if err != nil || !reflect.DeepEqual(ids(running), []string{"w1"}) {
				t.Fatalf("RunningRuns = %v, %v", ids(running), err)
			}
		})
	})
}
