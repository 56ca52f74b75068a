package runner

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"godwit.dev/godwit/internal/agent/execute"
	"godwit.dev/godwit/internal/agent/health"
	"godwit.dev/godwit/internal/wire"
)

func TestApplyThreeStepsSucceeds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var steps []wire.StepSpec
	for _, n := range []string{"0", "1", "2"} {
		s := step("step-"+n, `echo "$GODWIT_MIGRATION $GODWIT_STEP $GODWIT_STEP_INDEX $GODWIT_ATTEMPT $GODWIT_ACTION $GODWIT_PHASE `+
			`$GODWIT_FROM_VERSION $GODWIT_TO_VERSION $GODWIT_AGENT_ID" > env-`+n+`; touch done-`+n)
		s.Detect = "test ! -f done-" + n
		s.Verify = `test -f done-` + n + ` && echo "$GODWIT_PHASE" > verify-` + n
		steps = append(steps, s)
	}
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, steps...)))
	got := b.waitState("m1", 1, stateSucceeded)
	b.waitEvent("m1", wire.EventExecutionSucceeded)

	if !slices.Equal(got.Applied, []int{0, 1, 2}) || got.Error != "" || got.Generation != 1 || got.Action != wire.ActionApply {
		t.Fatalf("observed %+v", got)
	}
	if env := strings.TrimSpace(b.read("env-1")); env != "m1 step-1 1 1 apply run 1.0 2.0 agent-1" {
		t.Fatalf("environment of step 1's run: %q", env)
	}
	if v := strings.TrimSpace(b.read("verify-2")); v != "verify" {
		t.Fatalf("GODWIT_PHASE of verify = %q", v)
	}

	events := b.sinks.eventsFor("m1")
	want := []string{}
	for range 3 {
		want = append(want, wire.EventDetectionSucceeded, wire.EventMigrationStepStarted, wire.EventVerificationSucceeded)
	}
	want = append(want, wire.EventExecutionSucceeded)
	if !slices.Equal(types(events), want) {
		t.Fatalf("events %v, want %v", types(events), want)
	}
	ids := map[string]bool{}
	for _, e := range events {
		if err := e.Validate("agent-1"); err != nil {
			t.Fatalf("event does not validate: %v", err)
		}
		if e.Severity != wire.SeverityInfo || e.Data.AgentID != "agent-1" || e.Data.Attempt != 1 ||
			e.Data.FromVersion != "1.0" || e.Data.ToVersion != "2.0" || e.Data.System == nil || e.Data.System.Hostname != "node-1" {
			t.Fatalf("event %+v", e)
		}
		ids[e.ID] = true
	}
	if len(ids) != len(events) {
		t.Fatal("event ids are not unique")
	}
	if d := events[1].Data; d.Step != "step-0" || events[1].Subject != "migration/m1/step/0" {
		t.Fatalf("step.started %+v subject %q", d, events[1].Subject)
	}
	if d := events[2].Data; d.ExitCode == nil || *d.ExitCode != 0 || d.Step != "step-0" {
		t.Fatalf("verification.succeeded data %+v", d)
	}
	var extra map[string]any
	if err := json.Unmarshal(events[len(events)-1].Data.Extra, &extra); err != nil || extra["generation"] != 1.0 {
		t.Fatalf("extra %s (%v)", events[len(events)-1].Data.Extra, err)
	}

	// The published observed state catches up with the journal, and no event is left behind.
	waitFor(t, "the published observed state", func() bool {
		st, ok := b.sinks.lastObserved()
		return ok && len(st.Assignments) == 1 && st.Assignments[0].State == stateSucceeded
	}, nil)
	st, _ := b.sinks.lastObserved()
	if st.AgentID != "agent-1" || !slices.Equal(st.Assignments[0].Applied, []int{0, 1, 2}) {
		t.Fatalf("published %+v", st)
	}
	if pending, err := b.r.j.pendingEvents(context.Background()); err != nil || len(pending) != 0 {
		t.Fatalf("pending events %d (%v)", len(pending), err)
	}
}

func TestDetectSkipsAndNotNeeded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	skip := step("already", "touch ran-0")
	skip.Detect = "exit 1"
	need := step("needed", "touch ran-1")
	need.Detect = "exit 0"
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, skip, need)))
	got := b.waitState("m1", 1, stateSucceeded)
	b.waitEvent("m1", wire.EventExecutionSucceeded)
	if !slices.Equal(got.Applied, []int{1}) || b.exists("ran-0") || !b.exists("ran-1") {
		t.Fatalf("observed %+v, ran-0 %v ran-1 %v", got, b.exists("ran-0"), b.exists("ran-1"))
	}
	ev := b.sinks.eventsFor("m1")
	if !strings.Contains(ev[0].Data.Message, "already done") || ev[0].Type != wire.EventDetectionSucceeded {
		t.Fatalf("first event %+v", ev[0])
	}

	skip2 := step("also-done", "touch ran-2")
	skip2.Detect = "exit 1"
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, skip, need),
		assignment("m2", 1, 1, wire.ActionApply, skip, skip2)))
	got = b.waitState("m2", 1, stateNotNeeded)
	b.waitEvent("m2", wire.EventDetectionNotNeeded)
	if len(got.Applied) != 0 || b.exists("ran-2") {
		t.Fatalf("observed %+v", got)
	}
	ev = b.sinks.eventsFor("m2")
	want := []string{wire.EventDetectionSucceeded, wire.EventDetectionSucceeded, wire.EventDetectionNotNeeded}
	if !slices.Equal(types(ev), want) || ev[2].Severity != wire.SeverityInfo {
		t.Fatalf("events %v, want %v", types(ev), want)
	}
}

func TestFailingStep(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// The first step fails: nothing else was applied, so it is a plain failure.
	b.r.Desired(desired(1, assignment("m0", 1, 1, wire.ActionApply, step("only", "echo no disk >&2; exit 2"))))
	got := b.waitState("m0", 1, stateFailed)
	e := b.waitEvent("m0", wire.EventExecutionFailed)
	if e.Severity != wire.SeverityError || got.ExitCode == nil || *got.ExitCode != 2 {
		t.Fatalf("event %+v observed %+v", e, got)
	}

	// A later step fails after an earlier one was applied: partial.
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply,
		step("ok", "touch ran-0"), step("boom", "echo some output; echo disk full >&2; exit 3"), step("never", "touch ran-2"))))
	got = b.waitState("m1", 1, stateFailed)
	if got.Step != 1 || got.StepName != "boom" || !slices.Equal(got.Applied, []int{0, 1}) || got.ExitCode == nil || *got.ExitCode != 3 ||
		!strings.Contains(got.Error, "exited with code 3") || !strings.Contains(got.Error, "disk full") || b.exists("ran-2") {
		t.Fatalf("observed %+v", got)
	}
	e = b.waitEvent("m1", wire.EventExecutionPartial)
	d := e.Data
	if e.Severity != wire.SeverityError || d.Step != "boom" || d.ExitCode == nil || *d.ExitCode != 3 ||
		!strings.Contains(d.Error, "disk full") || !strings.Contains(d.OutputTail, "--- stderr ---\ndisk full") ||
		!strings.Contains(d.OutputTail, "some output") {
		t.Fatalf("partial event %+v", e)
	}
}

func TestVerifyFailure(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := step("check", "touch ran")
	s.Verify = "echo not there >&2; exit 4"
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, s, step("never", "touch ran-1"))))
	got := b.waitState("m1", 1, stateFailed)
	e := b.waitEvent("m1", wire.EventVerificationFailed)
	if e.Severity != wire.SeverityError || e.Data.ExitCode == nil || *e.Data.ExitCode != 4 || !strings.Contains(e.Data.Error, "verify") ||
		!strings.Contains(got.Error, "not there") || !slices.Equal(got.Applied, []int{0}) || b.exists("ran-1") {
		t.Fatalf("event %+v observed %+v", e, got)
	}
}

func TestMissingCommand(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, step("ghost", "godwit-no-such-command-xyz --now"))))
	got := b.waitState("m1", 1, stateFailed)
	e := b.waitEvent("m1", wire.EventExecutionFailed)
	if got.ExitCode == nil || *got.ExitCode != 127 || e.Data.ExitCode == nil || *e.Data.ExitCode != 127 ||
		!strings.Contains(e.Data.OutputTail, "not found") || !strings.Contains(e.Data.Error, "command not found") {
		t.Fatalf("observed %+v event %+v", got, e.Data)
	}
}

func TestRollbackRunsAppliedStepsInReverse(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s0 := step("s0", "true")
	s0.Rollback = `echo "rb-0 $GODWIT_ACTION $GODWIT_PHASE" >> rb.log`
	s1 := step("s1-already-done", "true")
	s1.Detect = "exit 1"
	s1.Rollback = "echo rb-1 >> rb.log"
	s2 := step("s2-no-rollback", "true")
	s3 := step("s3-fails", "exit 9")
	s3.Rollback = "echo rb-3 >> rb.log"
	s4 := step("s4-never", "true")
	s4.Rollback = "echo rb-4 >> rb.log"
	steps := []wire.StepSpec{s0, s1, s2, s3, s4}
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, steps...)))
	got := b.waitState("m1", 1, stateFailed)
	if !slices.Equal(got.Applied, []int{0, 2, 3}) {
		t.Fatalf("observed %+v", got)
	}

	b.r.Desired(desired(1, assignment("m1", 1, 2, wire.ActionRollback, steps...)))
	got = b.waitState("m1", 1, stateRolledBack)
	if log := b.read("rb.log"); log != "rb-3\nrb-0 rollback rollback\n" {
		t.Fatalf("rollbacks ran %q", log)
	}
	if !slices.Equal(got.RolledBack, []int{3, 0}) || got.Generation != 2 || got.Action != wire.ActionRollback || got.Error != "" {
		t.Fatalf("observed %+v", got)
	}
	e := b.waitEvent("m1", wire.EventRollbackSucceeded)
	if e.Severity != wire.SeverityInfo || !strings.Contains(e.Data.Message, "left as they are: 2 (s2-no-rollback)") {
		t.Fatalf("event %+v", e)
	}
}

func TestRollbackFailedThenResumes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var steps []wire.StepSpec
	for i, rb := range []string{
		"echo rb-0 >> rb.log",
		"if [ -f fixed ]; then echo rb-1 >> rb.log; else echo cannot undo >&2; exit 5; fi",
		"echo rb-2 >> rb.log",
	} {
		s := step("s"+string(rune('0'+i)), "true")
		s.Rollback = rb
		steps = append(steps, s)
	}
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, steps...)))
	b.waitState("m1", 1, stateSucceeded)

	b.r.Desired(desired(1, assignment("m1", 1, 2, wire.ActionRollback, steps...)))
	got := b.waitState("m1", 1, stateRollbackFailed)
	if b.read("rb.log") != "rb-2\n" || !slices.Equal(got.RolledBack, []int{2}) || got.Step != 1 ||
		!strings.Contains(got.Error, "cannot undo") || got.ExitCode == nil || *got.ExitCode != 5 {
		t.Fatalf("observed %+v, rb.log %q", got, b.read("rb.log"))
	}
	e := b.waitEvent("m1", wire.EventRollbackFailed)
	if e.Severity != wire.SeverityError || e.Data.Step != "s1" || !strings.Contains(e.Data.OutputTail, "cannot undo") {
		t.Fatalf("event %+v", e)
	}

	b.touch("fixed")
	b.r.Desired(desired(1, assignment("m1", 1, 3, wire.ActionRollback, steps...)))
	got = b.waitState("m1", 1, stateRolledBack)
	if log := b.read("rb.log"); log != "rb-2\nrb-1\nrb-0\n" {
		t.Fatalf("resumed rollback ran %q; want step 2 not again", log)
	}
	if !slices.Equal(got.RolledBack, []int{2, 1, 0}) || got.Generation != 3 {
		t.Fatalf("observed %+v", got)
	}
}

// The same generation again, even after a restart, is answered from the journal.
func TestDuplicateGenerationRunsNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m1 := assignment("m1", 1, 1, wire.ActionApply, step("count", "echo x >> count-1"))
	b.r.Desired(desired(1, m1))
	b.waitState("m1", 1, stateSucceeded)
	b.waitEvent("m1", wire.EventExecutionSucceeded)
	nEvents := len(b.sinks.eventsFor("m1"))

	// The same assignment in a new document; m2 after it proves the runner has looked at m1.
	b.r.Desired(desired(2, m1, assignment("m2", 1, 1, wire.ActionApply, step("count", "echo x >> count-2"))))
	b.waitState("m2", 1, stateSucceeded)
	b.restart()
	b.r.Desired(desired(3, m1, assignment("m2", 1, 1, wire.ActionApply, step("count", "echo x >> count-2")),
		assignment("m3", 1, 1, wire.ActionApply, step("sentinel", "true"))))
	b.waitState("m3", 1, stateSucceeded)
	b.waitEvent("m3", wire.EventExecutionSucceeded)

	if b.read("count-1") != "x\n" || b.read("count-2") != "x\n" {
		t.Fatalf("counters %q %q: a duplicate ran again", b.read("count-1"), b.read("count-2"))
	}
	if n := len(b.sinks.eventsFor("m1")); n != nEvents {
		t.Fatalf("m1 produced %d events, then %d", nEvents, n)
	}
	if got, _ := b.observedOf("m1"); got.State != stateSucceeded || got.Generation != 1 {
		t.Fatalf("observed %+v", got)
	}
}

func TestStaleDesiredIsIgnored(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.r.Desired(desired(5, assignment("m1", 2, 1, wire.ActionApply, step("a2", "echo x >> m1-a2")),
		assignment("m2", 1, 3, wire.ActionApply, step("s", "echo x >> m2"))))
	b.waitState("m1", 2, stateSucceeded)
	b.waitState("m2", 1, stateSucceeded)

	// An older attempt and an older generation, in a document of the same epoch.
	b.r.Desired(desired(5, assignment("m1", 1, 9, wire.ActionApply, step("a1", "echo x >> m1-a1")),
		assignment("m2", 1, 2, wire.ActionRollback, step("s", "true")),
		assignment("sentinel", 1, 1, wire.ActionApply, step("s", "true"))))
	b.waitState("sentinel", 1, stateSucceeded)
	if b.exists("m1-a1") {
		t.Fatal("a stale attempt ran")
	}
	if got, _ := b.observedOf("m2"); got.State != stateSucceeded || got.Generation != 3 {
		t.Fatalf("a stale generation changed m2: %+v", got)
	}
	if got, _ := b.observedOf("m1"); got.Attempt != 2 {
		t.Fatalf("m1 observed %+v", got)
	}
	b.waitLog("its attempt is older")
	b.waitLog("its generation is older")

	// A lower epoch is a deposed leader's late write: ignored, also after a restart.
	late := desired(4, assignment("m4", 1, 1, wire.ActionApply, step("s", "touch m4")))
	b.r.Desired(late)
	b.waitLog("older epoch")
	b.restart()
	b.r.Desired(late)
	b.waitLog("older epoch")
	b.r.Desired(desired(6, assignment("sentinel2", 1, 1, wire.ActionApply, step("s", "true"))))
	b.waitState("sentinel2", 1, stateSucceeded)
	if b.exists("m4") {
		t.Fatal("a document from an older epoch was acted on")
	}
	if _, ok := b.observedOf("m4"); ok {
		t.Fatal("m4 is in the observed state")
	}
}

// A restart in the middle of a step's run, for a step with detect: detect finds the step done,
// and the non-idempotent run has run exactly once.
func TestRecoveryWithDetectRunsStepOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := step("once", "echo x >> count; touch running; sleep 30")
	s.Detect = "if [ -s count ]; then exit 1; fi; exit 0"
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, s, step("next", "echo x >> next"))))
	waitFor(t, "the step to be running", func() bool { return b.exists("running") }, nil)

	b.stop() // the agent goes down mid-step
	got, _ := b.observedOf("m1")
	if got.State != stateApplying || !slices.Equal(got.Applied, []int{0}) {
		t.Fatalf("after the stop: %+v", got)
	}
	unfinished, _ := b.r.j.unfinished(context.Background())
	if len(unfinished) != 1 || !unfinished[0].InFlight || unfinished[0].Phase != phaseRun {
		t.Fatalf("journal after the stop: %+v", unfinished)
	}

	// No desired state is needed to recover: the journal has everything (the hub may be down).
	if err := b.r.Close(); err != nil {
		t.Fatal(err)
	}
	b.open()
	b.start()
	got = b.waitState("m1", 1, stateSucceeded)
	if c := b.read("count"); c != "x\n" {
		t.Fatalf("count = %q: the step ran again", c)
	}
	b.waitEvent("m1", wire.EventExecutionSucceeded)
	if b.read("next") != "x\n" || !slices.Equal(got.Applied, []int{0, 1}) {
		t.Fatalf("observed %+v", got)
	}
	var recovered bool
	for _, e := range b.sinks.eventsFor("m1") {
		recovered = recovered || (e.Type == wire.EventDetectionSucceeded && strings.Contains(e.Data.Message, "not run again"))
	}
	if !recovered {
		t.Fatalf("no recovery event among %v", types(b.sinks.eventsFor("m1")))
	}
	// The audit trail says the first run never reported.
	var abandoned int
	if err := b.r.j.db.QueryRow("SELECT count(*) FROM commands WHERE error LIKE 'no result%'").Scan(&abandoned); err != nil || abandoned != 1 {
		t.Fatalf("abandoned commands %d (%v)", abandoned, err)
	}
}

// Without detect, the interrupted step runs again: steps without detect must be idempotent.
func TestRecoveryWithoutDetectRunsStepAgain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := step("again", `echo x >> count; [ "$(wc -l < count)" -ge 2 ] || { touch running; sleep 30; }`)
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, s)))
	waitFor(t, "the step to be running", func() bool { return b.exists("running") }, nil)
	b.restart()
	b.waitState("m1", 1, stateSucceeded)
	b.waitEvent("m1", wire.EventExecutionSucceeded)
	if c := b.read("count"); c != "x\nx\n" {
		t.Fatalf("count = %q, want the step run twice", c)
	}
	var again bool
	for _, e := range b.sinks.eventsFor("m1") {
		again = again || (e.Type == wire.EventMigrationStepStarted && strings.Contains(e.Data.Message, "must be idempotent"))
	}
	if !again {
		t.Fatal("no event says the step was started again")
	}
}

func TestCancelStopsLongCommand(t *testing.T) {
	t.Parallel()
	b := setup(t)
	long := step("long", "touch started; sleep 30; touch finished")
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, long, step("never", "touch never"))))
	waitFor(t, "the command to start", func() bool { return b.exists("started") }, nil)

	b.r.Desired(desired(1, assignment("m1", 1, 2, wire.ActionCancel, long)))
	got := b.waitState("m1", 1, stateFailed)
	if got.Error != errCancelled || got.Generation != 2 || got.Action != wire.ActionCancel || b.exists("finished") || b.exists("never") {
		t.Fatalf("observed %+v", got)
	}
	e := b.waitEvent("m1", wire.EventMigrationStepCancelled)
	if e.Severity != wire.SeverityWarning || e.Data.Error != errCancelled || e.Data.Step != "long" {
		t.Fatalf("event %+v", e)
	}
	var interrupted string
	if err := b.r.j.db.QueryRow("SELECT error FROM commands WHERE phase = 'run'").Scan(&interrupted); err != nil ||
		!strings.Contains(interrupted, "cancel at generation 2") {
		t.Fatalf("audit row %q (%v)", interrupted, err)
	}
}

// A rollback that arrives while the attempt is applying stops the step and undoes it.
func TestRollbackInterruptsApply(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s0 := step("s0", "true")
	s0.Rollback = "echo rb-0 >> rb.log"
	s1 := step("s1", "touch started; sleep 30")
	s1.Rollback = "echo rb-1 >> rb.log"
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, s0, s1)))
	waitFor(t, "the command to start", func() bool { return b.exists("started") }, nil)
	b.r.Desired(desired(1, assignment("m1", 1, 2, wire.ActionRollback, s0, s1)))
	got := b.waitState("m1", 1, stateRolledBack)
	if b.read("rb.log") != "rb-1\nrb-0\n" || !slices.Equal(got.RolledBack, []int{1, 0}) {
		t.Fatalf("observed %+v rb.log %q", got, b.read("rb.log"))
	}
	b.waitEvent("m1", wire.EventMigrationStepCancelled)
}

func TestCanStartHoldsNewWork(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m1 := assignment("m1", 1, 1, wire.ActionApply,
		step("wait", "touch started; while [ ! -f go ]; do sleep 0.02; done"), step("then", "touch m1-step1"))
	b.r.Desired(desired(1, m1))
	waitFor(t, "m1 to start", func() bool { return b.exists("started") }, nil)

	b.canStart.Store(false) // the outbox filled up
	b.r.Desired(desired(1, m1, assignment("m2", 1, 1, wire.ActionApply, step("s", "touch m2"))))
	b.touch("go")
	b.waitState("m1", 1, stateSucceeded) // in flight: finishes, its later steps included
	b.waitLog("not starting new work")
	if b.exists("m2") || !b.exists("m1-step1") {
		t.Fatal("m2 started while CanStart was false")
	}
	if _, ok := b.observedOf("m2"); ok {
		t.Fatal("m2 is in the journal")
	}

	b.canStart.Store(true)
	b.r.Resync(context.Background())
	b.waitState("m2", 1, stateSucceeded)
	b.waitLog("new work can start again")
}

// Events the outbox refuses stay in the journal and go on a later Resync; a failed publication
// of the observed state is retried the same way.
func TestRefusedEventsAndPublicationsAreRetried(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.sinks.setFailEvent(func(wire.Event) error { return errors.New("outbox full") })
	b.sinks.setFailObserved(func() error { return errors.New("hub down") })
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, step("s", "true"))))
	b.waitState("m1", 1, stateSucceeded)
	b.waitLog("the outbox refused an event")
	b.waitLog("cannot publish the observed state")
	if pending, _ := b.r.j.pendingEvents(context.Background()); len(pending) != 2 {
		t.Fatalf("%d pending events, want 2", len(pending))
	}

	b.sinks.setFailEvent(nil)
	b.sinks.setFailObserved(nil)
	b.r.Resync(context.Background())
	if got := types(b.sinks.eventsFor("m1")); !slices.Equal(got, []string{wire.EventMigrationStepStarted, wire.EventExecutionSucceeded}) {
		t.Fatalf("events after resync %v", got)
	}
	if pending, _ := b.r.j.pendingEvents(context.Background()); len(pending) != 0 {
		t.Fatalf("%d pending events after delivery", len(pending))
	}
	waitFor(t, "a publication", func() bool {
		b.r.Resync(context.Background())
		st, ok := b.sinks.lastObserved()
		return ok && len(st.Assignments) == 1 && st.Assignments[0].State == stateSucceeded
	}, nil)
}

func TestOpenRefusesForeignOrDamagedFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := func(path string) Config {
		return Config{AgentID: "a", JournalPath: path, Events: func(context.Context, wire.Event) error { return nil },
			Observed: func(context.Context, wire.ObservedState) error { return nil }}
	}

	notSQLite := filepath.Join(dir, "garbage.db")
	damaged := filepath.Join(dir, "damaged.db")
	header := []byte("SQLite format 3\x00")
	body := make([]byte, 8192)
	for i := range body {
		body[i] = byte(i * 7)
	}
	foreign := filepath.Join(dir, "foreign.db")
	db, err := sql.Open("sqlite", foreign)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE other (x)"); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	for path, content := range map[string][]byte{notSQLite: []byte("these are someone's notes"), damaged: append(header, body...)} {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct{ path, want string }{
		{notSQLite, "not a SQLite database"},
		{damaged, "runner journal"},
		{foreign, "not a Godwit runner journal"},
	} {
		before, _ := os.ReadFile(tc.path)
		r, err := Open(cfg(tc.path))
		if err == nil {
			_ = r.Close()
			t.Fatalf("%s: opened", tc.path)
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%s: error %q, want it to name the file and say %q", tc.path, err, tc.want)
		}
		if !errors.Is(err, health.ErrNeedsOperator) {
			t.Errorf("%s: error %q is not marked as needing an operator", tc.path, err)
		}
		if after, _ := os.ReadFile(tc.path); string(after) != string(before) {
			t.Errorf("%s was modified", tc.path)
		}
	}
	if _, err := Open(Config{JournalPath: filepath.Join(dir, "x.db")}); err == nil || !strings.Contains(err.Error(), "AgentID") {
		t.Errorf("config without AgentID: %v", err)
	}
}

// A verify or a rollback that was running when the agent stopped runs again; the step's run
// does not.
func TestRecoveryRerunsVerifyAndRollback(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s0 := step("s0", "echo x >> run-0")
	s0.Rollback = "echo r >> rb-0"
	s1 := step("s1", "echo x >> run-1")
	s1.Verify = `echo v >> verify-1; [ "$(wc -l < verify-1)" -ge 2 ] || { touch verifying; sleep 30; }`
	s1.Rollback = `echo r >> rb-1; [ "$(wc -l < rb-1)" -ge 2 ] || { touch rolling; sleep 30; }`
	steps := []wire.StepSpec{s0, s1}
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, steps...)))
	waitFor(t, "verify to run", func() bool { return b.exists("verifying") }, nil)
	b.restart()
	b.waitState("m1", 1, stateSucceeded)
	if b.read("run-1") != "x\n" || b.read("verify-1") != "v\nv\n" {
		t.Fatalf("run-1 %q verify-1 %q: want one run and two verifies", b.read("run-1"), b.read("verify-1"))
	}

	b.r.Desired(desired(1, assignment("m1", 1, 2, wire.ActionRollback, steps...)))
	waitFor(t, "the rollback to run", func() bool { return b.exists("rolling") }, nil)
	b.restart()
	got := b.waitState("m1", 1, stateRolledBack)
	if b.read("rb-1") != "r\nr\n" || b.read("rb-0") != "r\n" || !slices.Equal(got.RolledBack, []int{1, 0}) {
		t.Fatalf("rb-1 %q rb-0 %q observed %+v", b.read("rb-1"), b.read("rb-0"), got)
	}
}

// A rollback command that a cancel stopped after it had done its work is not run again when
// the rollback is resumed: the step's detect says the step is no longer applied. One whose
// step is still applied (detect says so) runs again.
func TestResumedRollbackAsksDetectAboutTheCommandACancelStopped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	done := step("done", "touch applied-0")
	done.Detect = "if [ -f applied-0 ]; then exit 1; fi"
	done.Rollback = `echo r >> rb-0; rm -f applied-0; touch rolling-0; sleep 30`
	kept := step("kept", "touch applied-1")
	kept.Detect = "if [ -f applied-1 ]; then exit 1; fi"
	kept.Rollback = `echo r >> rb-1; [ "$(wc -l < rb-1)" -ge 2 ] || { touch rolling-1; sleep 30; }; rm -f applied-1`
	steps := []wire.StepSpec{done, kept}
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, steps...)))
	b.waitState("m1", 1, stateSucceeded)

	// Step 1's rollback is stopped before it undid anything: it runs again.
	b.cancelRollback("m1", 2, "rolling-1", steps...)
	// Step 0's rollback undoes the step, then hangs; the cancel stops it there.
	b.cancelRollback("m1", 4, "rolling-0", steps...)

	b.r.Desired(desired(1, assignment("m1", 1, 6, wire.ActionRollback, steps...)))
	got := b.waitState("m1", 1, stateRolledBack)
	if b.read("rb-1") != "r\nr\n" || b.read("rb-0") != "r\n" || !slices.Equal(got.RolledBack, []int{1, 0}) {
		t.Fatalf("rb-1 %q rb-0 %q observed %+v: want step 1's rollback run twice, step 0's once", b.read("rb-1"),
			b.read("rb-0"), got)
	}
	if !b.said("m1", wire.EventDetectionSucceeded, "not run again") || !b.said("m1", wire.EventMigrationStepStarted, "still applied") {
		t.Fatalf("events %v: want one saying step 0 was not run again, one saying step 1 ran again", types(b.sinks.eventsFor("m1")))
	}
}

// A step whose run failed part-way is in Applied and is rolled back, although its detect says
// it is needed (not applied): that answer says nothing about the rollback. When such a rollback
// is stopped before it did its work (by a cancel, or by the agent stopping), the resumed
// rollback runs it again instead of taking detect's answer as proof that it took effect.
func TestResumedRollbackOfAStepNeverAppliedRunsAgain(t *testing.T) {
	t.Parallel()
	for _, stop := range []string{"cancel", "restart"} {
		t.Run(stop, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			s := step("partial", "touch partial-0; exit 3")
			s.Detect = "if [ -f applied-0 ]; then exit 1; fi"
			s.Rollback = `echo r >> rb-0; [ "$(wc -l < rb-0)" -ge 2 ] || { touch rolling-0; sleep 30; }; rm -f partial-0`
			b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, s)))
			b.waitState("m1", 1, stateFailed)

			b.r.Desired(desired(1, assignment("m1", 1, 2, wire.ActionRollback, s)))
			waitFor(t, "the rollback to run", func() bool { return b.exists("rolling-0") }, nil)
			if stop == "cancel" {
				b.r.Desired(desired(1, assignment("m1", 1, 3, wire.ActionCancel, s)))
				b.waitState("m1", 1, stateRollbackFailed)
				b.r.Desired(desired(1, assignment("m1", 1, 4, wire.ActionRollback, s)))
			} else {
				b.restart()
			}
			got := b.waitState("m1", 1, stateRolledBack)
			if b.read("rb-0") != "r\nr\n" || b.exists("partial-0") || !slices.Equal(got.RolledBack, []int{0}) {
				t.Fatalf("rb-0 %q partial-0 left %v observed %+v: want the stopped rollback run again", b.read("rb-0"),
					b.exists("partial-0"), got)
			}
		})
	}
}

// A new attempt replaces an unfinished one: the command in flight finishes, the old attempt
// ends as superseded and keeps its record, the new attempt starts from its first detect.
func TestNewAttemptSupersedesUnfinishedOne(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s0 := step("wait", `echo "$GODWIT_ATTEMPT" >> runs; touch started; while [ ! -f go ]; do sleep 0.02; done`)
	s0.Detect = `[ "$(wc -l < runs 2>/dev/null || echo 0)" -ge 1 ] && exit 1; exit 0`
	s1 := step("next", `echo "$GODWIT_ATTEMPT" >> next`)
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, s0, s1)))
	waitFor(t, "attempt 1 to start", func() bool { return b.exists("started") }, nil)
	b.r.Desired(desired(1, assignment("m1", 2, 1, wire.ActionApply, s0, s1)))
	b.touch("go")
	got := b.waitState("m1", 2, stateSucceeded)
	if b.read("runs") != "1\n" || b.read("next") != "2\n" || !slices.Equal(got.Applied, []int{1}) {
		t.Fatalf("runs %q next %q observed %+v", b.read("runs"), b.read("next"), got)
	}
	old, err := b.r.j.query(context.Background(), "WHERE migration = 'm1' AND attempt = 1")
	if err != nil || len(old) != 1 || old[0].State != stateSuperseded || !strings.Contains(old[0].Error, "attempt 2") {
		t.Fatalf("attempt 1 in the journal: %+v (%v)", old, err)
	}
	e := b.waitEvent("m1", wire.EventMigrationStepCancelled)
	if e.Data.Attempt != 1 || e.Severity != wire.SeverityWarning {
		t.Fatalf("event %+v", e)
	}
}

// Rollback and cancel of an attempt this agent never saw run nothing and say so.
func TestActionsOnUnknownAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := step("s", "touch ran")
	s.Rollback = "touch rolled"
	b.r.Desired(desired(1, assignment("rb", 1, 2, wire.ActionRollback, s), assignment("cx", 1, 2, wire.ActionCancel, s)))
	got := b.waitState("rb", 1, stateRolledBack)
	if len(got.RolledBack) != 0 {
		t.Fatalf("observed %+v", got)
	}
	got = b.waitState("cx", 1, stateFailed)
	if got.Error != errCancelled {
		t.Fatalf("observed %+v", got)
	}
	b.waitEvent("rb", wire.EventRollbackSucceeded)
	b.waitEvent("cx", wire.EventMigrationStepCancelled)
	if b.exists("ran") || b.exists("rolled") {
		t.Fatal("a command ran")
	}
}

// A failed command's error quotes the line of stderr that says why, not a hint after it.
func TestDescribeQuotesTheCause(t *testing.T) {
	rec := &record{Steps: []wire.StepSpec{{Name: "install"}}}
	got := describe(rec, 0, "run", execute.Result{ExitCode: 127,
		Stderr: "/usr/bin/app: error while loading shared libraries: libssl.so.3: cannot open shared object file\nhint: install libssl3\n"})
	want := "run command of step 0 (install) exited with code 127 (command not found): /usr/bin/app: error while loading shared libraries: libssl.so.3: cannot open shared object file"
	if got != want {
		t.Fatalf("describe:\n got %q\nwant %q", got, want)
	}
}

// A retried attempt's rollback also undoes what the earlier attempts of the migration applied on
// this node and did not roll back: a step the earlier attempt applied is "already done" for the
// retry's detect, and an attempt the agent never saw (held, or the agent away) applied nothing
// itself; either way the node must not be left half-migrated while the hub is told rolled_back.
func TestRollbackOfARetryUndoesTheEarlierAttempts(t *testing.T) {
	t.Parallel()
	s0 := step("s0", "touch s0")
	s0.Detect = "[ -f s0 ] && exit 1; exit 0"
	s0.Rollback = "rm -f s0; echo rb-0 >> rb.log"
	s1 := step("s1", "touch s1-partial; [ -f fixed ] || exit 3; touch s1")
	s1.Detect = "[ -f s1 ] && exit 1; exit 0"
	s1.Rollback = "rm -f s1 s1-partial; echo rb-1 >> rb.log"
	s2 := step("s2", "touch s2")
	s2.Detect = "[ -f s2 ] && exit 1; exit 0"
	s2.Rollback = "rm -f s2; echo rb-2 >> rb.log"
	steps := []wire.StepSpec{s0, s1, s2}

	t.Run("never-seen", func(t *testing.T) {
		b := setup(t)
		b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, steps...)))
		if got := b.waitState("m1", 1, stateFailed); !slices.Equal(got.Applied, []int{0, 1}) {
			t.Fatalf("attempt 1 observed %+v", got)
		}
		// The retry is rolled back before this agent took it on.
		b.r.Desired(desired(1, assignment("m1", 2, 2, wire.ActionRollback, steps...)))
		got := b.waitState("m1", 2, stateRolledBack)
		if log := b.read("rb.log"); log != "rb-1\nrb-0\n" || b.exists("s0") || b.exists("s1-partial") {
			t.Fatalf("rollbacks ran %q, s0 left: %v, s1-partial left: %v; observed %+v", log, b.exists("s0"), b.exists("s1-partial"), got)
		}
		if !slices.Equal(got.RolledBack, []int{1, 0}) {
			t.Fatalf("observed %+v", got)
		}
	})

	t.Run("skipped-by-detect", func(t *testing.T) {
		b := setup(t)
		b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, steps...)))
		b.waitState("m1", 1, stateFailed)
		b.touch("fixed")
		b.r.Desired(desired(1, assignment("m1", 2, 1, wire.ActionApply, steps...)))
		if got := b.waitState("m1", 2, stateSucceeded); !slices.Equal(got.Applied, []int{1, 2}) {
			t.Fatalf("attempt 2 observed %+v", got)
		}
		b.r.Desired(desired(1, assignment("m1", 2, 2, wire.ActionRollback, steps...)))
		got := b.waitState("m1", 2, stateRolledBack)
		if log := b.read("rb.log"); log != "rb-2\nrb-1\nrb-0\n" || b.exists("s0") {
			t.Fatalf("rollbacks ran %q, s0 left: %v; observed %+v", log, b.exists("s0"), got)
		}
		// A third attempt's rollback finds nothing left of the first two: nothing runs twice.
		b.r.Desired(desired(1, assignment("m1", 3, 2, wire.ActionRollback, steps...)))
		b.waitState("m1", 3, stateRolledBack)
		if log := b.read("rb.log"); log != "rb-2\nrb-1\nrb-0\n" {
			t.Fatalf("rollbacks ran %q after attempt 3's rollback", log)
		}
	})
}
