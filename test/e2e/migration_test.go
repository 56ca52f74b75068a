package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// fleet is a hub with n enrolled, online agents named agent-1…agent-n.
type fleet struct {
	h      *hubProc
	root   string
	agents map[string]*proc
	token  string
}

func startFleet(t *testing.T, n int, labels ...string) *fleet {
	t.Helper()
	root := t.TempDir()
	f := &fleet{root: root, agents: map[string]*proc{}}
	f.h = startHub(t, filepath.Join(root, "hub"), fastLiveness...)
	f.token = strings.TrimSpace(f.h.cli(t, "token", "create", "--uses", fmt.Sprint(n+2), "--ttl", "10m"))
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("agent-%d", i)
		f.agents[name] = f.h.startAgent(t, filepath.Join(root, name), f.token, labels...)
	}
	eventually(t, 60*time.Second, "fleet online", func() error {
		m := statusByName(f.h.agents(t))
		for i := 1; i <= n; i++ {
			if s := m[fmt.Sprintf("agent-%d", i)].Status; s != wire.StatusOnline {
				return fmt.Errorf("agent-%d is %q", i, s)
			}
		}
		return nil
	})
	return f
}

func (f *fleet) work(name, file string) string { return filepath.Join(f.root, name, "work", file) }

func (f *fleet) write(t *testing.T, name, file, body string) {
	t.Helper()
	if err := os.WriteFile(f.work(name, file), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f *fleet) read(name, file string) string {
	b, err := os.ReadFile(f.work(name, file))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return strings.TrimSpace(string(b))
}

func (f *fleet) apply(t *testing.T, spec string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(p, []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	f.h.cli(t, "apply", "-f", p)
}

func (f *fleet) describe(t *testing.T, name string) wire.MigrationDescription {
	t.Helper()
	var d wire.MigrationDescription
	if err := json.Unmarshal([]byte(f.h.cli(t, "describe", "migration", name, "-o", "json")), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func (f *fleet) waitState(t *testing.T, name, want string, timeout time.Duration) wire.MigrationDescription {
	t.Helper()
	var d wire.MigrationDescription
	eventually(t, timeout, "migration "+name+" "+want, func() error {
		d = f.describe(t, name)
		if d.Migration.State != want {
			return fmt.Errorf("state %s (%s)", d.Migration.State, d.Migration.Reason)
		}
		return nil
	})
	return d
}

// byName maps each agent name to its latest assignment.
func (f *fleet) byName(t *testing.T, d wire.MigrationDescription) map[string]string {
	names := map[string]string{}
	for _, a := range f.h.agents(t) {
		names[a.ID] = a.Name
	}
	out := map[string]string{}
	latest := map[string]int{}
	for _, a := range d.Assignments {
		n := names[a.AgentID]
		if a.Attempt >= latest[n] {
			latest[n], out[n] = a.Attempt, a.State
		}
	}
	return out
}

const stagedSpec = `apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: staged}
spec:
  selector: {matchLabels: {role: web}}
  toVersion: "2"
  steps:
    - name: bump
      detect: 'if grep -q 2 version; then exit 1; fi'
      run: 'cp version version.bak; echo 2 > version; date +%s%N > applied-at'
      verify: 'grep -q 2 version'
      rollback: 'mv version.bak version; rm -f applied-at'
      timeout: 30s
  rollout:
    canary: 1
    batchSize: 2
    maxFailures: 0
    onFailure: pause
`

// A 5-agent rollout goes canary, then two batches of two, in order; rollback then returns every
// agent to its pre-migration file.
func TestRolloutInBatchesThenRollback(t *testing.T) {
	t.Parallel()
	f := startFleet(t, 5, "role=web")
	for i := 1; i <= 5; i++ {
		f.write(t, fmt.Sprintf("agent-%d", i), "version", "1\n")
	}
	dry := f.h.cli(t, "apply", "--dry-run", "-f", writeTemp(t, stagedSpec))
	for _, want := range []string{"5 agents in 3 batches", "batch 1:  agent-1", "batch 2:  agent-2, agent-3", "batch 3:  agent-4, agent-5"} {
		if !strings.Contains(dry, want) {
			t.Fatalf("dry run lacks %q:\n%s", want, dry)
		}
	}
	f.apply(t, stagedSpec)
	if again := f.h.cli(t, "apply", "-f", writeTemp(t, stagedSpec)); !strings.Contains(again, "unchanged") {
		t.Fatalf("second apply: %s", again)
	}
	d := f.waitState(t, "staged", "succeeded", 90*time.Second)
	if len(d.Batches) != 3 || d.Batches[0].Total != 1 || d.Batches[1].Total != 2 || d.Batches[2].Total != 2 {
		t.Fatalf("batches %+v", d.Batches)
	}
	// Batches ran in order: every agent of a batch applied after every agent of the one before.
	at := func(n int) string { return f.read(fmt.Sprintf("agent-%d", n), "applied-at") }
	for _, pair := range [][2]int{{1, 2}, {1, 3}, {2, 4}, {3, 4}, {2, 5}, {3, 5}} {
		if at(pair[0]) >= at(pair[1]) {
			t.Fatalf("agent-%d applied at %s, not before agent-%d at %s", pair[0], at(pair[0]), pair[1], at(pair[1]))
		}
	}
	for i := 1; i <= 5; i++ {
		if v := f.read(fmt.Sprintf("agent-%d", i), "version"); v != "2" {
			t.Fatalf("agent-%d version %q after success", i, v)
		}
	}
	f.h.cli(t, "rollback", "staged")
	d = f.waitState(t, "staged", "rolled_back", 90*time.Second)
	for i := 1; i <= 5; i++ {
		name := fmt.Sprintf("agent-%d", i)
		if v := f.read(name, "version"); v != "1" {
			t.Fatalf("%s version %q after rollback, want 1", name, v)
		}
		if s := f.byName(t, d)[name]; s != "rolled_back" {
			t.Fatalf("%s is %s after rollback", name, s)
		}
	}
}

// A step that fails on more agents than maxFailures allows pauses the rollout with the reason,
// and describe groups the failures by cause.
func TestFailuresPauseRollout(t *testing.T) {
	t.Parallel()
	f := startFleet(t, 4, "role=db")
	for i := 1; i <= 4; i++ {
		f.write(t, fmt.Sprintf("agent-%d", i), "version", "1\n")
	}
	for _, n := range []string{"agent-1", "agent-2"} {
		f.write(t, n, "disk-full", "")
	}
	spec := `apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: fragile}
spec:
  selector: {matchLabels: {role: db}}
  toVersion: "2"
  steps:
    - name: write
      run: 'if [ -f disk-full ]; then echo "no space left on device" >&2; exit 28; fi; echo 2 > version'
      rollback: 'echo 1 > version'
  rollout:
    batchSize: 2
    maxFailures: 1
    onFailure: pause
`
	f.apply(t, spec)
	d := f.waitState(t, "fragile", "paused", 90*time.Second)
	if !strings.Contains(d.Migration.Reason, "failure budget exceeded: 2 agents failed, 1 allowed") {
		t.Fatalf("reason %q", d.Migration.Reason)
	}
	if len(d.Failures) != 1 || d.Failures[0].Count != 2 || !strings.Contains(d.Failures[0].Signature, "no space left on device") {
		t.Fatalf("failure groups %+v", d.Failures)
	}
	// The second batch never started.
	for _, n := range []string{"agent-3", "agent-4"} {
		if v := f.read(n, "version"); v != "1" {
			t.Fatalf("%s was migrated although the rollout paused: %q", n, v)
		}
	}
	out := f.h.cli(t, "describe", "migration", "fragile")
	if !strings.Contains(out, "2 agents at step write:") || !strings.Contains(out, "no space left on device") ||
		!strings.Contains(out, "agent-1") || !strings.Contains(out, "agent-2") {
		t.Fatalf("describe does not group failures:\n%s", out)
	}
	// Events reach the hub asynchronously (outbox → stream → ingest).
	eventually(t, 30*time.Second, "both failures as error events", func() error {
		events := f.h.cli(t, "events", "--migration", "fragile", "--severity", "error", "-o", "json")
		if n := strings.Count(events, `"type": "migration.execution.failed"`); n != 2 {
			return fmt.Errorf("%d execution.failed events", n)
		}
		return nil
	})
}

// An agent killed while its step runs, after the step's side effect, resumes on restart: detect
// finds the step done and the non-idempotent command does not run a second time. (The step's
// sleep outlives the agent; the restarted agent waits for it before detect runs: see
// TestAgentKilledMidStep.)
func TestAgentKilledMidStepDoesNotRepeatIt(t *testing.T) {
	t.Parallel()
	f := startFleet(t, 1, "role=edge")
	spec := `apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: once}
spec:
  selector: {matchLabels: {role: edge}}
  toVersion: "2"
  steps:
    - name: append
      detect: 'if [ -f done ]; then exit 1; fi'
      run: 'echo x >> counter; touch done; touch side-effect-done; sleep 3'
      timeout: 2m
    - name: after
      run: 'echo ok > after'
`
	f.apply(t, spec)
	eventually(t, 60*time.Second, "the step's side effect", func() error {
		_, err := os.Stat(f.work("agent-1", "side-effect-done"))
		return err
	})
	a := f.agents["agent-1"]
	a.signal(syscall.SIGKILL)
	a.wait(10 * time.Second)
	f.agents["agent-1"] = f.h.startAgent(t, filepath.Join(f.root, "agent-1"), "")
	f.waitState(t, "once", "succeeded", 90*time.Second)
	if c := f.read("agent-1", "counter"); c != "x" {
		t.Fatalf("counter = %q: the non-idempotent step ran more than once", c)
	}
	if v := f.read("agent-1", "after"); v != "ok" {
		t.Fatalf("the next step did not run: %q", v)
	}
}

func writeTemp(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
