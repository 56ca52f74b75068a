package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/agent/health"
	"godwit.dev/godwit/internal/agent/health/fulldisk"
	"godwit.dev/godwit/internal/cli"
	"godwit.dev/godwit/internal/wire"
)

// disk is the agent's state directory on a file system the drill fills and frees: a small tmpfs
// where this process may mount one, otherwise a normal directory with ENOSPC injected into the
// agent's journal and outbox writes (health.DrillDiskFullEnv).
type disk struct {
	t      *testing.T
	fs     *fulldisk.FS // nil when injecting
	inject string       // the drill file while injecting
	dir    string       // where the state directory goes
}

func newDisk(t *testing.T, root string) *disk {
	fs, err := fulldisk.Mount(t, 8<<20)
	if err != nil {
		t.Logf("FALLBACK: %v; the drill injects ENOSPC into the agent's journal and outbox writes instead (%s)",
			err, health.DrillDiskFullEnv)
		return &disk{t: t, inject: filepath.Join(root, "disk-full"), dir: root}
	}
	t.Logf("the agent's state directory is on a %d-byte tmpfs at %s", fs.Available(), fs.Dir)
	return &disk{t: t, fs: fs, dir: fs.Dir}
}

func (d *disk) env() []string {
	if d.fs != nil {
		return nil
	}
	return []string{health.DrillDiskFullEnv + "=" + d.inject}
}

func (d *disk) fill() {
	if d.fs != nil {
		d.t.Logf("filled the file system with %d bytes", d.fs.Fill())
		return
	}
	if err := os.WriteFile(d.inject, nil, 0o600); err != nil {
		d.t.Fatal(err)
	}
}

func (d *disk) free() {
	if d.fs != nil {
		d.fs.Free()
		return
	}
	if err := os.Remove(d.inject); err != nil {
		d.t.Fatal(err)
	}
}

// sinceRE finds when a degraded reason began.
var sinceRE = regexp.MustCompile(` since (\S+Z) `)

// journaled lists the ids of the events the runner journaled, from its debug log.
var journaledRE = regexp.MustCompile(`msg="event journaled" (?:\S+ )*?event_id=([0-9a-f-]{36}) type=(\S+)`)

// The state directory's file system fills up while a step runs. The agent stays up, degraded:
// `get agents` (table and API) shows why while the disk is full, the finished step's result waits
// to be journaled; stopped and started again meanwhile, it stops cleanly and is degraded again;
// when space comes back the migration completes, each step once, with every event the runner
// journaled at the hub. Started on a full disk after a clean stop (its journals must be opened
// anew), the agent stays up degraded too and resumes by itself. Started on a read-only one, it
// exits with the code for "needs an operator".
func TestAgentRidesOutAFullDisk(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	h := startHub(t, filepath.Join(root, "hub"), fastLiveness...)
	d := newDisk(t, root)
	stateDir := filepath.Join(d.dir, "agent")
	out := filepath.Join(root, "effects") // the steps' own files stay off the full file system
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(h.cli(t, "token", "create", "--uses", "1"))
	args := []string{"agent", "--hub", h.api, "--state-dir", stateDir, "--name", "full", "--label", "disk=small",
		"--log-format", "text", "--log-level", "debug"}
	agent := start(t, "agent full", d.env(), append(args, "--enroll-token", token)...)
	eventually(t, 60*time.Second, "the agent online", func() error {
		if a := statusByName(h.agents(t))["full"]; a.Status != wire.StatusOnline {
			return fmt.Errorf("status %q", a.Status)
		}
		return nil
	})
	agentID := statusByName(h.agents(t))["full"].ID

	spec := func(name, steps string) string {
		return fmt.Sprintf(`apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: %s}
spec:
  selector: {matchLabels: {disk: small}}
  toVersion: "2"
  steps:%s
`, name, strings.ReplaceAll(steps, "OUT", out))
	}
	h.cli(t, "apply", "-f", writeTemp(t, spec("fill", `
    - name: hold
      detect: '[ -f OUT/hold.done ] && exit 1; exit 0'
      run: 'touch OUT/entered; while [ ! -f OUT/release ]; do sleep 0.05; done; echo one >> OUT/count; touch OUT/hold.done'
    - name: after
      detect: '[ -f OUT/after.done ] && exit 1; exit 0'
      run: 'echo two >> OUT/count; touch OUT/after.done'`)))
	eventually(t, 60*time.Second, "the step running", func() error { _, err := os.Stat(filepath.Join(out, "entered")); return err })
	d.fill()
	if err := os.WriteFile(filepath.Join(out, "release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	degraded := func(want bool) func() error {
		return func() error {
			a := statusByName(h.agents(t))["full"]
			if want != strings.HasPrefix(a.Degraded, "disk full: ") || a.Status != wire.StatusOnline {
				return fmt.Errorf("status %q, degraded %q", a.Status, a.Degraded)
			}
			return nil
		}
	}
	eventually(t, 30*time.Second, "the agent online and degraded at the hub", degraded(true))
	table := h.cli(t, "get", "agents")
	if !strings.Contains(table, "DEGRADED") || !strings.Contains(table, "disk full: cannot write") {
		t.Fatalf("get agents does not show why the agent is degraded:\n%s", table)
	}
	t.Logf("while full:\n%s", table)
	select {
	case <-agent.done:
		t.Fatalf("the agent exited on a full disk: %v", agent.err)
	default:
	}
	// Stopped while degraded (the step's result not yet journaled), it stops as usual; started
	// again on the still full disk, it is degraded again from the start.
	agent.signal(syscall.SIGTERM)
	if code := agent.wait(30 * time.Second); code != 0 {
		t.Fatalf("the degraded agent exited %d on SIGTERM", code)
	}
	outputs := []*proc{agent}
	restarted := time.Now().UTC().Truncate(time.Second)
	agent = start(t, "agent full (restarted on the full disk)", d.env(), args...)
	outputs = append(outputs, agent)
	eventually(t, 30*time.Second, "the restarted agent degraded at the hub (not the stopped one's last word)", func() error {
		if err := degraded(true)(); err != nil {
			return err
		}
		reason := statusByName(h.agents(t))["full"].Degraded
		m := sinceRE.FindStringSubmatch(reason)
		if m == nil {
			return fmt.Errorf("no time in %q", reason)
		}
		if since, err := time.Parse(time.RFC3339, m[1]); err != nil || since.Before(restarted) {
			return fmt.Errorf("degraded since %s, before the restart at %s: the stopped agent's reason", m[1], restarted.Format(time.RFC3339))
		}
		return nil
	})
	d.free()
	eventually(t, 60*time.Second, "the migration succeeded", migrationIs(t, h, "fill", "succeeded"))
	if b, _ := os.ReadFile(filepath.Join(out, "count")); string(b) != "one\ntwo\n" {
		t.Fatalf("count = %q, want each step once", b)
	}
	eventually(t, 30*time.Second, "the degraded reason cleared at the hub", degraded(false))

	// Every event the runner journaled reached the hub: none was lost on the full disk.
	journaled := map[string]string{}
	for _, p := range outputs {
		for _, m := range journaledRE.FindAllStringSubmatch(p.output(), -1) {
			journaled[m[1]] = m[2]
		}
	}
	if len(journaled) < 4 {
		t.Fatalf("only %d events journaled in the agent's log", len(journaled))
	}
	eventually(t, 30*time.Second, "every journaled event at the hub", func() error {
		var events []wire.Event
		if err := json.Unmarshal([]byte(h.cli(t, "events", "--agent", agentID, "--limit", "1000", "-o", "json")), &events); err != nil {
			return err
		}
		at := map[string]int{}
		for _, e := range events {
			at[e.ID]++
		}
		for id, typ := range journaled {
			if at[id] != 1 {
				return fmt.Errorf("journaled event %s (%s) is at the hub %d times", id, typ, at[id])
			}
		}
		if i := slices.IndexFunc(events, func(e wire.Event) bool { return e.Type == wire.EventAgentStarted }); i < 0 {
			return errors.New("no agent.started event")
		}
		return nil
	})

	// Started on a full disk (after a clean stop, so its journals must be opened anew).
	agent.signal(syscall.SIGTERM)
	if code := agent.wait(30 * time.Second); code != 0 {
		t.Fatalf("the agent exited %d on SIGTERM", code)
	}
	d.fill()
	agent = start(t, "agent full (restarted full)", d.env(), args...)
	eventually(t, 30*time.Second, "the agent started on a full disk, online and degraded", degraded(true))
	select {
	case <-agent.done:
		t.Fatalf("the agent exited when started on a full disk: %v\n%s", agent.err, agent.output())
	default:
	}
	d.free()
	eventually(t, 30*time.Second, "the degraded reason cleared at the hub", degraded(false))
	h.cli(t, "apply", "-f", writeTemp(t, spec("after-full", `
    - name: again
      run: 'touch OUT/again'`)))
	eventually(t, 60*time.Second, "new work after the disk came back", migrationIs(t, h, "after-full", "succeeded"))

	if d.fs == nil {
		t.Log("FALLBACK: no read-only file system to start on without a mount of our own; that part is skipped")
		return
	}
	// Started on a read-only file system: only an operator can fix that; the agent says so and
	// exits with its own code rather than running degraded forever.
	agent.signal(syscall.SIGTERM)
	if code := agent.wait(30 * time.Second); code != 0 {
		t.Fatalf("the agent exited %d on SIGTERM", code)
	}
	if err := d.fs.SetReadOnly(true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.fs.SetReadOnly(false) })
	agent = start(t, "agent full (read-only)", d.env(), args...)
	if code := agent.wait(30 * time.Second); code != cli.ExitNeedsOperator {
		t.Fatalf("the agent exited %d on a read-only state directory, want %d:\n%s", code, cli.ExitNeedsOperator, agent.output())
	}
	if o := agent.output(); !strings.Contains(o, "read-only file system") {
		t.Fatalf("the agent's error does not say what is wrong:\n%s", o)
	}
}

// migrationIs returns a condition: migration name is in state.
func migrationIs(t *testing.T, h *hubProc, name, state string) func() error {
	return func() error {
		var desc wire.MigrationDescription
		if err := json.Unmarshal([]byte(h.cli(t, "describe", "migration", name, "-o", "json")), &desc); err != nil {
			return err
		}
		if desc.Migration.State != state {
			return fmt.Errorf("state %s (%s)", desc.Migration.State, desc.Migration.Reason)
		}
		return nil
	}
}
