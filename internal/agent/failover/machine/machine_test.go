package machine

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

var t0 = time.Unix(1_000_000, 0)

func cfg(self string) Config {
	return Config{Group: "pg", Self: self, FailureThreshold: 3, RecoveryThreshold: 2, FenceDeadline: 6 * time.Second,
		FailoverTimeout: 12 * time.Second, Eligible: true, HasHealth: true, HasDemote: true}
}

func noDemote(self string) Config {
	c := cfg(self)
	c.HasDemote = false
	return c
}

// kinds renders actions compactly: "report:a->b", "run:onFence", "promote@5", "write:fenced".
func kinds(acts []Action) string {
	var out []string
	for _, a := range acts {
		switch a.Kind {
		case Report:
			out = append(out, "report:"+string(a.Transition.From)+"->"+string(a.Transition.To))
		case RunHook:
			out = append(out, "run:"+a.Hook)
		case Promote:
			out = append(out, "promote@"+strconv.FormatUint(a.Rev, 10))
		case WriteRecord:
			out = append(out, "write:"+string(a.Record.State)+handover(a.Record))
		}
	}
	return strings.Join(out, " ")
}

func handover(r Record) string {
	if r.HandoverTo != "" {
		return ">" + r.HandoverTo
	}
	return ""
}

func want(t *testing.T, what string, acts []Action, w string) {
	t.Helper()
	if got := kinds(acts); got != w {
		t.Fatalf("%s: actions %q, want %q", what, got, w)
	}
}

func primaryRec(who string, epoch uint64, s State) Record {
	return Record{Primary: who, Epoch: epoch, State: s}
}

// healthyPrimary returns a member that reconciled as the primary of epoch 7 at t0.
func healthyPrimary(t *testing.T) *Machine {
	t.Helper()
	m := New(cfg("a"))
	want(t, "start", m.Start(Observation{Rev: 9, Record: primaryRec("a", 7, Healthy)}, t0), "report:initializing->activating write:activating")
	want(t, "a health check before the write landed", m.HealthDone(true, 0, t0), "")
	want(t, "confirmed", m.HeartbeatDone(true, false, t0, t0), "run:healthCheck")
	want(t, "health", m.HealthDone(true, 0, t0), "run:onPromote")
	want(t, "promote hook", m.HookDone(HookOnPromote, true, t0), "report:activating->healthy")
	if m.Role() != Primary || m.Epoch() != 7 {
		t.Fatalf("role %s epoch %d", m.Role(), m.Epoch())
	}
	return m
}

func TestStartupReconciliationResumesWithoutFailover(t *testing.T) {
	m := healthyPrimary(t)
	if r := m.Record(); r.Primary != "a" || r.Epoch != 7 || r.State != Healthy {
		t.Fatalf("heartbeat record %+v", r)
	}
	// A restarted primary whose confirming write loses (a replica promoted meanwhile) never
	// activates: it fences (its workload may be running from before) and demotes.
	m2 := New(cfg("a"))
	m2.Start(Observation{Rev: 9, Record: primaryRec("a", 7, Healthy)}, t0)
	want(t, "confirmation lost", m2.HeartbeatDone(false, true, t0, t0), "report:activating->fencing run:onFence")
}

func TestStartAsReplicaAndBootstrap(t *testing.T) {
	m := New(cfg("b"))
	want(t, "start on a primary", m.Start(Observation{Rev: 3, Record: primaryRec("a", 2, Healthy)}, t0), "run:onDemote")
	want(t, "following", m.HookDone(HookOnDemote, true, t0), "report:initializing->watching")
	if m.Role() != Replica || m.Epoch() != 2 {
		t.Fatalf("role %s epoch %d", m.Role(), m.Epoch())
	}
	c := cfg("b")
	c.HasDemote = false
	want(t, "start on a primary without onDemote", New(c).Start(Observation{Rev: 3, Record: primaryRec("a", 2, Healthy)}, t0), "report:initializing->watching")
	mf := New(cfg("b"))
	mf.Start(Observation{Rev: 3, Record: primaryRec("a", 2, Healthy)}, t0)
	want(t, "onDemote fails at start", mf.HookDone(HookOnDemote, false, t0), "report:initializing->failed")
	m2 := New(cfg("b"))
	want(t, "start on nothing", m2.Start(Observation{Absent: true}, t0), "report:initializing->watching report:watching->promoting promote@0")
	want(t, "won", m2.PromoteDone(true, 1, t0), "report:promoting->activating run:onPromote")
	if m2.Epoch() != 1 || m2.Role() != Primary {
		t.Fatalf("epoch %d role %s", m2.Epoch(), m2.Role())
	}
	m3 := New(cfg("c"))
	m3.Start(Observation{Absent: true}, t0)
	want(t, "lost", m3.PromoteDone(false, 0, t0), "report:promoting->watching")
}

func TestReplicaPromotesAfterFailoverTimeoutAndNotBefore(t *testing.T) {
	m := New(noDemote("b"))
	m.Start(Observation{Rev: 3, Record: primaryRec("a", 2, Healthy)}, t0)
	// The primary's heartbeats move the revision: the count restarts each time.
	want(t, "new revision", m.Observe(Observation{Rev: 4, Record: primaryRec("a", 2, Healthy)}, t0.Add(11*time.Second)), "")
	want(t, "just before", m.Tick(t0.Add(11*time.Second+12*time.Second-time.Millisecond)), "")
	// Re-reading the same revision does not restart it; a store time never enters.
	want(t, "same revision", m.Observe(Observation{Rev: 4, Record: primaryRec("a", 2, Healthy)}, t0.Add(20*time.Second)), "")
	acts := m.Tick(t0.Add(23 * time.Second))
	want(t, "at the timeout", acts, "report:watching->promoting promote@4")
	if acts[0].Transition.Reason == "" || acts[0].Transition.Group != "pg" || acts[0].Transition.Member != "b" || acts[0].Transition.Epoch != 2 {
		t.Fatalf("transition %+v", acts[0].Transition)
	}
}

func TestReplicaDoesNotPromote(t *testing.T) {
	start := func(c Config) *Machine {
		c.HasDemote = false
		m := New(c)
		m.Start(Observation{Rev: 3, Record: primaryRec("a", 2, Healthy)}, t0)
		return m
	}
	late := t0.Add(time.Hour)
	m := start(cfg("b"))
	m.SetPaused(true)
	want(t, "paused", m.Tick(late), "")
	m.SetPaused(false)
	want(t, "resumed", m.Tick(late), "report:watching->promoting promote@3")

	c := cfg("b")
	c.Eligible = false
	want(t, "noFailover", start(c).Tick(late), "")

	c = cfg("b")
	c.MaxLag = 100
	m = start(c)
	m.HealthDone(true, 101, t0)
	want(t, "lagging", m.Tick(late), "")
	want(t, "caught up", m.HealthDone(true, 100, late), "report:watching->promoting promote@3")

	m = start(cfg("b"))
	want(t, "unhealthy", m.HealthDone(false, 0, late), "")
	want(t, "healthy again", m.HealthDone(true, 0, late), "report:watching->promoting promote@3")

	m = start(cfg("b"))
	want(t, "corrupt", m.Observe(Observation{Rev: 5, Corrupt: true}, t0), "report:watching->failed")
	want(t, "corrupt, later", m.Tick(late), "")
	m.HeartbeatDone(true, false, late, late)
	m.HeartbeatDone(true, false, late, late)
	if m.State() != Failed {
		t.Fatalf("a replica left failed while the record is corrupt: %s", m.State())
	}
	m2 := New(noDemote("b"))
	want(t, "corrupt at start", m2.Start(Observation{Rev: 5, Corrupt: true}, t0), "report:initializing->failed")
	want(t, "corrupt at start, later", m2.Tick(late), "")

	c = cfg("b")
	c.RankDelay = 2 * time.Second
	m = start(c)
	want(t, "second by rank", m.Tick(t0.Add(13*time.Second)), "")
	want(t, "second by rank, later", m.Tick(t0.Add(14*time.Second)), "report:watching->promoting promote@3")
}

func TestReplicaFailsOnItsOwnHeartbeatsAndRecovers(t *testing.T) {
	m := New(noDemote("b"))
	m.Start(Observation{Rev: 3, Record: primaryRec("a", 2, Healthy)}, t0)
	m.HeartbeatDone(false, false, t0, t0)
	m.HeartbeatDone(false, false, t0, t0)
	want(t, "third failure", m.HeartbeatDone(false, false, t0, t0), "report:watching->failed")
	want(t, "failed: not eligible", m.Tick(t0.Add(time.Hour)), "")
	want(t, "one success", m.HeartbeatDone(true, false, t0, t0), "")
	want(t, "recovered", m.HeartbeatDone(true, false, t0, t0), "report:failed->watching")
}

func TestHeartbeatConflictFencesAtOnceThenYields(t *testing.T) {
	m := healthyPrimary(t)
	acts := m.HeartbeatDone(false, true, t0, t0)
	want(t, "conflict", acts, "report:healthy->fencing run:onFence")
	if m.Record().State != Fencing {
		t.Fatal("a replaced primary reports " + string(m.Record().State))
	}
	// The fence is the first hook; an onPromote still finishing is not waited for.
	want(t, "stale onPromote", m.HookDone(HookOnPromote, true, t0), "")
	want(t, "fenced", m.HookDone(HookOnFence, true, t0), "report:fencing->fenced report:fenced->yielding run:onDemote")
	want(t, "demoted", m.HookDone(HookOnDemote, true, t0), "report:yielding->watching")
	if m.Role() != Replica {
		t.Fatal("not a replica after demotion")
	}
}

func TestReturningOldPrimarySeesNewerEpoch(t *testing.T) {
	m := healthyPrimary(t)
	want(t, "newer epoch", m.Observe(Observation{Rev: 30, Record: primaryRec("b", 0, Activating)}, t0), "report:healthy->fencing run:onFence")
	want(t, "fenced", m.HookDone(HookOnFence, true, t0), "report:fencing->fenced report:fenced->yielding run:onDemote")
	want(t, "demoted", m.HookDone(HookOnDemote, true, t0), "report:yielding->watching")
	if m.Epoch() != 30 {
		t.Fatalf("epoch %d, want 30 (the new primary's)", m.Epoch())
	}
}

func TestFailureThresholdAndTransientErrors(t *testing.T) {
	m := healthyPrimary(t)
	m.HeartbeatDone(false, false, t0, t0.Add(time.Second))
	m.HeartbeatDone(false, false, t0, t0.Add(2*time.Second))
	want(t, "a success resets", m.HeartbeatDone(true, false, t0.Add(2*time.Second), t0.Add(2*time.Second)), "")
	m.HeartbeatDone(false, false, t0, t0.Add(3*time.Second))
	m.HealthDone(false, 0, t0.Add(3*time.Second))
	want(t, "third failure", m.HeartbeatDone(false, false, t0, t0.Add(4*time.Second)), "report:healthy->failed report:failed->fencing run:onFence")
}

func TestWatchdogFencesWithoutAnyAnswer(t *testing.T) {
	m := healthyPrimary(t)
	m.HeartbeatDone(true, false, t0.Add(time.Second), t0.Add(time.Second))
	want(t, "before", m.Tick(t0.Add(7*time.Second-time.Millisecond)), "")
	want(t, "deadline", m.Tick(t0.Add(7*time.Second)), "report:healthy->fencing run:onFence")
}

func TestFenceFailureEscalatesAndRetries(t *testing.T) {
	m := healthyPrimary(t)
	m.Tick(t0.Add(time.Minute))
	want(t, "fence fails", m.HookDone(HookOnFence, false, t0), "report:fencing->fence_failed run:onFence")
	want(t, "fence again", m.HookDone(HookOnFence, true, t0), "report:fence_failed->fenced")
}

func TestFencedRecoversOnlyAfterConsecutiveSuccesses(t *testing.T) {
	m := healthyPrimary(t)
	m.Tick(t0.Add(time.Minute))
	m.HookDone(HookOnFence, true, t0)
	now := t0.Add(time.Minute)
	want(t, "one", m.HeartbeatDone(true, false, now, now), "")
	m.HealthDone(false, 0, now) // a failing health check restarts the count
	want(t, "one again", m.HeartbeatDone(true, false, now, now), "")
	want(t, "two", m.HeartbeatDone(true, false, now, now), "report:fenced->recovering write:recovering")
	want(t, "recovering written", m.HeartbeatDone(true, false, now, now), "run:onPromote")
	want(t, "healthy", m.HookDone(HookOnPromote, true, now), "report:recovering->healthy")
}

// The fence slower than the recovery: a fence that is running when the member is replaced is
// followed by nothing but the demotion; an onPromote that ends after a fence began is ignored.
func TestSlowHookNeverLandsAfterTheTransition(t *testing.T) {
	m := New(cfg("b"))
	m.Start(Observation{Absent: true}, t0)
	m.PromoteDone(true, 1, t0) // onPromote is running
	want(t, "replaced while activating", m.HeartbeatDone(false, true, t0, t0), "report:activating->fencing run:onFence")
	want(t, "the late onPromote", m.HookDone(HookOnPromote, true, t0), "")
	if m.State() != Fencing {
		t.Fatalf("state %s", m.State())
	}
}

func TestHandover(t *testing.T) {
	m := healthyPrimary(t)
	if _, ok := m.Handover("a", "to itself"); ok {
		t.Fatal("handover to itself accepted")
	}
	acts, ok := m.Handover("b", "switchover")
	if !ok {
		t.Fatal("handover refused")
	}
	want(t, "handover", acts, "report:healthy->fencing run:onFence")
	if r := m.Record(); r.HandoverTo != "" {
		t.Fatalf("a heartbeat while fencing names the successor: %+v (it may promote before the fence landed)", r)
	}
	want(t, "fenced", m.HookDone(HookOnFence, true, t0), "report:fencing->fenced write:fenced>b")

	target := New(noDemote("b"))
	target.Start(Observation{Rev: 9, Record: primaryRec("a", 7, Healthy)}, t0)
	target.SetPaused(true) // a switchover is not automatic: a pause does not hold it
	handed := Record{Primary: "a", Epoch: 7, State: Fenced, HandoverTo: "b"}
	want(t, "target", target.Observe(Observation{Rev: 10, Record: handed}, t0), "report:watching->promoting promote@10")
	other := New(noDemote("c"))
	other.Start(Observation{Rev: 9, Record: primaryRec("a", 7, Healthy)}, t0)
	want(t, "not the target", other.Observe(Observation{Rev: 10, Record: handed}, t0), "")
	early := New(noDemote("b"))
	early.Start(Observation{Rev: 9, Record: primaryRec("a", 7, Healthy)}, t0)
	want(t, "named before the fence landed", early.Observe(Observation{Rev: 10, Record: Record{Primary: "a", Epoch: 7, State: Fencing, HandoverTo: "b"}}, t0), "")
}

func TestReplicaPromotesWhenPrimaryStaysFenced(t *testing.T) {
	m := New(noDemote("b"))
	m.Start(Observation{Rev: 3, Record: primaryRec("a", 2, Healthy)}, t0)
	for i := range 12 {
		now := t0.Add(time.Duration(i+1) * time.Second)
		want(t, "fenced heartbeats", m.Observe(Observation{Rev: uint64(4 + i), Record: primaryRec("a", 2, Fenced)}, now), "")
	}
	want(t, "fenced for the timeout", m.Observe(Observation{Rev: 16, Record: primaryRec("a", 2, Fenced)}, t0.Add(13*time.Second)),
		"report:watching->promoting promote@16")
	// A fence that failed is no reason: the old primary may still serve.
	m2 := New(noDemote("b"))
	m2.Start(Observation{Rev: 3, Record: primaryRec("a", 2, FenceFailed)}, t0)
	want(t, "fence_failed", m2.Observe(Observation{Rev: 20, Record: primaryRec("a", 2, FenceFailed)}, t0.Add(time.Hour)), "")
	// Nor is a fence_failed record that stops changing (the old primary cut off, or dead, while
	// its workload may still serve): a person fences it by hand and restarts its member.
	want(t, "fence_failed unchanged", m2.Tick(t0.Add(2*time.Hour)), "")
}

func TestCorruptRecordFencesPrimary(t *testing.T) {
	m := healthyPrimary(t)
	want(t, "corrupt", m.Observe(Observation{Rev: 10, Corrupt: true}, t0), "report:healthy->fencing run:onFence")
}

func TestPromotedPrimaryWatchdogCountsFromThePromotingWrite(t *testing.T) {
	m := New(noDemote("b"))
	m.Start(Observation{Rev: 3, Record: primaryRec("a", 2, Healthy)}, t0)
	sent := t0.Add(12 * time.Second)
	want(t, "timeout", m.Tick(sent), "report:watching->promoting promote@3")
	// The store applied the promotion at once; its answer came back just inside the call's
	// deadline. The other replicas time the new revision from when they saw it, so the
	// watchdog must count from when the promoting write was sent, as for any heartbeat.
	want(t, "won, answered late", m.PromoteDone(true, 4, sent.Add(1900*time.Millisecond)), "report:promoting->activating run:onPromote")
	want(t, "just before the deadline", m.Tick(sent.Add(6*time.Second-time.Millisecond)), "")
	want(t, "no heartbeat landed since", m.Tick(sent.Add(6*time.Second)), "report:activating->fencing run:onFence")
}

func TestDeletedRecordUnderALivePrimary(t *testing.T) {
	// An operator deletes the record to force an election while the primary is healthy.
	p := healthyPrimary(t)
	want(t, "the primary sees the delete marker", p.Observe(Observation{Rev: 12, Absent: true}, t0),
		"report:healthy->fencing run:onFence")
	want(t, "and again, fencing", p.Observe(Observation{Absent: true}, t0), "")
	// A replica that knew a primary does not bootstrap at once on the marker: that primary may
	// be serving until it sees the delete or its next heartbeat conflicts (or, cut off, until
	// its watchdog fenced it), which the timing rule bounds by failoverTimeout.
	r := New(noDemote("b"))
	r.Start(Observation{Rev: 9, Record: primaryRec("a", 7, Healthy)}, t0)
	want(t, "deleted", r.Observe(Observation{Rev: 12, Absent: true}, t0.Add(time.Second)), "")
	want(t, "read absent", r.Observe(Observation{Absent: true}, t0.Add(2*time.Second)), "")
	want(t, "before the timeout", r.Tick(t0.Add(14*time.Second-time.Millisecond)), "")
	want(t, "after the timeout", r.Tick(t0.Add(14*time.Second)), "report:watching->promoting promote@0")
	// A group that never had a primary still bootstraps at once (TestStartAsReplicaAndBootstrap).
}
