package sweep

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/wire"
)

// scheduled returns a sweep's records of scheduled firings (runs, missed and lock-skipped
// records), newest first.
func (h *harness) scheduled(name string) []wire.SweepRun {
	h.t.Helper()
	var out []wire.SweepRun
	for _, r := range h.runs(name) {
		if r.Trigger == wire.TriggerSchedule {
			out = append(out, r)
		}
	}
	return out
}

// operatorActions returns the data.extra of the operator.action events about a sweep that
// suspend or resume it.
func (h *harness) operatorActions(name string) []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]any
	for _, e := range h.events {
		if e.Type != wire.EventOperatorAction || e.Subject != "sweep/"+name || len(e.Data.Extra) == 0 {
			continue
		}
		var x map[string]any
		if err := json.Unmarshal(e.Data.Extra, &x); err != nil {
			h.t.Fatalf("operator.action extra %s: %v", e.Data.Extra, err)
		}
		x["message"] = e.Data.Message
		out = append(out, x)
	}
	return out
}

func (h *harness) suspend(name, by, via, reason string) wire.SweepSuspendResult {
	h.t.Helper()
	res, err := h.svc.Suspend(h.t.Context(), name, wire.SweepSuspendRequest{By: by, Via: via, Reason: reason})
	if err != nil {
		h.t.Fatalf("Suspend: %v", err)
	}
	return res
}

func (h *harness) resume(name, by string) wire.SweepSuspendResult {
	h.t.Helper()
	res, err := h.svc.Resume(h.t.Context(), name, wire.SweepSuspendRequest{By: by, Via: wire.SuspendViaCLI})
	if err != nil {
		h.t.Fatalf("Resume: %v", err)
	}
	return res
}

func (h *harness) summary(name string) wire.SweepSummary {
	h.t.Helper()
	sum, err := h.svc.Get(h.t.Context(), name)
	if err != nil {
		h.t.Fatalf("Get: %v", err)
	}
	return sum
}

// A suspended sweep fires nothing across hours of its schedule and a scheduler restart, runs
// when triggered (recorded as the manual run it is), says why it is not firing, and after a
// resume (resumePolicy skip, the default) fires on its next instant without catching up.
func TestSuspendHoldsScheduledFirings(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1, t0.Add(time.Minute))
	h.apply(sweepYAML("drift", `schedule: "*/15 * * * *"`))
	res := h.suspend("drift", "alice@ops", wire.SuspendViaCLI, "canary first")
	if res.Outcome != "suspended" || !res.Suspended || res.Suspension == nil || res.Suspension.By != "alice@ops" ||
		res.Suspension.Via != wire.SuspendViaCLI || res.Suspension.Reason != "canary first" || !res.Suspension.Since.Equal(t0.Add(time.Minute)) {
		t.Fatalf("Suspend = %+v (suspension %+v)", res, res.Suspension)
	}
	if again := h.suspend("drift", "bob@ops", wire.SuspendViaAPI, ""); again.Outcome != "unchanged" || again.Suspension.By != "alice@ops" {
		t.Fatalf("second Suspend = %+v: want unchanged, still alice's", again)
	}

	// The clock jumps across eight firings, one pass after each and one after a jump of hours.
	for i := 1; i <= 8; i++ {
		h.clock.Set(t0.Add(time.Duration(i)*15*time.Minute + time.Second))
		h.pass()
	}
	if rs := h.runs("drift"); len(rs) != 0 {
		t.Fatalf("a suspended sweep recorded %+v", rs)
	}
	sum := h.summary("drift")
	if !sum.Suspended || sum.HeldFirings != 8 || len(sum.NextFirings) != 0 || !sum.NextFireAt.Equal(t0.Add(15*time.Minute)) {
		t.Fatalf("summary while suspended = held %d, next %v, stored next %v, suspended %v; want 8 held from 10:15 and no next firings",
			sum.HeldFirings, sum.NextFirings, sum.NextFireAt, sum.Suspended)
	}

	// The canary: triggered by hand, it runs and is recorded as a manual run.
	run, err := h.svc.Trigger(t.Context(), "drift", wire.SweepTriggerRequest{Trigger: wire.TriggerCLI, By: "alice@ops"})
	if err != nil || run.Status != wire.SweepRunRunning || run.Trigger != wire.TriggerCLI || run.TriggeredBy != "alice@ops" || !run.ScheduledFor.IsZero() {
		t.Fatalf("canary trigger = %+v, %v", run, err)
	}
	var rc runContext
	if err := json.Unmarshal(h.run(run.ID).Context, &rc); err != nil || !rc.Suspended || rc.Trigger != wire.TriggerCLI {
		t.Fatalf("canary context = %+v, %v; want suspended and trigger cli", rc, err)
	}
	h.pass()
	h.answer(0, answerOf(run, wire.CheckClean, 0))
	h.passUntil("canary ended", func() bool { return h.run(run.ID).Final() })
	if r := h.run(run.ID); r.Status != wire.SweepRunCompleted || r.SkippedClean != 1 {
		t.Fatalf("canary = %+v", r)
	}

	// A new leader (a hub restart) reads the suspension from SQL.
	h.restart()
	h.clock.Set(t0.Add(3*time.Hour + 5*time.Minute))
	h.pass()
	if rs := h.scheduled("drift"); len(rs) != 0 {
		t.Fatalf("the restarted scheduler fired a suspended sweep: %+v", rs)
	}

	res = h.resume("drift", "alice@ops")
	if res.Outcome != "resumed" || res.Suspended || res.HeldFirings != 12 || res.ResumePolicy != ResumeSkip || len(res.CatchUp) != 0 ||
		len(res.NextFirings) != 3 || !res.NextFirings[0].Equal(t0.Add(3*time.Hour+15*time.Minute)) {
		t.Fatalf("Resume = %+v", res)
	}
	if again := h.resume("drift", "alice@ops"); again.Outcome != "unchanged" {
		t.Fatalf("second Resume = %+v", again)
	}
	h.pass()
	if rs := h.scheduled("drift"); len(rs) != 0 {
		t.Fatalf("resume with resumePolicy skip caught up: %+v", rs)
	}
	h.clock.Set(t0.Add(3*time.Hour + 15*time.Minute + time.Second))
	h.pass()
	rs := h.scheduled("drift")
	if len(rs) != 1 || !rs[0].ScheduledFor.Equal(t0.Add(3*time.Hour+15*time.Minute)) || rs[0].MissedFirings != 0 || rs[0].Status != wire.SweepRunRunning {
		t.Fatalf("first firing after the resume = %+v", rs)
	}
	if v := h.metric("missed", "drift", MisfireSkip); v != 0 {
		t.Fatalf("held firings counted as missed: %v", v)
	}

	acts := h.operatorActions("drift")
	if len(acts) != 2 || acts[0]["action"] != "suspend" || acts[0]["actor"] != "alice@ops" || acts[0]["via"] != "cli" || acts[0]["reason"] != "canary first" ||
		acts[1]["action"] != "resume" || acts[1]["held_firings"] != float64(12) || acts[1]["resume_policy"] != "skip" ||
		!strings.Contains(acts[1]["message"].(string), "12 firings came due while it was suspended; not run (resumePolicy: skip)") {
		t.Fatalf("operator actions = %+v", acts)
	}
}

// With resumePolicy: misfire, resuming hands the held firings to the misfire policy, exactly as
// firings missed while no hub ran: skip records them (and runs the latest if it is still on
// time), run_once runs one catch-up run for the latest, under the sweep's lock.
func TestResumeAppliesMisfireWhenAsked(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, misfire string
		resumeAt      time.Duration // after 10:00; suspended at 10:01 with */15
		canaryRunning bool
		want          []string // statuses of what the resume records, in order
		wantMissed    []int
		wantFor       []time.Duration // scheduled_for of each record
		wantNext      time.Duration
	}{
		{"skip", MisfireSkip, 50 * time.Minute, false, []string{wire.SweepRunMissed}, []int{3}, []time.Duration{45 * time.Minute}, time.Hour},
		{"run_once", MisfireRunOnce, 50 * time.Minute, false, []string{wire.SweepRunRunning}, []int{3}, []time.Duration{45 * time.Minute}, time.Hour},
		{"skip, the latest still on time", MisfireSkip, 45*time.Minute + 20*time.Second, false,
			[]string{wire.SweepRunMissed, wire.SweepRunRunning}, []int{2, 0}, []time.Duration{30 * time.Minute, 45 * time.Minute}, time.Hour},
		{"run_once while the canary runs", MisfireRunOnce, 50 * time.Minute, true, []string{wire.SweepRunSkipped}, []int{3}, []time.Duration{45 * time.Minute}, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 1, t0.Add(time.Minute))
			h.apply(sweepYAML("drift", `schedule: "*/15 * * * *"`, "misfire: "+tc.misfire, "resumePolicy: misfire"))
			h.suspend("drift", "alice", wire.SuspendViaAPI, "")
			for _, at := range []time.Duration{16 * time.Minute, 31 * time.Minute, 46 * time.Minute} {
				if at < tc.resumeAt {
					h.clock.Set(t0.Add(at))
					h.pass()
				}
			}
			if rs := h.scheduled("drift"); len(rs) != 0 {
				t.Fatalf("fired while suspended: %+v", rs)
			}
			h.clock.Set(t0.Add(tc.resumeAt))
			var canary wire.SweepRun
			if tc.canaryRunning {
				canary = h.trigger("drift") // holds the lock when the resume catches up
			}
			res := h.resume("drift", "alice")
			if len(res.CatchUp) != len(tc.want) {
				t.Fatalf("Resume recorded %+v, want %v", res.CatchUp, tc.want)
			}
			for i, r := range res.CatchUp {
				if r.Status != tc.want[i] || r.MissedFirings != tc.wantMissed[i] || !r.ScheduledFor.Equal(t0.Add(tc.wantFor[i])) ||
					r.Trigger != wire.TriggerSchedule || r.LockSkipped != (tc.want[i] == wire.SweepRunSkipped) {
					t.Fatalf("record %d = %+v; want %s for %v with %d missed", i, r, tc.want[i], t0.Add(tc.wantFor[i]), tc.wantMissed[i])
				}
				if r.Status == wire.SweepRunMissed && !strings.Contains(r.Error, "while the sweep was suspended") {
					t.Fatalf("missed record says %q", r.Error)
				}
				if r.MissedFirings > 0 && !r.LockSkipped {
					var rc runContext
					if err := json.Unmarshal(h.run(r.ID).Context, &rc); err != nil || rc.Misfire == nil || rc.Misfire.Cause != causeSuspended ||
						rc.Misfire.Missed != r.MissedFirings {
						t.Fatalf("context of %s = %+v, %v", r.ID, rc.Misfire, err)
					}
				}
			}
			// A pass at the same instant finds nothing more; the schedule goes on.
			h.pass()
			if rs := h.scheduled("drift"); len(rs) != len(tc.want) {
				t.Fatalf("records after a pass = %+v", rs)
			}
			if sw, _ := h.store.GetSweep(t.Context(), "drift"); !sw.NextFireAt.Equal(t0.Add(tc.wantNext)) || sw.Suspended {
				t.Fatalf("after the resume: next %v, suspended %v", sw.NextFireAt, sw.Suspended)
			}
			if tc.canaryRunning && h.run(canary.ID).Status != wire.SweepRunRunning {
				t.Fatalf("the canary = %+v", h.run(canary.ID))
			}
		})
	}
}

// spec.suspended against the commands, in both orders: a document that sets it wins each time it
// is applied; a document that leaves it out keeps what the commands did, unless the document
// applied before had set it.
func TestApplySuspendedAndCommands(t *testing.T) {
	t.Parallel()
	sched := `schedule: "*/15 * * * *"`
	t.Run("the spec suspends, a command resumes, the same spec again suspends", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, 1, t0.Add(time.Minute))
		doc := sweepYAML("drift", sched, "suspended: true")
		res := h.apply(doc)
		if res.Outcome != "created" || !res.Suspended || res.Suspension != "suspended" || len(res.NextFirings) != 0 ||
			!strings.Contains(strings.Join(res.Warnings, "\n"), "suspended: no scheduled run fires") {
			t.Fatalf("apply suspended = %+v", res)
		}
		sw, _ := h.store.GetSweep(t.Context(), "drift")
		if !sw.Suspended || sw.Suspension == nil || sw.Suspension.Via != wire.SuspendViaSpec {
			t.Fatalf("stored = %+v", sw)
		}
		h.clock.Set(t0.Add(16 * time.Minute))
		h.pass()
		if rs := h.runs("drift"); len(rs) != 0 {
			t.Fatalf("a sweep applied suspended fired: %+v", rs)
		}
		if res := h.apply(doc); res.Outcome != "unchanged" || !res.Suspended {
			t.Fatalf("the same document again = %+v", res)
		}
		h.resume("drift", "alice")
		h.clock.Set(t0.Add(31 * time.Minute))
		h.pass()
		if rs := h.scheduled("drift"); len(rs) != 1 {
			t.Fatalf("after the resume command: %+v", rs)
		}
		res = h.apply(doc)
		if res.Outcome != "updated" || !res.Suspended || res.Suspension != "suspended" {
			t.Fatalf("re-applying suspended: true after resume = %+v", res)
		}
		h.clock.Set(t0.Add(46 * time.Minute))
		h.pass()
		if rs := h.scheduled("drift"); len(rs) != 1 {
			t.Fatalf("fired after re-applying suspended: true: %+v", rs)
		}
		// Removing the field from the document resumes: it is back to its default.
		res = h.apply(sweepYAML("drift", sched))
		if res.Outcome != "updated" || res.Suspended || res.Suspension != "resumed" || len(res.NextFirings) == 0 {
			t.Fatalf("apply without the field after it was set = %+v", res)
		}
		if sw, _ := h.store.GetSweep(t.Context(), "drift"); sw.Suspended || !sw.NextFireAt.Equal(t0.Add(time.Hour)) {
			t.Fatalf("after removing the field: %+v", sw)
		}
		acts := h.operatorActions("drift")
		var seq []string
		for _, a := range acts {
			seq = append(seq, a["action"].(string)+"/"+a["via"].(string))
		}
		if strings.Join(seq, " ") != "suspend/spec resume/cli suspend/spec resume/spec" {
			t.Fatalf("suspension events = %v", seq)
		}
	})
	t.Run("a command suspends, the spec without the field keeps it, the spec with false resumes", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, 1, t0.Add(time.Minute))
		doc := sweepYAML("drift", sched)
		h.apply(doc)
		h.suspend("drift", "bob", wire.SuspendViaCLI, "maintenance")
		res := h.apply(doc)
		if res.Outcome != "unchanged" || !res.Suspended || res.Suspension != "" || !strings.Contains(strings.Join(res.Warnings, "\n"), "stays suspended") {
			t.Fatalf("the same document after suspend = %+v", res)
		}
		// A changed document that leaves the field out keeps the suspension too (and who did it).
		res = h.apply(sweepYAML("drift", sched, "maxSeconds: 60"))
		if res.Outcome != "updated" || !res.Suspended || res.Suspension != "" {
			t.Fatalf("a changed document without the field = %+v", res)
		}
		if sw, _ := h.store.GetSweep(t.Context(), "drift"); !sw.Suspended || sw.Suspension.By != "bob" || sw.Suspension.Reason != "maintenance" {
			t.Fatalf("the suspension after apply = %+v", sw.Suspension)
		}
		// A dry run says what would happen and stores nothing.
		dry, err := h.svc.Apply(t.Context(), []byte(sweepYAML("drift", sched, "maxSeconds: 60", "suspended: false")), true)
		if err != nil || dry.Outcome != "planned" || dry.Suspended || dry.Suspension != "resumed" {
			t.Fatalf("dry run = %+v, %v", dry, err)
		}
		if sw, _ := h.store.GetSweep(t.Context(), "drift"); !sw.Suspended {
			t.Fatal("a dry run resumed the sweep")
		}
		h.clock.Set(t0.Add(50 * time.Minute))
		res = h.apply(sweepYAML("drift", sched, "maxSeconds: 60", "suspended: false"))
		if res.Outcome != "updated" || res.Suspended || res.Suspension != "resumed" || !res.NextFirings[0].Equal(t0.Add(time.Hour)) {
			t.Fatalf("suspended: false = %+v", res)
		}
		h.pass()
		if rs := h.runs("drift"); len(rs) != 0 {
			t.Fatalf("resumed by the spec with resumePolicy skip, yet caught up: %+v", rs)
		}
		// And with suspended: false in the document, a later suspend command holds until the
		// document is applied again.
		h.suspend("drift", "bob", wire.SuspendViaCLI, "")
		if res := h.apply(sweepYAML("drift", sched, "maxSeconds: 60", "suspended: false")); res.Suspended || res.Suspension != "resumed" {
			t.Fatalf("re-applying suspended: false after suspend = %+v", res)
		}
	})
	t.Run("resumed by the spec with resumePolicy misfire", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, 1, t0.Add(time.Minute))
		h.apply(sweepYAML("drift", sched, "misfire: run_once", "resumePolicy: misfire", "suspended: true"))
		h.clock.Set(t0.Add(50 * time.Minute))
		h.pass()
		h.apply(sweepYAML("drift", sched, "misfire: run_once", "resumePolicy: misfire", "suspended: false"))
		rs := h.scheduled("drift")
		if len(rs) != 1 || rs[0].Status != wire.SweepRunRunning || rs[0].MissedFirings != 3 || !rs[0].ScheduledFor.Equal(t0.Add(45*time.Minute)) {
			t.Fatalf("catch-up after the spec resumed = %+v", rs)
		}
		if sw, _ := h.store.GetSweep(t.Context(), "drift"); sw.Suspended || !sw.NextFireAt.Equal(t0.Add(time.Hour)) {
			t.Fatalf("after the catch-up: %+v", sw)
		}
		// Suspended and resumed by the spec before anything came due: nothing to catch up.
		h.apply(sweepYAML("drift", sched, "misfire: run_once", "resumePolicy: misfire", "suspended: true"))
		h.clock.Set(t0.Add(55 * time.Minute))
		res := h.apply(sweepYAML("drift", sched, "misfire: run_once", "resumePolicy: misfire", "suspended: false"))
		if res.Suspended || res.Suspension != "resumed" || len(h.scheduled("drift")) != 1 {
			t.Fatalf("resumed with nothing held = %+v, records %+v", res, h.scheduled("drift"))
		}
		if sw, _ := h.store.GetSweep(t.Context(), "drift"); sw.Suspended || !sw.NextFireAt.Equal(t0.Add(time.Hour)) {
			t.Fatalf("resumed with nothing held: %+v", sw)
		}
	})
}

// The leader's passes racing with a resume under resumePolicy: misfire never take the held
// firings first: the claim that takes them is the write that resumes the sweep, so they are
// recorded once, by the resume, as held by the suspension.
func TestResumeRacesWithTheLeader(t *testing.T) {
	t.Parallel()
	for i := range 5 {
		h := newHarness(t, 0, t0.Add(time.Minute))
		name := fmt.Sprintf("drift-%d", i)
		h.apply(sweepYAML(name, `schedule: "*/15 * * * *"`, "misfire: skip", "resumePolicy: misfire"))
		h.suspend(name, "alice", wire.SuspendViaAPI, "")
		h.clock.Set(t0.Add(50 * time.Minute))
		stop := make(chan struct{})
		passes := make(chan error, 1)
		go func() {
			defer close(passes)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := h.svc.Pass(t.Context()); err != nil {
					passes <- err
					return
				}
			}
		}()
		res := h.resume(name, "alice")
		close(stop)
		if err := <-passes; err != nil {
			t.Fatalf("a pass failed: %v", err)
		}
		h.pass()
		rs := h.scheduled(name)
		if len(res.CatchUp) != 1 || len(rs) != 1 || rs[0].ID != res.CatchUp[0].ID || rs[0].Status != wire.SweepRunMissed ||
			!strings.Contains(rs[0].Error, "while the sweep was suspended") {
			t.Fatalf("round %d: resume recorded %+v; the sweep has %+v", i, res.CatchUp, rs)
		}
	}
}

func TestSuspendRefusesBadRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 0, t0)
	h.apply(sweepYAML("drift"))
	for _, tc := range []struct {
		req   wire.SweepSuspendRequest
		field string
	}{
		{wire.SweepSuspendRequest{Via: "spec"}, "via"},
		{wire.SweepSuspendRequest{Via: "cron"}, "via"},
		{wire.SweepSuspendRequest{Reason: strings.Repeat("x", 501)}, "reason"},
		{wire.SweepSuspendRequest{By: strings.Repeat("x", 201)}, "by"},
	} {
		for _, op := range []func() error{
			func() error { _, err := h.svc.Suspend(t.Context(), "drift", tc.req); return err },
			func() error { _, err := h.svc.Resume(t.Context(), "drift", tc.req); return err },
		} {
			var fe *fault.FieldError
			if err := op(); !errors.Is(err, fault.ErrInvalid) || !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("%+v: %v, want invalid %s", tc.req, err, tc.field)
			}
		}
	}
	if sw, _ := h.store.GetSweep(t.Context(), "drift"); sw.Suspended || sw.Version != 1 {
		t.Fatalf("a refused request changed the sweep: %+v", sw)
	}
	if _, err := h.svc.Suspend(t.Context(), "ghost", wire.SweepSuspendRequest{}); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("Suspend(unknown) = %v", err)
	}
	if _, err := h.svc.Resume(t.Context(), "ghost", wire.SweepSuspendRequest{}); !errors.Is(err, fault.ErrNotFound) {
		t.Fatalf("Resume(unknown) = %v", err)
	}
}

// A resume under resumePolicy misfire whose held firing is an instant that has already fired
// (the schedule was set back onto it by an apply from a clock behind) resumes the sweep, says
// so, and records nothing for that instant a second time.
func TestResumeOntoARecordedFiring(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1, t0.Add(14*time.Minute))
	h.apply(sweepYAML("drift", `schedule: "*/15 * * * *"`, "resumePolicy: misfire"))
	h.clock.Set(t0.Add(15*time.Minute + 500*time.Millisecond))
	h.pass()
	rs := h.scheduled("drift")
	if len(rs) != 1 {
		t.Fatalf("10:15 firing = %+v", rs)
	}
	h.answer(0, answerOf(rs[0], wire.CheckClean, 0))
	h.passUntil("the 10:15 run ends", func() bool { return h.run(rs[0].ID).Final() })

	h.clock.Set(t0.Add(14*time.Minute + 30*time.Second)) // the clock steps back
	h.suspend("drift", "alice", wire.SuspendViaCLI, "")
	h.apply(sweepYAML("drift", `schedule: "*/15 * * * *"`, "resumePolicy: misfire", "timezone: Etc/UTC")) // reschedules from now: 10:15
	if sw, _ := h.store.GetSweep(t.Context(), "drift"); !sw.NextFireAt.Equal(t0.Add(15*time.Minute)) || !sw.Suspended {
		t.Fatalf("after the apply: next %v, suspended %v", sw.NextFireAt, sw.Suspended)
	}
	h.clock.Set(t0.Add(20 * time.Minute))
	res := h.resume("drift", "alice")
	if res.Outcome != "resumed" {
		t.Fatalf("Resume = %+v, want outcome resumed", res)
	}
	if sw, _ := h.store.GetSweep(t.Context(), "drift"); sw.Suspended || !sw.NextFireAt.Equal(t0.Add(30*time.Minute)) {
		t.Fatalf("after the resume: next %v, suspended %v", sw.NextFireAt, sw.Suspended)
	}
	if rs := h.scheduled("drift"); len(rs) != 1 {
		t.Fatalf("scheduled records = %+v, want only the 10:15 run", rs)
	}
}

// An apply that resumes a sweep and changes its schedule reschedules from now, so under
// resumePolicy misfire the held firings are not handed to the misfire policy: nothing is
// recorded, and the resume event must not say they were.
func TestApplyResumingWithANewScheduleTellsWhatHappened(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1, t0.Add(time.Minute))
	h.apply(sweepYAML("drift", `schedule: "*/15 * * * *"`, "misfire: run_once", "resumePolicy: misfire", "suspended: true"))
	h.clock.Set(t0.Add(50 * time.Minute)) // 10:15, 10:30 and 10:45 held
	res := h.apply(sweepYAML("drift", `schedule: "*/10 * * * *"`, "misfire: run_once", "resumePolicy: misfire", "suspended: false"))
	if res.Outcome != "updated" || res.Suspension != "resumed" || len(res.NextFirings) == 0 || !res.NextFirings[0].Equal(t0.Add(time.Hour)) {
		t.Fatalf("apply = %+v", res)
	}
	h.pass()
	if rs := h.scheduled("drift"); len(rs) != 0 {
		t.Fatalf("records after resuming with a new schedule = %+v, want none (rescheduled from now)", rs)
	}
	acts := h.operatorActions("drift")
	last := acts[len(acts)-1]
	msg, _ := last["message"].(string)
	if last["action"] != "resume" || strings.Contains(msg, "handed to misfire") || !strings.Contains(msg, "3 firings came due") ||
		!strings.Contains(msg, "not run") {
		t.Fatalf("resume event = %v", last)
	}
}
