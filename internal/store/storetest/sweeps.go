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
			if runs, _, _ := s.ListRuns(ctx, store.RunQuery{Sweep: "nightly", Limit: 10}); len(runs) != 1 {
				t.Fatalf("runs = %+v, want only r-1", runs)
			}
			// A reschedule sets the next firing back onto the recorded instant (a clock behind
			// the one that fired it): claiming it stores the claim alone, so the schedule moves
			// on instead of finding that instant due and refused on every pass.
			cur, _ := s.GetSweep(ctx, "nightly")
			cur.NextFireAt = claim.From
			if err := s.UpdateSweep(ctx, cur, true); err != nil {
				t.Fatal(err)
			}
			again := store.SweepFiring{Sweep: "nightly", SpecHash: "h1", From: claim.From, Next: claim.Next.Add(15 * time.Minute)}
			_, err = fire("r-4", again)
			requireIs(t, err, store.ErrFiringRecorded, "a claim of a recorded instant")
			if got, _ := s.GetSweep(ctx, "nightly"); !got.NextFireAt.Equal(stored(again.Next)) {
				t.Fatalf("next firing after claiming a recorded instant = %v, want %v", got.NextFireAt, stored(again.Next))
			}
			if runs, _, _ := s.ListRuns(ctx, store.RunQuery{Sweep: "nightly", Limit: 10}); len(runs) != 1 {
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
				got, _, err := s.ListRuns(ctx, store.RunQuery{Sweep: tc.sweep, Limit: tc.limit})
				if err != nil || !reflect.DeepEqual(ids(got), tc.want) {
					t.Fatalf("ListRuns(%q, %d) = %v, %v; want %v", tc.sweep, tc.limit, ids(got), err, tc.want)
				}
				for _, r := range got {
					if r.Context != nil {
						t.Fatalf("ListRuns carries run %s's context %s; listings leave it out", r.ID, r.Context)
					}
				}
			}
			m, _ := s.GetRun(ctx, "m1")
			if m.MissedFirings != 3 || m.Trigger != wire.TriggerSchedule || !m.ScheduledFor.Equal(stored(base)) || m.ExitCode == nil {
				t.Fatalf("missed record = %+v", m)
			}
			for _, limit := range []int{0, -1, 1001} {
				_, _, err := s.ListRuns(ctx, store.RunQuery{Sweep: "nightly", Limit: limit})
				requireIs(t, err, fault.ErrInvalid, fmt.Sprintf("ListRuns limit %d", limit))
			}
			if r, _ := s.GetRun(ctx, "r1"); string(r.Context) != `{"spec_hash":"h1"}` {
				t.Fatalf("GetRun context = %s; the single run keeps its snapshot", r.Context)
			}
			for _, bad := range []string{"nope", "!!", "MTIz", "MTIzfA"} { // not base64, "123", "123|"
				_, _, err := s.ListRuns(ctx, store.RunQuery{Sweep: "nightly", Limit: 2, Cursor: bad})
				requireIs(t, err, fault.ErrInvalid, fmt.Sprintf("ListRuns cursor %q", bad))
			}
			running, err := s.RunningRuns(ctx)
			if err != nil || !reflect.DeepEqual(ids(running), []string{"w1"}) {
				t.Fatalf("RunningRuns = %v, %v", ids(running), err)
			}
		})

		t.Run("Suspension", func(t *testing.T) {
			s := setup(t)
			ctx := t.Context()
			sw := sweepRecord("canary")
			since := base.Add(-time.Hour)
			sw.Suspended, sw.Suspension = true, &wire.SweepSuspension{Since: since, Via: wire.SuspendViaSpec, Reason: "until the canary passes"}
			if err := s.CreateSweep(ctx, sw); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetSweep(ctx, "canary")
			want := &wire.SweepSuspension{Since: stored(since), Via: wire.SuspendViaSpec, Reason: "until the canary passes"}
			if err != nil || !got.Suspended || !reflect.DeepEqual(got.Suspension, want) {
				t.Fatalf("GetSweep of a sweep created suspended = %+v (suspension %+v), %v", got, got.Suspension, err)
			}
			if list, _ := s.ListSweeps(ctx); len(list) != 1 || !list[0].Suspended || list[0].Suspension == nil {
				t.Fatalf("ListSweeps = %+v", list)
			}
			// No firing of a suspended sweep can be claimed, and nothing is stored for it.
			claim := store.SweepFiring{Sweep: "canary", SpecHash: "h1", From: sw.NextFireAt, Next: sw.NextFireAt.Add(15 * time.Minute)}
			fire := func(id string) error {
				r := sweepRun(id, "canary", 15*time.Minute)
				r.Trigger, r.ScheduledFor = wire.TriggerSchedule, claim.From
				_, err := s.StartRun(ctx, store.Fence{}, &claim, r, nil)
				return err
			}
			requireIs(t, fire("r-held"), fault.ErrConflict, "claim of a suspended sweep's firing")
			if _, err := s.GetRun(ctx, "r-held"); err == nil {
				t.Fatal("a refused claim stored its run")
			}
			if got, _ := s.GetSweep(ctx, "canary"); !got.NextFireAt.Equal(stored(claim.From)) {
				t.Fatalf("a refused claim moved the next firing to %v", got.NextFireAt)
			}
			// A resuming claim is refused while the sweep is not suspended (below), and takes
			// the held firing and resumes the sweep in one write while it is.
			resumeClaim := claim
			resumeClaim.Resume = true
			held := sweepRun("r-resume", "canary", 20*time.Minute)
			held.Trigger, held.ScheduledFor = wire.TriggerSchedule, claim.From
			if r, err := s.StartRun(ctx, store.Fence{}, &resumeClaim, held, nil); err != nil || r.Status != wire.SweepRunRunning {
				t.Fatalf("resuming claim = %+v, %v", r, err)
			}
			if got, _ := s.GetSweep(ctx, "canary"); got.Suspended || got.Suspension != nil || got.Version != 2 ||
				!got.NextFireAt.Equal(stored(claim.Next)) || !got.UpdatedAt.Equal(stored(held.FiredAt)) {
				t.Fatalf("after the resuming claim: %+v", got)
			}
			resumeClaim.From, resumeClaim.Next = claim.Next, claim.Next.Add(15*time.Minute)
			_, err = s.StartRun(ctx, store.Fence{}, &resumeClaim, sweepRun("r-resume-2", "canary", 21*time.Minute), nil)
			requireIs(t, err, fault.ErrConflict, "a resuming claim of a sweep that is not suspended")
			// Suspended again for what follows.
			got, _ = s.GetSweep(ctx, "canary")
			done := held
			done.Status, done.ExitCode = wire.SweepRunCompleted, new(int)
			if err := s.SaveRun(ctx, store.Fence{}, done, nil); err != nil {
				t.Fatal(err)
			}
			got.Suspended, got.Suspension = true, &wire.SweepSuspension{Since: since, Via: wire.SuspendViaSpec, Reason: "until the canary passes"}
			if err := s.UpdateSweep(ctx, got, false); err != nil {
				t.Fatal(err)
			}
			got, _ = s.GetSweep(ctx, "canary")
			claim.From, claim.Next = got.NextFireAt, got.NextFireAt.Add(15*time.Minute)

			// A run without a claim (a trigger: the canary) runs all the same.
			if r, err := s.StartRun(ctx, store.Fence{}, nil, sweepRun("r-manual", "canary", time.Minute), nil); err != nil || r.Status != wire.SweepRunRunning {
				t.Fatalf("a triggered run of a suspended sweep = %+v, %v", r, err)
			}

			// Suspending another way replaces who, when, how and why; the version counts it.
			got.Suspension = &wire.SweepSuspension{Since: base, By: "alice@ops", Via: wire.SuspendViaCLI}
			got.UpdatedAt = base
			if err := s.UpdateSweep(ctx, got, false); err != nil {
				t.Fatal(err)
			}
			got, _ = s.GetSweep(ctx, "canary")
			if got.Version != 4 || !reflect.DeepEqual(got.Suspension, &wire.SweepSuspension{Since: stored(base), By: "alice@ops", Via: wire.SuspendViaCLI}) {
				t.Fatalf("after re-suspending: %+v (suspension %+v)", got, got.Suspension)
			}
			// Resuming clears the suspension; with reschedule, the next firing moves.
			got.Suspended, got.Suspension, got.NextFireAt = false, nil, base.Add(2*time.Hour)
			if err := s.UpdateSweep(ctx, got, true); err != nil {
				t.Fatal(err)
			}
			got, _ = s.GetSweep(ctx, "canary")
			if got.Suspended || got.Suspension != nil || got.Version != 5 || !got.NextFireAt.Equal(stored(base.Add(2*time.Hour))) {
				t.Fatalf("after resuming: %+v", got)
			}
			claim.From = got.NextFireAt
			if err := fire("r-sched"); err != nil {
				t.Fatalf("claim after resuming: %v", err)
			}
			// A writer that read the sweep before the suspension loses to it.
			stale := got
			got.Suspended, got.Suspension = true, &wire.SweepSuspension{Since: base, Via: wire.SuspendViaAPI}
			if err := s.UpdateSweep(ctx, got, false); err != nil {
				t.Fatal(err)
			}
			stale.Spec, stale.SpecHash = "kind: Sweep # 2\n", "h2"
			requireIs(t, s.UpdateSweep(ctx, stale, false), fault.ErrConflict, "UpdateSweep from before the suspension")
			if got, _ := s.GetSweep(ctx, "canary"); !got.Suspended || got.SpecHash != "h1" {
				t.Fatalf("the stale write changed the sweep: %+v", got)
			}
		})

		t.Run("ListRunsPages", func(t *testing.T) {
			// 1,000 runs of one sweep, interleaved with another sweep's, many sharing a fired_at
			// (ids break the tie): paging sees every run exactly once, newest first, whatever the
			// page size, and runs added while paging do not shift the pages still to come.
			s := setup(t)
			ctx := t.Context()
			const n = 1000
			var want []string // newest first
			for i := range n {
				id := fmt.Sprintf("big-%04d", i)
				r := sweepRun(id, "big", time.Duration(i/3)*time.Second) // three runs per instant
				r.Status, r.ExitCode, r.FinishedAt = wire.SweepRunCompleted, new(int), r.FiredAt
				if _, err := s.StartRun(ctx, store.Fence{}, nil, r, nil); err != nil {
					t.Fatal(err)
				}
				want = append([]string{id}, want...)
				if i%100 == 0 {
					o := sweepRun(fmt.Sprintf("other-%04d", i), "other", time.Duration(i/3)*time.Second)
					o.Status, o.ExitCode = wire.SweepRunCompleted, new(int)
					if _, err := s.StartRun(ctx, store.Fence{}, nil, o, nil); err != nil {
						t.Fatal(err)
					}
				}
			}
			page := func(q store.RunQuery) (ids []string, next string) {
				t.Helper()
				rs, next, err := s.ListRuns(ctx, q)
				if err != nil {
					t.Fatalf("ListRuns(%+v): %v", q, err)
				}
				if len(rs) > q.Limit {
					t.Fatalf("ListRuns(%+v) gave %d runs", q, len(rs))
				}
				for _, r := range rs {
					if r.Sweep != q.Sweep || r.Context != nil {
						t.Fatalf("ListRuns(%+v) gave %+v", q, r)
					}
					ids = append(ids, r.ID)
				}
				return ids, next
			}
			for round, limit := range []int{7, 100, 999, 1000} {
				var got []string
				q := store.RunQuery{Sweep: "big", Limit: limit}
				pages := 0
				for {
					ids, next := page(q)
					got = append(got, ids...)
					pages++
					if next == "" {
						break
					}
					if len(ids) != limit {
						t.Fatalf("limit %d: a page of %d runs before the last", limit, len(ids))
					}
					if pages == 1 {
						// A newer run arrives meanwhile: it is on no later page.
						late := sweepRun(fmt.Sprintf("late-%d", limit), "big", time.Hour+time.Duration(round)*time.Second)
						late.Status, late.ExitCode = wire.SweepRunCompleted, new(int)
						if _, err := s.StartRun(ctx, store.Fence{}, nil, late, nil); err != nil {
							t.Fatal(err)
						}
					}
					q.Cursor = next
				}
				if wantPages := (len(want) + limit - 1) / limit; pages != wantPages {
					t.Fatalf("limit %d: %d pages, want %d", limit, pages, wantPages)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("limit %d: paging gave %d runs, not every run once newest first (first %v)", limit, len(got), got[:min(len(got), 5)])
				}
				if pages > 1 {
					want = append([]string{fmt.Sprintf("late-%d", limit)}, want...) // the next round sees it first
				}
			}
			// Every sweep's runs together page the same way.
			var all []string
			q := store.RunQuery{Limit: 333}
			for {
				rs, next, err := s.ListRuns(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rs {
					all = append(all, r.ID)
				}
				if next == "" {
					break
				}
				q.Cursor = next
			}
			seen := map[string]bool{}
			for _, id := range all {
				if seen[id] {
					t.Fatalf("run %s listed twice across pages of every sweep", id)
				}
				seen[id] = true
			}
			if want := len(want) + n/100; len(all) != want { // big (with the late runs), other
				t.Fatalf("every sweep: %d runs, want %d", len(all), want)
			}
		})
	})
}
