package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// killDrill is one kill -9 of a real agent process in the middle of a step.
type killDrill struct {
	name  string
	steps string // the spec's steps, indented for spec.steps
	// killWhen returns nil once it is time to kill the agent (it looks at the agent's work dir).
	killWhen func(work string) error
	// restartWhen returns nil once it is time to start the agent again; nil: at once, or after
	// restartAfter (an outage of that length).
	restartWhen  func(work string) error
	restartAfter time.Duration
	check        func(t *testing.T, r *killRun)
}

// killRun is what a drill left: the work directory and the hub's events of its migration,
// oldest first.
type killRun struct {
	work   string
	events []wire.Event
	killed time.Time // when the agent was killed
}

func (r *killRun) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.work, name))
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(b)
}

// count is the number of lines of name that start with prefix.
func (r *killRun) count(t *testing.T, name, prefix string) int {
	n := 0
	for _, l := range strings.Split(r.read(t, name), "\n") {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

func (r *killRun) types() []string {
	out := make([]string, len(r.events))
	for i, e := range r.events {
		out[i] = e.Type
	}
	return out
}

// index is the position of the first event of typ whose message contains text, -1 if none.
func (r *killRun) index(typ, text string) int {
	return slices.IndexFunc(r.events, func(e wire.Event) bool { return e.Type == typ && strings.Contains(e.Data.Message, text) })
}

// orphanWaited checks that the restarted agent found what outlived the killed one, waited for
// it to end on its own, and only then judged the step.
func (r *killRun) orphanWaited(t *testing.T) {
	t.Helper()
	found, exited := r.index(wire.EventMigrationStepOrphaned, "outlived the agent"), r.index(wire.EventMigrationStepOrphanExited, "ended on its own")
	if found < 0 || exited < found || r.index(wire.EventMigrationStepOrphanKilled, "") >= 0 {
		t.Fatalf("events %v: want the orphan found, then ended on its own", r.types())
	}
	for i, e := range r.events {
		judged := e.Type == wire.EventDetectionSucceeded || e.Type == wire.EventVerificationSucceeded || e.Type == wire.EventMigrationStepStarted
		if judged && i > found && i < exited {
			t.Fatalf("event %d (%s: %s) came while the orphan still ran; events %v", i, e.Type, e.Data.Message, r.types())
		}
	}
}

// afterKill is a shell line that returns once the drill has killed the agent: the part of a
// step that must still be running at the kill waits for it, so that a slow machine (a kill that
// comes late) cannot let the step finish first and the drill prove nothing.
const afterKill = `until [ -f killed ]; do sleep 0.05; done;`

// fileHas returns a killWhen/restartWhen that holds once name exists and holds text, and at
// least after has passed since that was first seen.
func fileHas(name, text string, after time.Duration) func(string) error {
	var seen time.Time
	return func(work string) error {
		b, err := os.ReadFile(filepath.Join(work, name))
		if err != nil || !strings.Contains(string(b), text) {
			return fmt.Errorf("%s does not hold %q yet", name, text)
		}
		if seen.IsZero() {
			seen = time.Now()
		}
		if time.Since(seen) < after {
			return fmt.Errorf("%s held %q only %s ago", name, text, time.Since(seen))
		}
		return nil
	}
}

// A kill -9 of an agent at several points of a running step, with a restart at once or later:
// the step's process group never outlives its agent unnoticed. Its leader dies with the agent
// (parent-death signal); what else of it is left (a background child) is found by the restarted
// agent through the group recorded in the journal, and waited for before anything of the step
// is judged. A counter shows each effect exactly once with detect, and start/end markers show no
// two copies of a step without detect ever overlap.
func TestAgentKilledMidStep(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	h := startHub(t, filepath.Join(root, "hub"), fastLiveness...)
	drills := []killDrill{{
		// The report's own scenario: killed 1.5 s into the step's sleep, restarted 1 s later,
		// while the sleep (the step's group, without its shell) still runs.
		name: "issue-run",
		steps: `
    - name: g1
      detect: '[ -f g1.done ] && exit 1; exit 0'
      run: 'echo start >> d2.log; sleep 5; echo effect >> d2.log; touch g1.done'`,
		killWhen:     fileHas("d2.log", "start", 1500*time.Millisecond),
		restartAfter: time.Second,
		check: func(t *testing.T, r *killRun) {
			if n := r.count(t, "d2.log", "effect"); n != 1 {
				t.Fatalf("d2.log:\n%s\nwant the effect exactly once", r.read(t, "d2.log"))
			}
			r.orphanWaited(t)
			// The shell died with the agent, so the interrupted copy never took effect: detect
			// says so, and the step runs again, after the orphan ended.
			if r.index(wire.EventDetectionSucceeded, "still needed: it runs again") < 0 {
				t.Fatalf("events %v: no detection saying the interrupted run did not take effect", r.types())
			}
		},
	}, {
		// A background child that ignores SIGTERM and SIGHUP, which the parent-death signal of
		// the shell does not reach: it finishes the step's effect after the agent died.
		name: "grandchild-at-once",
		steps: `
    - name: g2
      detect: '[ -f g2.done ] && exit 1; exit 0'
      run: 'echo start >> g.log; ( trap "" TERM HUP; ` + afterKill + ` sleep 2; echo effect >> g.log; touch g2.done ) & wait'`,
		killWhen: fileHas("g.log", "start", 300*time.Millisecond),
		check: func(t *testing.T, r *killRun) {
			if r.count(t, "g.log", "effect") != 1 || r.count(t, "g.log", "start") != 1 {
				t.Fatalf("g.log:\n%s\nwant one start and one effect", r.read(t, "g.log"))
			}
			r.orphanWaited(t)
			if r.index(wire.EventDetectionSucceeded, "took effect: not run again") < 0 {
				t.Fatalf("events %v: no detection saying the orphan's effect counts", r.types())
			}
		},
	}, {
		// The same, restarted once the orphan has finished: nothing is left to wait for.
		name: "grandchild-later",
		steps: `
    - name: g3
      detect: '[ -f g3.done ] && exit 1; exit 0'
      run: 'echo start >> g.log; ( trap "" TERM HUP; ` + afterKill + ` echo effect >> g.log; touch g3.done ) & wait'`,
		killWhen:    fileHas("g.log", "start", 200*time.Millisecond),
		restartWhen: fileHas("g3.done", "", 0),
		check: func(t *testing.T, r *killRun) {
			if r.count(t, "g.log", "effect") != 1 || r.count(t, "g.log", "start") != 1 {
				t.Fatalf("g.log:\n%s\nwant one start and one effect", r.read(t, "g.log"))
			}
			if r.index(wire.EventMigrationStepOrphaned, "") >= 0 {
				t.Fatalf("events %v: an orphan reported although it had ended before the restart", r.types())
			}
			if r.index(wire.EventDetectionSucceeded, "ended with the agent") < 0 {
				t.Fatalf("events %v: the detection does not say the interrupted run's group had ended", r.types())
			}
		},
	}, {
		name: "detect",
		steps: `
    - name: d
      detect: 'echo x >> detects; sh -c "` + afterKill + ` sleep 2"; [ -f d.done ] && exit 1; exit 0'
      run: 'echo effect >> d.log; touch d.done'`,
		killWhen: fileHas("detects", "x", 300*time.Millisecond),
		check: func(t *testing.T, r *killRun) {
			if n := r.count(t, "d.log", "effect"); n != 1 {
				t.Fatalf("the step ran %d times", n)
			}
			r.orphanWaited(t)
		},
	}, {
		name: "verify",
		steps: `
    - name: v
      detect: '[ -f v.done ] && exit 1; exit 0'
      run: 'echo effect >> v.log; touch v.done'
      verify: 'echo x >> verifies; sh -c "` + afterKill + ` sleep 2"; [ -f v.done ]'`,
		killWhen: fileHas("verifies", "x", 300*time.Millisecond),
		check: func(t *testing.T, r *killRun) {
			if n := r.count(t, "v.log", "effect"); n != 1 {
				t.Fatalf("the step ran %d times", n)
			}
			if n := r.count(t, "verifies", "x"); n != 2 {
				t.Fatalf("verify ran %d times, want twice (interrupted, then again)", n)
			}
			r.orphanWaited(t)
		},
	}, {
		// No detect: the step runs again, documented as such — but never alongside the copy
		// that outlived the agent. Each copy is a background shell that marks its start and
		// end with its pid.
		name: "no-detect",
		steps: `
    - name: n
      run: 'sh -c "echo start \$\$ \$(date +%s%N) >> spans; ` + afterKill + ` sleep 2; echo end \$\$ \$(date +%s%N) >> spans" & wait'`,
		killWhen: fileHas("spans", "start", 300*time.Millisecond),
		check: func(t *testing.T, r *killRun) {
			spans := map[string][2]int64{}
			var order []string
			for _, l := range strings.Split(strings.TrimSpace(r.read(t, "spans")), "\n") {
				f := strings.Fields(l)
				if len(f) != 3 {
					t.Fatalf("spans line %q", l)
				}
				at, _ := strconv.ParseInt(f[2], 10, 64)
				s := spans[f[1]]
				if f[0] == "start" {
					s[0] = at
					order = append(order, f[1])
				} else {
					s[1] = at
				}
				spans[f[1]] = s
			}
			if len(order) != 2 {
				t.Fatalf("spans:\n%s\nwant two copies (the interrupted one and the rerun)", r.read(t, "spans"))
			}
			first, second := spans[order[0]], spans[order[1]]
			if first[1] == 0 || second[1] == 0 {
				t.Fatalf("spans:\n%s\nwant both copies to end", r.read(t, "spans"))
			}
			if second[0] < first[1] {
				t.Fatalf("spans:\n%s\nthe rerun started %s before the interrupted copy ended", r.read(t, "spans"),
					time.Duration(first[1]-second[0]))
			}
			r.orphanWaited(t)
		},
	}}
	token := strings.TrimSpace(h.cli(t, "token", "create", "--uses", strconv.Itoa(len(drills)), "--ttl", "10m"))
	for _, d := range drills {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			d.run(t, h, filepath.Join(root, d.name), token)
		})
	}
}

func (d killDrill) run(t *testing.T, h *hubProc, stateDir, token string) {
	work := filepath.Join(stateDir, "work")
	agent := h.startAgent(t, stateDir, token, "drill="+d.name)
	eventually(t, 60*time.Second, d.name+" online", func() error {
		if a := statusByName(h.agents(t))[d.name]; a.Status != wire.StatusOnline {
			return fmt.Errorf("%s is %q", d.name, a.Status)
		}
		return nil
	})
	spec := fmt.Sprintf(`apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: %s}
spec:
  selector: {matchLabels: {drill: %s}}
  toVersion: "2"
  steps:%s
`, d.name, d.name, d.steps)
	h.cli(t, "apply", "-f", writeTemp(t, spec))
	eventually(t, 60*time.Second, "the moment to kill "+d.name, func() error { return d.killWhen(work) })
	agent.signal(syscall.SIGKILL)
	agent.wait(10 * time.Second)
	killed := time.Now()
	// What must outlive the agent waits for this file (afterKill), however late the kill came.
	if err := os.WriteFile(filepath.Join(work, "killed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if d.restartWhen != nil {
		eventually(t, 60*time.Second, "the moment to restart "+d.name, func() error { return d.restartWhen(work) })
	}
	for time.Since(killed) < d.restartAfter { // the outage itself: nothing to wait for, only time
		time.Sleep(50 * time.Millisecond)
	}
	h.startAgent(t, stateDir, "")
	eventually(t, 90*time.Second, d.name+" succeeded", func() error {
		var desc wire.MigrationDescription
		if err := json.Unmarshal([]byte(h.cli(t, "describe", "migration", d.name, "-o", "json")), &desc); err != nil {
			return err
		}
		if desc.Migration.State != "succeeded" {
			return fmt.Errorf("state %s (%s)", desc.Migration.State, desc.Migration.Reason)
		}
		return nil
	})
	r := &killRun{work: work, killed: killed}
	eventually(t, 30*time.Second, "the events of "+d.name+" at the hub", func() error {
		var events []wire.Event
		out := h.cli(t, "events", "--migration", d.name, "--limit", "1000", "-o", "json")
		if err := json.Unmarshal([]byte(out), &events); err != nil {
			return err
		}
		slices.Reverse(events) // oldest first
		r.events = events
		if slices.IndexFunc(events, func(e wire.Event) bool { return e.Type == wire.EventExecutionSucceeded }) < 0 {
			return fmt.Errorf("no %s yet among %v", wire.EventExecutionSucceeded, r.types())
		}
		return nil
	})
	d.check(t, r)
}
