package runner

import (
	"database/sql"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/agent/health/fulldisk"
	"godwit.dev/godwit/internal/agent/procgroup"
	"godwit.dev/godwit/internal/wire"
)

// survivor starts script in b's work directory as the leader of a process group of its own:
// what is left of a command after its agent was killed.
func survivor(t *testing.T, b *bundle, script string) procgroup.Group {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = b.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	g, err := procgroup.Identify(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// crash turns a clean stop into a kill -9 of the agent: Run is stopped (which stops its
// command, as a clean stop does), then the journal's open command row is made to name g, a
// group still running, started startedAgo ago — what a killed agent leaves behind.
func crash(t *testing.T, b *bundle, g procgroup.Group, startedAgo time.Duration) {
	t.Helper()
	b.stop()
	res, err := b.r.j.db.Exec(`UPDATE commands SET pgid = ?, boot_id = ?, pid_ns = ?, start_time = ?, started_at = ?
		WHERE finished_at IS NULL`, g.ID, g.BootID, g.PidNS, int64(g.StartTime), time.Now().Add(-startedAgo).UnixNano())
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("the journal has %d open commands (%v), want 1", n, err)
	}
	if err := b.r.Close(); err != nil {
		t.Fatal(err)
	}
	b.open()
	b.start()
}

func (b *bundle) typesOf(migration string) []string { return types(b.sinks.eventsFor(migration)) }

// indexOf is the position of the first event of typ about migration, -1 if none.
func (b *bundle) indexOf(migration, typ string) int {
	for i, e := range b.sinks.eventsFor(migration) {
		if e.Type == typ {
			return i
		}
	}
	return -1
}

// lastIndexOf is the position of the last event of typ about migration, -1 if none.
func (b *bundle) lastIndexOf(migration, typ string) int {
	events := b.sinks.eventsFor(migration)
	for i := len(events) - 1; i >= 0; i-- {
		if events[i].Type == typ {
			return i
		}
	}
	return -1
}

// A command that outlived the agent is waited for before anything of its step is judged: detect
// runs only once it has ended, sees its effect, and the step does not run again.
func TestOrphanIsWaitedForBeforeDetect(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := step("g1", "touch running; while :; do sleep 0.05; done")
	s.Detect = "[ -f done ] && exit 1; exit 0"
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, s)))
	waitFor(t, "the step to be running", func() bool { return b.exists("running") }, nil)
	g := survivor(t, b, "trap '' TERM; sleep 1; echo effect >> count; touch done")
	crash(t, b, g, 0)

	b.waitState("m1", 1, stateSucceeded)
	b.waitEvent("m1", wire.EventExecutionSucceeded)
	if c := b.read("count"); c != "effect\n" {
		t.Fatalf("count = %q, want the effect once", c)
	}
	found, exited, detect := b.indexOf("m1", wire.EventMigrationStepOrphaned), b.indexOf("m1", wire.EventMigrationStepOrphanExited),
		b.lastIndexOf("m1", wire.EventDetectionSucceeded)
	if found < 0 || exited < found || detect < exited || b.indexOf("m1", wire.EventMigrationStepOrphanKilled) >= 0 {
		t.Fatalf("events %v: want orphaned, orphan_exited, then the detection", b.typesOf("m1"))
	}
	events := b.sinks.eventsFor("m1")
	if e := events[found]; e.Severity != wire.SeverityWarning || !strings.Contains(e.Data.Message, "process group "+strconv.Itoa(g.ID)) {
		t.Fatalf("orphaned event %+v", e)
	}
	if e := events[detect]; !strings.Contains(e.Data.Message, "ended on its own") || !strings.Contains(e.Data.Message, "not run again") {
		t.Fatalf("the detection does not say what happened: %q", e.Data.Message)
	}
	var extra map[string]any
	_ = json.Unmarshal(events[detect].Data.Extra, &extra)
	if extra["orphan"] != true || extra["orphan_killed"] != false || extra["recovered"] != true {
		t.Fatalf("detection extra %v", extra)
	}
	var text string
	if err := b.r.j.db.QueryRow("SELECT error FROM commands WHERE phase = 'run'").Scan(&text); err != nil ||
		!strings.Contains(text, "outlived the agent and ended on its own") {
		t.Fatalf("the audit row of the interrupted run says %q (%v)", text, err)
	}
}

// One that is still running at its step's timeout, counted from when it started, is stopped —
// SIGTERM, then SIGKILL after the grace — and then the step is judged (without detect: run again).
func TestOrphanIsStoppedAtItsTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := step("g2", `if [ -f first ]; then echo again >> count; exit 0; fi; touch first; while :; do sleep 0.05; done`)
	s.TimeoutMS = 2000
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, s)))
	waitFor(t, "the step to be running", func() bool { return b.exists("first") }, nil)
	g := survivor(t, b, "trap '' TERM; sleep 60; echo effect >> count")
	crash(t, b, g, 1200*time.Millisecond)

	b.waitState("m1", 1, stateSucceeded)
	b.waitEvent("m1", wire.EventExecutionSucceeded)
	if m, err := g.Members(); err != nil || len(m) != 0 {
		t.Fatalf("the orphan is still there: %v, %v", m, err)
	}
	if c := b.read("count"); c != "again\n" {
		t.Fatalf("count = %q, want the second run only", c)
	}
	killed := b.indexOf("m1", wire.EventMigrationStepOrphanKilled)
	started := -1
	for i, e := range b.sinks.eventsFor("m1") {
		if e.Type == wire.EventMigrationStepStarted && strings.Contains(e.Data.Message, "started again") {
			started = i
		}
	}
	if killed < 0 || started < killed {
		t.Fatalf("events %v: want orphan_killed before the run started again", b.typesOf("m1"))
	}
	msg := b.sinks.eventsFor("m1")[killed].Data.Message
	if !strings.Contains(msg, "SIGKILL") || !strings.Contains(msg, "2s timeout passed") {
		t.Fatalf("orphan_killed says %q", msg)
	}
}

// A cancel while the restarted agent waits for an orphan stops it at once.
func TestCancelStopsAnOrphan(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := step("g3", "touch running; while :; do sleep 0.05; done") // timeout 30s
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, s)))
	waitFor(t, "the step to be running", func() bool { return b.exists("running") }, nil)
	g := survivor(t, b, "sleep 60")
	crash(t, b, g, 0)
	b.waitEvent("m1", wire.EventMigrationStepOrphaned)
	b.r.Desired(desired(2, assignment("m1", 1, 2, wire.ActionCancel, s)))
	b.waitState("m1", 1, stateFailed) // well before the 30s timeout (waitFor gives up after 20s)
	if m, _ := g.Members(); len(m) != 0 {
		t.Fatalf("the orphan is still there: %v", m)
	}
	e := b.waitEvent("m1", wire.EventMigrationStepOrphanKilled)
	if !strings.Contains(e.Data.Message, "cancel at generation 2") {
		t.Fatalf("orphan_killed says %q", e.Data.Message)
	}
	b.waitEvent("m1", wire.EventMigrationStepCancelled)
}

// The process group is in the journal before the command runs anything: a copy of the journal
// taken by the command itself names it.
func TestGroupIsJournaledBeforeTheCommandRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply,
		step("snap", "mkdir snap && cp runner.db runner.db-wal snap/ && echo $$ > pid"))))
	b.waitState("m1", 1, stateSucceeded)
	db, err := sql.Open("sqlite", "file:"+b.file("snap/runner.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var pgid, start int64
	var boot, ns string
	err = db.QueryRow("SELECT pgid, boot_id, pid_ns, start_time FROM commands WHERE phase = 'run' AND finished_at IS NULL").Scan(&pgid, &boot, &ns, &start)
	if err != nil {
		t.Fatalf("the journal as the command saw it: %v", err)
	}
	now, _ := procgroup.BootID()
	if strconv.FormatInt(pgid, 10) != strings.TrimSpace(b.read("pid")) || boot != now || start <= 0 || !strings.HasPrefix(ns, "pid:[") {
		t.Fatalf("journaled group %d (boot %s, start %d); the command ran as %s on boot %s", pgid, boot, start, b.read("pid"), now)
	}
}

// A full file system under the journal makes the runner degraded, not dead: the finished
// command's result waits in memory and is retried, nothing new is taken, and once space comes
// back everything completes, every event handed over once.
func TestFullDiskDegradesAndResumes(t *testing.T) {
	fs, err := fulldisk.Mount(t, 4<<20)
	if err != nil {
		t.Skipf("no small file system to fill: %v", err)
	}
	b := setupIn(t, fs.Dir)
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply,
		step("hold", "touch entered; while [ ! -f release ]; do sleep 0.02; done; echo x >> count"),
		step("after", "echo y >> count"))))
	waitFor(t, "the step to be running", func() bool { return b.exists("entered") }, nil)
	fs.Fill()
	b.touch("release")
	waitFor(t, "the runner to say it is degraded", func() bool { return strings.HasPrefix(b.r.Degraded(), "disk full: ") }, nil)
	b.waitLog("cannot write the runner journal")
	// New work is not even recorded while the journal cannot take it.
	b.r.Desired(desired(2, assignment("m1", 1, 1, wire.ActionApply), assignment("m2", 1, 1, wire.ActionApply, step("new", "touch m2"))))
	b.r.Resync(t.Context())
	if b.exists("m2") {
		t.Fatal("new work ran while the journal could not record it")
	}
	fs.Free()
	b.waitState("m1", 1, stateSucceeded)
	b.r.Resync(t.Context()) // the heartbeat tick that offers the unrecorded document again
	b.waitState("m2", 1, stateSucceeded)
	b.waitEvent("m1", wire.EventExecutionSucceeded)
	b.waitEvent("m2", wire.EventExecutionSucceeded)
	if c := b.read("count"); c != "x\ny\n" {
		t.Fatalf("count = %q, want each step once", c)
	}
	if r := b.r.Degraded(); r != "" {
		t.Fatalf("Degraded() after space came back = %q", r)
	}
	seen := map[string]bool{}
	b.sinks.mu.Lock()
	all := append([]wire.Event(nil), b.sinks.events...)
	b.sinks.mu.Unlock()
	for _, e := range all {
		if seen[e.ID] {
			t.Fatalf("event %s (%s) handed over twice", e.ID, e.Type)
		}
		seen[e.ID] = true
	}
	want := []string{wire.EventMigrationStepStarted, wire.EventMigrationStepStarted, wire.EventExecutionSucceeded}
	if got := b.typesOf("m1"); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("events of m1 %v, want %v", got, want)
	}
}

// A journal of schema 1 (before process groups and signatures were recorded) is upgraded in
// place; a command it says was running has no group to look for, and its step is judged as before.
func TestUpgradeFromSchema1(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := step("old", `if [ -f first ]; then echo again >> count; exit 0; fi; touch first; while :; do sleep 0.05; done`)
	b.r.Desired(desired(1, assignment("m1", 1, 1, wire.ActionApply, s)))
	waitFor(t, "the step to be running", func() bool { return b.exists("first") }, nil)
	b.stop()
	for _, stmt := range []string{"ALTER TABLE commands DROP COLUMN pgid", "ALTER TABLE commands DROP COLUMN boot_id",
		"ALTER TABLE commands DROP COLUMN pid_ns", "ALTER TABLE commands DROP COLUMN start_time",
		"ALTER TABLE assignments DROP COLUMN signature", "PRAGMA user_version = 1"} {
		if _, err := b.r.j.db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if err := b.r.Close(); err != nil {
		t.Fatal(err)
	}
	b.open()
	var ver int
	if err := b.r.j.db.QueryRow("PRAGMA user_version").Scan(&ver); err != nil || ver != schemaVersion {
		t.Fatalf("user_version %d (%v) after the upgrade, want %d", ver, err, schemaVersion)
	}
	b.start()
	b.waitState("m1", 1, stateSucceeded)
	if c := b.read("count"); c != "again\n" {
		t.Fatalf("count = %q", c)
	}
	var text string
	if err := b.r.j.db.QueryRow("SELECT error FROM commands WHERE phase = 'run' ORDER BY id LIMIT 1").Scan(&text); err != nil ||
		!strings.Contains(text, "no process group was recorded") {
		t.Fatalf("the interrupted command's row says %q (%v)", text, err)
	}
}
