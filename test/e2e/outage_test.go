package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The hub is killed (-9) in the middle of a rollout and stays down longer than the assignment
// timeout (3s, real clock). Under the default active deadline policy its downtime does not
// count: restarted on the same data dir, it reconciles what the agent finished meanwhile and
// completes the migration, and each step's side effect happened exactly once.
func TestHubKilledMidRolloutCompletesAfterRestart(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dataDir := filepath.Join(root, "hub")
	ports := []string{"--listen", freeAddr(t), "--nats-listen", freeAddr(t)}
	h := startHub(t, dataDir, append(fastLiveness, ports...)...)
	token := strings.TrimSpace(h.cli(t, "token", "create", "--uses", "2"))
	agents := map[string]*proc{}
	for _, n := range []string{"agent-1", "agent-2"} {
		agents[n] = h.startAgent(t, filepath.Join(root, n), token, "tier=edge")
	}
	eventually(t, 30*time.Second, "agents online", func() error {
		m := statusByName(h.agents(t))
		for _, n := range []string{"agent-1", "agent-2"} {
			if m[n].Status != "online" {
				return fmt.Errorf("%s is %q", n, m[n].Status)
			}
		}
		return nil
	})
	work := func(agent, f string) string { return filepath.Join(root, agent, "work", f) }
	if err := os.WriteFile(work("agent-1", "hold"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	spec := `apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: survive}
spec:
  selector: {matchLabels: {tier: edge}}
  toVersion: "2"
  steps:
    - name: apply
      detect: 'if [ -f applied ]; then exit 1; fi'
      run: 'touch entered; while [ -f hold ]; do sleep 0.05; done; echo x >> counter; touch applied'
    - name: finish
      detect: 'if [ -f finished ]; then exit 1; fi'
      run: 'echo x >> finish-counter; touch finished'
  rollout:
    batchSize: 1
  timeouts:
    assignment: 3s
`
	h.cli(t, "apply", "-f", writeTemp(t, spec))
	eventually(t, 30*time.Second, "agent-1 in its step", func() error {
		_, err := os.Stat(work("agent-1", "entered"))
		return err
	})
	h.signal(syscall.SIGKILL)
	h.wait(10 * time.Second)
	// Down for 5s, longer than the 3s assignment timeout; the agent finishes on its own.
	if err := os.Remove(work("agent-1", "hold")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "agent-1 finishing while the hub is down", func() error {
		_, err := os.Stat(work("agent-1", "finished"))
		return err
	})
	down := time.Now()
	for time.Since(down) < 5*time.Second { // the outage itself: nothing to wait for, only time
		time.Sleep(100 * time.Millisecond)
	}
	h2 := startHub(t, dataDir, append(fastLiveness, ports...)...)
	eventually(t, 90*time.Second, "migration succeeded after the restart", func() error {
		out := h2.cli(t, "get", "migrations")
		if !strings.Contains(out, "succeeded") {
			return fmt.Errorf("%s", out)
		}
		return nil
	})
	for _, a := range []string{"agent-1", "agent-2"} {
		for _, f := range []string{"counter", "finish-counter"} {
			b, err := os.ReadFile(work(a, f))
			if err != nil || strings.TrimSpace(string(b)) != "x" {
				t.Fatalf("%s %s = %q, %v: want the side effect exactly once", a, f, b, err)
			}
		}
	}
	if out := h2.cli(t, "events", "--type", "hub.controller.resumed"); !strings.Contains(out, "resumes after") {
		t.Fatalf("the restarted hub did not record how long it was away:\n%s", out)
	}
}
