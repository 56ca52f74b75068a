package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/lease/leasetest"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/migration/controller"
	"godwit.dev/godwit/internal/wire"
)

var t0 = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

// Two triggers at once, on two goroutines as on two hub replicas: exactly one runs, the other is
// recorded lock_skipped, and both answer with their run record.
func TestConcurrentTriggersRunOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 3, t0)
	h.apply(sweepYAML("drift"))
	const n = 2
	got := make([]wire.SweepRun, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			got[i], errs[i] = h.svc.Trigger(context.Background(), "drift", wire.SweepTriggerRequest{By: "replica"})
		})
	}
	close(start)
	wg.Wait()
	var running, skipped []wire.SweepRun
	for i, r := range got {
		if errs[i] != nil {
			t.Fatalf("Trigger #%d: %v", i, errs[i])
		}
		if r.LockSkipped {
			skipped = append(skipped, r)
		} else {
			running = append(running, r)
		}
	}
	if len(running) != 1 || len(skipped) != 1 {
		t.Fatalf("running %v, skipped %v; want one of each", running, skipped)
	}
	if r := running[0]; r.Status != wire.SweepRunRunning || r.Matched != 3 || r.Trigger != wire.TriggerAPI || r.TriggeredBy != "replica" || r.ExitCode != nil {
		t.Fatalf("the run = %+v", r)
	}
	if s := skipped[0]; s.Status != wire.SweepRunSkipped || *s.ExitCode != 0 || !strings.Contains(s.Error, running[0].ID) || s.Matched != 0 {
		t.Fatalf("the skipped one = %+v", s)
	}
	if rs := h.runs("drift"); len(rs) != 2 {
		t.Fatalf("stored runs = %+v, want 2 records", rs)
	}
	if v := h.metric("lock_skips", "drift"); v != 1 {
		t.Fatalf("godwit_sweep_lock_skips_total = %v, want 1", v)
	}
}

// A scheduled firing while an API-triggered run is in progress does not run: it is recorded
// lock_skipped for its instant, and the schedule moves on.
func TestScheduledFiringDuringRunIsLockSkipped(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2, t0.Add(14*time.Minute))
	h.apply(sweepYAML("drift", `schedule: "*/15 * * * *"`))
	api := h.trigger("drift")
	h.clock.Set(t0.Add(15*time.Minute + 500*time.Millisecond))
	h.pass()
	rs := h.runs("drift")
	if len(rs) != 2 {
		t.Fatalf("runs = %+v, want the API run and one scheduled record", rs)
	}
	sched := rs[0]
	if sched.Trigger != wire.TriggerSchedule || !sched.LockSkipped || sched.Status != wire.SweepRunSkipped ||
		!sched.ScheduledFor.Equal(t0.Add(15*time.Minute)) || !strings.Contains(sched.Error, api.ID) {
		t.Fatalf("scheduled record = %+v", sched)
	}
	if r := h.run(api.ID); r.Status != wire.SweepRunRunning {
		t.Fatalf("API run = %+v, want still running", r)
	}
	sw, _ := h.store.GetSweep(t.Context(), "drift")
	if !sw.NextFireAt.Equal(t0.Add(30 * time.Minute)) {
		t.Fatalf("next firing = %v, want 10:30", sw.NextFireAt)
	}
	if v := h.metric("runs", "drift", "lock_skipped"); v != 1 {
		t.Fatalf("runs_total{lock_skipped} = %v", v)
	}
}

// A budget smaller than the fleet needs: with two checks at a time, agents not reached when
// the budget runs out, and agents that had not answered, count as skipped_budget. The run still
// completes (exit code 0) and the hub withdraws its requests.
func TestBudgetSkipsAgentsNotReached(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 5, t0)
	h.apply(sweepYAML("drift", "maxSeconds: 60", "concurrency: 2"))
	run := h.trigger("drift")
	h.pass()
	for i, want := range []int{1, 1, 0, 0, 0} {
		if got := len(h.requested(i)); got != want {
			t.Fatalf("agent-%d asked %d checks, want %d (concurrency 2)", i+1, got, want)
		}
	}
	h.clock.Add(10 * time.Second)
	h.answer(0, answerOf(run, wire.CheckClean, 0))
	h.answer(1, answerOf(run, wire.CheckDrifted, 1))
	h.passUntil("agents 3 and 4 dispatched", func() bool { return len(h.requested(2)) == 1 && len(h.requested(3)) == 1 })
	if len(h.requested(4)) != 0 {
		t.Fatal("agent-5 dispatched beyond the concurrency")
	}
	// agent-3 and agent-4 never answer (a slow check, a hung node): agent-5 is never reached.
	h.clock.Set(run.Deadline) // the budget is spent
	h.pass()
	r := h.run(run.ID)
	if r.Status != wire.SweepRunCompleted || *r.ExitCode != 0 || r.Matched != 5 || r.SkippedClean != 1 || r.Processed != 1 || r.Drifted != 1 ||
		r.SkippedBudget != 3 || r.SkippedMissing != 0 || !r.FinishedAt.Equal(run.Deadline) {
		t.Fatalf("run = %+v", r)
	}
	if len(r.DriftedAgents) != 1 || r.DriftedAgents[0].Name != "agent-2" {
		t.Fatalf("drifted agents = %+v", r.DriftedAgents)
	}
	as := h.runAgents(run.ID)
	for _, n := range []string{"agent-3", "agent-4"} {
		if a := as[n]; a.State != wire.CheckBudget || a.Error != "no answer within the budget" || a.DispatchedAt.IsZero() {
			t.Fatalf("%s (asked, no answer) = %+v", n, a)
		}
	}
	if a := as["agent-5"]; a.State != wire.CheckBudget || !strings.Contains(a.Error, "not reached") || !a.DispatchedAt.IsZero() {
		t.Fatalf("agent-5 (never reached) = %+v", a)
	}
	for i := range 5 {
		if ids := h.requested(i); len(ids) != 0 {
			t.Fatalf("agent-%d still asked %v after the run ended", i+1, ids)
		}
	}
	if v := h.metric("runs", "drift", "completed"); v != 1 {
		t.Fatalf("runs_total{completed} = %v", v)
	}
}

// Agents offline when the run fires, and agents that go offline before answering, are
// skipped_missing; revoked agents are not part of the fleet a sweep checks. An agent whose status
// is unknown (as every agent is just after a hub restart) is asked all the same.
func TestOfflineAgentsAreMissing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 5, t0)
	h.setStatus(1, wire.StatusOffline) // offline at firing
	h.setStatus(2, wire.StatusUnknown) // not heard of since the hub started
	if err := h.store.RevokeAgent(t.Context(), h.agents[4].ID, t0); err != nil {
		t.Fatal(err)
	}
	h.apply(sweepYAML("drift"))
	run := h.trigger("drift")
	if run.Matched != 4 || run.SkippedMissing != 1 {
		t.Fatalf("run at start = %+v, want 4 matched (the revoked one left out), 1 missing", run)
	}
	h.pass()
	if len(h.requested(1)) != 0 || len(h.requested(0)) != 1 || len(h.requested(2)) != 1 || len(h.requested(3)) != 1 {
		t.Fatal("checks sent to the wrong agents")
	}
	h.setStatus(3, wire.StatusOffline) // goes away before answering
	h.answer(0, answerOf(run, wire.CheckClean, 0))
	h.answer(2, answerOf(run, wire.CheckClean, 0))
	h.passUntil("run ended", func() bool { return h.run(run.ID).Final() })
	r := h.run(run.ID)
	if r.Status != wire.SweepRunCompleted || r.SkippedMissing != 2 || r.SkippedClean != 2 || r.SkippedBudget != 0 || *r.ExitCode != 0 {
		t.Fatalf("run = %+v", r)
	}
	as := h.runAgents(run.ID)
	if as["agent-2"].Error != "agent offline when the run fired" || as["agent-4"].Error != "agent offline before answering" {
		t.Fatalf("missing reasons: %q, %q", as["agent-2"].Error, as["agent-4"].Error)
	}
	if _, ok := as["agent-5"]; ok {
		t.Fatal("the revoked agent is in the run")
	}
}

// A hub down across three scheduled firings: misfire skip runs none of them (one record says
// what was missed), run_once runs one catch-up run. Nothing fires twice after the restart.
func TestMisfireAfterHubOutage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, policy string
		back         time.Duration // when the hub is back, after 10:00
		wantRuns     int           // runs that actually ran
		wantMissed   float64
		wantRecord   bool          // a missed record
		wantRunFor   time.Duration // scheduled_for of the run, if any
	}{
		{"skip", MisfireSkip, 50 * time.Minute, 0, 3, true, 0},
		{"run_once", MisfireRunOnce, 50 * time.Minute, 1, 3, false, 45 * time.Minute},
		// Back in time for the third firing: the first two were missed, the third runs on time.
		{"skip, back for the last firing", MisfireSkip, 45*time.Minute + 20*time.Second, 1, 2, true, 45 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 0, t0.Add(time.Minute))
			h.apply(sweepYAML("drift", `schedule: "*/15 * * * *"`, "misfire: "+tc.policy))
			h.pass() // 10:01: nothing due
			h.down()
			h.clock.Set(t0.Add(tc.back)) // 10:15, 10:30 and 10:45 passed while no hub ran
			h.restart()
			h.pass()
			h.pass() // a second pass at the same instant changes nothing
			var ran, records []wire.SweepRun
			for _, r := range h.runs("drift") {
				if r.Status == wire.SweepRunMissed {
					records = append(records, r)
				} else {
					ran = append(ran, r)
				}
			}
			if len(ran) != tc.wantRuns {
				t.Fatalf("runs after the outage = %+v, want %d", ran, tc.wantRuns)
			}
			if len(ran) == 1 && !ran[0].ScheduledFor.Equal(t0.Add(tc.wantRunFor)) {
				t.Fatalf("the run is for %v, want %v", ran[0].ScheduledFor, t0.Add(tc.wantRunFor))
			}
			if tc.policy == MisfireRunOnce && ran[0].MissedFirings != 3 {
				t.Fatalf("catch-up run = %+v, want missed_firings 3", ran[0])
			}
			if (len(records) == 1) != tc.wantRecord || len(records) > 1 {
				t.Fatalf("missed records = %+v", records)
			}
			if tc.wantRecord && (float64(records[0].MissedFirings) != tc.wantMissed || records[0].LockSkipped) {
				t.Fatalf("missed record = %+v", records[0])
			}
			if v := h.metric("missed", "drift", tc.policy); v != tc.wantMissed {
				t.Fatalf("godwit_sweep_missed_firings_total = %v, want %v", v, tc.wantMissed)
			}
			sw, _ := h.store.GetSweep(t.Context(), "drift")
			if !sw.NextFireAt.Equal(t0.Add(time.Hour)) {
				t.Fatalf("next firing = %v, want 11:00", sw.NextFireAt)
			}
			// The schedule carries on normally.
			h.clock.Set(t0.Add(time.Hour + time.Second))
			h.pass()
			if rs := h.runs("drift"); !rs[0].ScheduledFor.Equal(t0.Add(time.Hour)) || rs[0].MissedFirings != 0 || rs[0].Status == wire.SweepRunMissed {
				t.Fatalf("11:00 firing = %+v", rs[0])
			}
		})
	}
}

// A schedule in Europe/Berlin fires at the right instants across both daylight-saving changes
// of 2026, driven by the scheduler (not only by Schedule.Next).
func TestScheduleAcrossDST(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, expr string
		from       time.Time
		want       []string
	}{
		{"daily 02:30 across spring forward", "30 2 * * *", time.Date(2026, 3, 27, 12, 0, 0, 0, time.UTC),
			[]string{"2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"}},
		{"daily 02:30 across fall back", "30 2 * * *", time.Date(2026, 10, 23, 12, 0, 0, 0, time.UTC),
			[]string{"2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"}},
		{"every 30 minutes across fall back", "*/30 * * * *", time.Date(2026, 10, 24, 23, 40, 0, 0, time.UTC),
			[]string{"2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:00:00Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 0, tc.from)
			h.apply(sweepYAML("berlin", `schedule: "`+tc.expr+`"`, "timezone: Europe/Berlin"))
			for range tc.want {
				sw, err := h.store.GetSweep(t.Context(), "berlin")
				if err != nil {
					t.Fatal(err)
				}
				// Step through the hours before the firing: nothing fires early.
				for at := h.clock.Now(); at.Before(sw.NextFireAt); at = at.Add(20 * time.Minute) {
					h.clock.Set(at)
					h.pass()
				}
				h.clock.Set(sw.NextFireAt.Add(time.Second))
				h.pass()
			}
			var got []string
			for _, r := range slices.Backward(h.runs("berlin")) {
				if r.Trigger != wire.TriggerSchedule || r.Status != wire.SweepRunCompleted {
					t.Fatalf("unexpected run %+v", r)
				}
				got = append(got, r.ScheduledFor.UTC().Format(time.RFC3339))
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("fired for\n %v\nwant\n %v", got, tc.want)
			}
		})
	}
}

const migrationYAML = `apiVersion: godwit.dev/v1
kind: Migration
metadata:
  name: web-tls
spec:
  toVersion: "2"
  selector:
    matchLabels: {role: web}
  steps:
    - name: config
      run: "true"
`

// action: remediate starts the named migration for the drifted agents only.
func TestRemediateMigratesOnlyDriftedAgents(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 4, t0)
	ctrl := controller.New(controller.Config{Store: h.store, Desired: h.bk.Desired, Observed: h.bk.Observed, Clock: h.clock,
		Leader: leasetest.StoreEpoch{Store: h.store, Name: controller.LeadershipName, Holder: "test"}, Logger: logging.Discard(), HubID: "test",
		Settle: -1}) // the fake clock stands still: start at once
	if _, err := ctrl.Apply(t.Context(), []byte(migrationYAML), false); err != nil {
		t.Fatal(err)
	}
	// The template migration is not what this test is about: abort it so it dispatches nothing.
	if _, err := ctrl.Act(t.Context(), "web-tls", wire.MigrationAbort, "test"); err != nil {
		t.Fatal(err)
	}
	h.apply(sweepYAML("drift", "action: remediate", "remediate: {migration: web-tls}"))
	run := h.trigger("drift")
	h.pass()
	h.answer(0, answerOf(run, wire.CheckClean, 0))
	h.answer(1, answerOf(run, wire.CheckDrifted, 1))
	h.answer(2, answerOf(run, wire.CheckClean, 0))
	h.answer(3, answerOf(run, wire.CheckDrifted, 1))
	h.passUntil("run ended", func() bool { return h.run(run.ID).Final() })
	r := h.run(run.ID)
	want := RemediationName("web-tls", run.ID)
	if r.Status != wire.SweepRunCompleted || *r.ExitCode != 0 || r.Drifted != 2 || r.Remediation != want {
		t.Fatalf("run = %+v, want completed with remediation %s", r, want)
	}
	as, err := h.store.ListAssignments(t.Context(), want)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range as {
		got = append(got, a.AgentID)
	}
	slices.Sort(got)
	if wantIDs := []string{h.agents[1].ID, h.agents[3].ID}; !slices.Equal(got, wantIDs) {
		t.Fatalf("remediation assignments for %v, want only the drifted %v", got, wantIDs)
	}
	m, err := h.store.GetMigration(t.Context(), want)
	if err != nil || !strings.Contains(m.Spec, run.ID) || !strings.Contains(m.Spec, "run: \"true\"") {
		t.Fatalf("remediation migration = %+v, %v", m, err)
	}
	// The migration controller runs it like any migration: desired state for the drifted only.
	if err := ctrl.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ctrl.Stop(context.Background()) })
	hasRemediation := func(i int) bool {
		e, err := h.bk.Desired.Get(t.Context(), h.agents[i].ID)
		return err == nil && strings.Contains(string(e.Value()), `"migration":"`+want+`"`)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !hasRemediation(1) || !hasRemediation(3) {
		if time.Now().After(deadline) {
			t.Fatal("the drifted agents were not sent the remediation within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if hasRemediation(0) || hasRemediation(2) {
		t.Fatal("a clean agent was sent the remediation")
	}
	// Finishing the same run again (a new leader after a crash) does not start a second one.
	if _, err := h.svc.remediate(t.Context(), r, mustSpec(t, h, "drift"), []string{h.agents[1].ID, h.agents[3].ID}); err != nil {
		t.Fatalf("remediate again: %v", err)
	}
	if ms, _ := h.store.ListMigrations(t.Context()); len(ms) != 2 {
		t.Fatalf("migrations = %d, want the template and one remediation", len(ms))
	}
}

func mustSpec(t *testing.T, h *harness, name string) *Spec {
	t.Helper()
	sw, err := h.store.GetSweep(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := h.svc.parseStored(sw.Spec, sw.SpecHash)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// Bad input is a clear error naming the field, and nothing is stored.
func TestApplyRefusesBadInput(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1, t0)
	for _, tc := range []struct {
		name, yaml, field, says string
	}{
		{"invalid cron", sweepYAML("s", `schedule: "*/15 * * *"`), "spec.schedule", "five"},
		{"cron out of range", sweepYAML("s", `schedule: "0 25 * * *"`), "spec.schedule", "hour"},
		{"unknown time zone", sweepYAML("s", `schedule: "@daily"`, "timezone: Europe/Atlantis"), "spec.timezone", "unknown time zone"},
		{"local time zone", sweepYAML("s", "timezone: Local"), "spec.timezone", "time zone"},
		{"zero budget", sweepYAML("s", "maxSeconds: 0"), "spec.maxSeconds", "positive"},
		{"negative budget", sweepYAML("s", "maxSeconds: -5"), "spec.maxSeconds", "positive"},
		{"remediate a migration that does not exist", sweepYAML("s", "action: remediate", "remediate: {migration: ghost}"), "spec.remediate.migration", "does not exist"},
		{"remediate without a migration", sweepYAML("s", "action: remediate"), "spec.remediate.migration", "required"},
		{"unknown misfire", sweepYAML("s", "misfire: catch_up"), "spec.misfire", "skip, run_once"},
		{"unknown field", sweepYAML("s", "maxSecs: 5"), "spec.maxSecs", "unknown field"},
		{"no check", "apiVersion: godwit.dev/v1\nkind: Sweep\nmetadata: {name: s}\nspec: {}\n", "spec.check.command", "required"},
		{"check timeout over budget", "apiVersion: godwit.dev/v1\nkind: Sweep\nmetadata: {name: s}\nspec:\n  maxSeconds: 10\n  check: {command: x, timeout: 1m}\n",
			"spec.check.timeout", "budget"},
		{"a migration kind", migrationYAML, "kind", "must be Sweep"},
	} {
		_, err := h.svc.Apply(t.Context(), []byte(tc.yaml), false)
		var fe *fault.FieldError
		if !errors.Is(err, fault.ErrInvalid) || !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: Apply = %v; want an invalid-field error on %s saying %q", tc.name, err, tc.field, tc.says)
		}
	}
	if sws, _ := h.store.ListSweeps(t.Context()); len(sws) != 0 {
		t.Fatalf("sweeps stored after bad input: %+v", sws)
	}
	// An error carries the line of the field.
	_, err := h.svc.Apply(t.Context(), []byte(sweepYAML("s", "maxSeconds: 0")), false)
	if !strings.Contains(err.Error(), "(line 10)") {
		t.Fatalf("error without its line: %v", err)
	}
	// A trigger with a bad budget, or of an unknown sweep, runs nothing.
	h.apply(sweepYAML("s"))
	for _, v := range []int{0, -1} {
		_, err := h.svc.Trigger(t.Context(), "s", wire.SweepTriggerRequest{MaxSeconds: &v})
		if !errors.Is(err, fault.ErrInvalid) || !strings.Contains(err.Error(), "max_seconds") {
			t.Fatalf("Trigger(max_seconds %d) = %v", v, err)
		}
	}
	_, err = h.svc.Trigger(t.Context(), "ghost", wire.SweepTriggerRequest{})
	if !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("Trigger(unknown) = %v", err)
	}
	if rs := h.runs(""); len(rs) != 0 {
		t.Fatalf("runs after refused triggers: %+v", rs)
	}
}

// Apply is idempotent; a changed spec replaces the stored one, and only a changed schedule or
// time zone moves the next firing.
func TestApplyUpdates(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2, t0.Add(time.Minute))
	res := h.apply(sweepYAML("s", `schedule: "*/15 * * * *"`))
	if res.Outcome != "created" || res.Matched != 2 || len(res.NextFirings) != 3 || !res.NextFirings[0].Equal(t0.Add(15*time.Minute)) {
		t.Fatalf("first apply = %+v", res)
	}
	if res := h.apply(sweepYAML("s", `schedule: "*/15 * * * *"`, "misfire: skip")); res.Outcome != "unchanged" {
		t.Fatalf("same spec with a default written out = %+v", res)
	}
	dry, err := h.svc.Apply(t.Context(), []byte(sweepYAML("s", `schedule: "0 * * * *"`)), true)
	if err != nil || dry.Outcome != "planned" || !dry.NextFirings[0].Equal(t0.Add(time.Hour)) {
		t.Fatalf("dry run = %+v, %v", dry, err)
	}
	if sw, _ := h.store.GetSweep(t.Context(), "s"); !sw.NextFireAt.Equal(t0.Add(15 * time.Minute)) {
		t.Fatalf("a dry run changed the sweep: %+v", sw)
	}
	h.clock.Set(t0.Add(20 * time.Minute))
	if res := h.apply(sweepYAML("s", `schedule: "*/15 * * * *"`, "maxSeconds: 60")); res.Outcome != "updated" {
		t.Fatalf("changed budget = %+v", res)
	}
	if sw, _ := h.store.GetSweep(t.Context(), "s"); !sw.NextFireAt.Equal(t0.Add(15*time.Minute)) || sw.Version != 2 {
		t.Fatalf("a budget change moved the next firing: %+v", sw)
	}
	h.apply(sweepYAML("s", `schedule: "0 * * * *"`, "maxSeconds: 60"))
	if sw, _ := h.store.GetSweep(t.Context(), "s"); !sw.NextFireAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("a schedule change did not reschedule from now: %+v", sw)
	}
}

// sweep.progress events carry the run record while it proceeds and at its end; a restarted
// leader resumes a run the previous one left running, and the old leader's writes are fenced.
func TestProgressAndRestartMidRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2, t0)
	h.apply(sweepYAML("drift", "maxSeconds: 120"))
	run := h.trigger("drift")
	h.pass()
	old := h.svc
	h.restart() // the hub restarts mid-run
	h.apply(sweepYAML("other"))
	h.trigger("other") // the old leader would dispatch it
	if err := old.Pass(t.Context()); !errors.Is(err, fault.ErrFenced) {
		t.Fatalf("deposed leader's pass = %v, want fenced", err)
	}
	h.clock.Add(30 * time.Second)
	h.answer(0, answerOf(run, wire.CheckClean, 0))
	h.answer(1, answerOf(run, wire.CheckDrifted, 1))
	h.passUntil("run ended", func() bool { return h.run(run.ID).Final() })
	r := h.run(run.ID)
	if r.Status != wire.SweepRunCompleted || r.SkippedClean != 1 || r.Drifted != 1 {
		t.Fatalf("run = %+v", r)
	}
	var ev []wire.SweepRun
	for _, e := range h.progress() {
		if e.ID == run.ID {
			ev = append(ev, e)
		}
	}
	if len(ev) < 2 {
		t.Fatalf("progress events = %+v", ev)
	}
	first, last := ev[0], ev[len(ev)-1]
	if first.ID != run.ID || first.Status != wire.SweepRunRunning || first.Matched != 2 {
		t.Fatalf("first progress event = %+v", first)
	}
	if last.Status != wire.SweepRunCompleted || last.SkippedClean != 1 || last.Processed != 1 || last.ExitCode == nil || *last.ExitCode != 0 ||
		len(last.DriftedAgents) != 1 || last.Context != nil {
		t.Fatalf("last progress event = %+v", last)
	}
	// The run's context is the snapshot it ran with.
	var rc runContext
	if err := json.Unmarshal(r.Context, &rc); err != nil || rc.SpecHash == "" || rc.Settings.MaxSeconds != 120 || len(rc.Matched) != 2 || rc.Hub != "test" {
		t.Fatalf("context = %+v, %v", rc, err)
	}
}

// A sweep deleted mid-run: the run finishes with its snapshot; nothing fires any more.
func TestDeleteKeepsRuns(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1, t0)
	h.apply(sweepYAML("drift", `schedule: "*/15 * * * *"`))
	run := h.trigger("drift")
	if err := h.svc.Delete(t.Context(), "drift"); err != nil {
		t.Fatal(err)
	}
	h.pass()
	h.answer(0, answerOf(run, wire.CheckClean, 0))
	h.passUntil("run ended", func() bool { return h.run(run.ID).Final() })
	h.clock.Add(time.Hour)
	h.pass()
	rs, _, err := h.svc.Runs(t.Context(), "drift", 10, "")
	if err != nil || len(rs) != 1 || rs[0].Status != wire.SweepRunCompleted {
		t.Fatalf("runs of the deleted sweep = %+v, %v", rs, err)
	}
	if _, _, err := h.svc.Runs(t.Context(), "never", 10, ""); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("runs of a sweep that never existed: %v", err)
	}
	if _, err := h.svc.Run(t.Context(), "other", run.ID); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("a run under another sweep's name: %v", err)
	}
}

// A pass reads the fleet only when a run is running: with none it reads no agent, however often
// it runs; with one it does, and the run's agents get their check requests; once the run has
// ended, none again.
func TestPassReadsTheFleetOnlyForRunningRuns(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 3, t0)
	h.apply(sweepYAML("drift"))
	before := h.listAgents.Load()
	for range 3 {
		h.pass()
	}
	if n := h.listAgents.Load() - before; n != 0 {
		t.Fatalf("3 passes without a running run listed the agents %d times, want 0", n)
	}
	r := h.trigger("drift")
	before = h.listAgents.Load()
	h.pass()
	if n := h.listAgents.Load() - before; n != 1 {
		t.Errorf("a pass with a running run listed the agents %d times, want 1", n)
	}
	if got := h.requested(0); !slices.Contains(got, r.ID) {
		t.Errorf("agent 1 was asked for runs %v, want %s among them", got, r.ID)
	}
	// Once the run has ended the passes stop reading the fleet again.
	for i := range 3 {
		h.answer(i, answerOf(r, wire.CheckClean, 0))
	}
	h.passUntil("run ended", func() bool { return h.run(r.ID).Final() })
	before = h.listAgents.Load()
	h.pass()
	if n := h.listAgents.Load() - before; n != 0 {
		t.Fatalf("a pass after the run ended listed the agents %d times, want 0", n)
	}
}

// A resume (or an apply) on a replica whose clock is behind the leader's, or after the hub's
// clock stepped back, can set the next firing to an instant that has already fired. That
// instant is not run twice (the firing index), and the schedule must not stop there: the pass
// moves on to the next instant, whether or not a manual run holds the lock meanwhile.
func TestRescheduleOntoARecordedFiringMovesOn(t *testing.T) {
	t.Parallel()
	for _, lockHeld := range []bool{false, true} {
		t.Run(map[bool]string{false: "idle", true: "a manual run holds the lock"}[lockHeld], func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 1, t0.Add(14*time.Minute))
			h.apply(sweepYAML("drift", `schedule: "*/15 * * * *"`))
			h.clock.Set(t0.Add(15*time.Minute + 500*time.Millisecond))
			h.pass()
			rs := h.scheduled("drift")
			if len(rs) != 1 || !rs[0].ScheduledFor.Equal(t0.Add(15*time.Minute)) {
				t.Fatalf("10:15 firing = %+v", rs)
			}
			first := rs[0]
			h.answer(0, answerOf(first, wire.CheckClean, 0))
			h.passUntil("the 10:15 run ends", func() bool { return h.run(first.ID).Final() })

			// The clock steps back half a minute; the operator suspends and resumes the sweep
			// (resumePolicy skip: the next firing is the next one after now, 10:15 again).
			h.clock.Set(t0.Add(14*time.Minute + 30*time.Second))
			h.suspend("drift", "alice", wire.SuspendViaCLI, "")
			h.resume("drift", "alice")
			if sw, _ := h.store.GetSweep(t.Context(), "drift"); !sw.NextFireAt.Equal(t0.Add(15 * time.Minute)) {
				t.Fatalf("next firing after the resume = %v, want 10:15", sw.NextFireAt)
			}
			if lockHeld {
				h.trigger("drift")
			}
			h.clock.Set(t0.Add(15*time.Minute + 10*time.Second))
			if err := h.svc.Pass(t.Context()); err != nil {
				t.Fatalf("Pass at 10:15:10: %v", err)
			}
			if rs := h.scheduled("drift"); len(rs) != 1 {
				t.Fatalf("10:15 fired twice: %+v", rs)
			}
			if sw, _ := h.store.GetSweep(t.Context(), "drift"); !sw.NextFireAt.Equal(t0.Add(30 * time.Minute)) {
				t.Fatalf("next firing after the pass = %v, want 10:30 (the recorded 10:15 is behind it)", sw.NextFireAt)
			}
			h.clock.Set(t0.Add(30*time.Minute + time.Second))
			if err := h.svc.Pass(t.Context()); err != nil {
				t.Fatalf("Pass at 10:30:01: %v", err)
			}
			rs = h.scheduled("drift")
			if len(rs) != 2 || !rs[0].ScheduledFor.Equal(t0.Add(30*time.Minute)) {
				t.Fatalf("the 10:30 firing is not recorded: %+v", rs)
			}
		})
	}
}

// A run whose budget ran out while no hub led (the leader failed mid-run) no longer holds the
// sweep's lock in spirit: the next leader's first pass must end it before it claims a firing,
// or the firing (on time, or misfire: run_once's catch-up) is recorded lock_skipped behind a run
// that was over for minutes, and never runs.
func TestFiringAfterFailoverIsNotLockSkippedByAnExpiredRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, misfire string
		back          time.Duration // the new leader's first pass, after 10:00
		missed        int
	}{
		{"on time", MisfireSkip, 15*time.Minute + 20*time.Second, 0},
		{"run_once catch-up", MisfireRunOnce, 50 * time.Minute, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 1, t0.Add(-time.Minute))
			h.apply(sweepYAML("drift", `schedule: "*/15 * * * *"`, "misfire: "+tc.misfire, "maxSeconds: 300"))
			h.clock.Set(t0.Add(time.Second))
			h.pass()
			rs := h.scheduled("drift")
			if len(rs) != 1 || rs[0].Status != wire.SweepRunRunning {
				t.Fatalf("10:00 firing = %+v", rs)
			}
			first := rs[0]
			h.down() // the leader fails at 10:00:01; its run's budget ends at 10:05:01
			h.clock.Set(t0.Add(tc.back))
			h.restart()
			h.pass()
			if r := h.run(first.ID); r.Status != wire.SweepRunCompleted || r.SkippedBudget != 1 {
				t.Fatalf("the 10:00 run after the failover = %+v", r)
			}
			rs = h.scheduled("drift")
			var ran []wire.SweepRun
			for _, r := range rs {
				if r.ID != first.ID && r.Status != wire.SweepRunMissed {
					ran = append(ran, r)
				}
			}
			if len(ran) != 1 || ran[0].LockSkipped || ran[0].Status != wire.SweepRunRunning || ran[0].MissedFirings != tc.missed {
				t.Fatalf("firing after the failover = %+v, want a run (not lock-skipped by the expired 10:00 run)", ran)
			}
		})
	}
}

// The same on a new leader whose first pass comes before its results watch has delivered the
// stored answers: the firing waits for them (the expired run cannot be judged yet; its agent
// answered while no hub led), then the run ends with that answer and the firing runs.
func TestFiringAfterFailoverWaitsForTheAnswersOfAnExpiredRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1, t0.Add(-time.Minute))
	h.apply(sweepYAML("drift", `schedule: "*/15 * * * *"`, "maxSeconds: 300"))
	h.clock.Set(t0.Add(time.Second))
	h.pass()
	first := h.scheduled("drift")[0]
	h.down()
	h.answer(0, answerOf(first, wire.CheckClean, 0)) // while no hub leads
	h.clock.Set(t0.Add(15*time.Minute + 20*time.Second))
	svc := New(h.config())
	if err := svc.lead(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := svc.Pass(t.Context()); err != nil {
		t.Fatal(err)
	}
	if rs := h.scheduled("drift"); len(rs) != 1 || h.run(first.ID).Status != wire.SweepRunRunning {
		t.Fatalf("before the results watch synced: %+v", rs)
	}
	go svc.watchResults(t.Context())
	<-svc.synced
	if err := svc.Pass(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := h.run(first.ID); r.Status != wire.SweepRunCompleted || r.SkippedClean != 1 {
		t.Fatalf("the 10:00 run = %+v, want completed with its answer", r)
	}
	rs := h.scheduled("drift")
	if len(rs) != 2 || rs[0].LockSkipped || rs[0].Status != wire.SweepRunRunning || !rs[0].ScheduledFor.Equal(t0.Add(15*time.Minute)) {
		t.Fatalf("the 10:15 firing = %+v", rs[0])
	}
}
