package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// Two agents enroll and show online; one is killed and shows offline after the grace; restarted
// from its state dir it is online again under the same id, without a new enrollment token.
func TestAgentsOnlineOfflineOnline(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	h := startHub(t, filepath.Join(root, "hub"), fastLiveness...)
	token := strings.TrimSpace(h.cli(t, "token", "create", "--uses", "2", "--ttl", "10m"))

	a1 := h.startAgent(t, filepath.Join(root, "agent-1"), token, "site=a", "role=db")
	h.startAgent(t, filepath.Join(root, "agent-2"), token, "site=b")

	var id1 string
	eventually(t, 30*time.Second, "both agents online", func() error {
		m := statusByName(h.agents(t))
		for _, n := range []string{"agent-1", "agent-2"} {
			if m[n].Status != wire.StatusOnline {
				return fmt.Errorf("%s is %q", n, m[n].Status)
			}
		}
		id1 = m["agent-1"].ID
		return nil
	})
	if got := statusByName(h.agents(t))["agent-1"].Labels; got["site"] != "a" || got["role"] != "db" {
		t.Fatalf("agent-1 labels = %v", got)
	}
	table := h.cli(t, "get", "agents")
	if !strings.Contains(table, "agent-1") || !strings.Contains(table, "online") || !strings.Contains(table, "site=a") {
		t.Fatalf("get agents table misses fields:\n%s", table)
	}

	a1.signal(syscall.SIGKILL)
	a1.wait(10 * time.Second)
	eventually(t, 30*time.Second, "agent-1 offline", func() error {
		m := statusByName(h.agents(t))
		if m["agent-1"].Status != wire.StatusOffline {
			return fmt.Errorf("agent-1 is %q", m["agent-1"].Status)
		}
		if m["agent-2"].Status != wire.StatusOnline {
			return fmt.Errorf("agent-2 is %q", m["agent-2"].Status)
		}
		return nil
	})

	// The token is used up: the restart must come from the saved identity.
	h.startAgent(t, filepath.Join(root, "agent-1"), "")
	eventually(t, 30*time.Second, "agent-1 online again", func() error {
		m := statusByName(h.agents(t))
		if m["agent-1"].Status != wire.StatusOnline {
			return fmt.Errorf("agent-1 is %q", m["agent-1"].Status)
		}
		return nil
	})
	as := h.agents(t)
	if len(as) != 2 || statusByName(as)["agent-1"].ID != id1 {
		t.Fatalf("after restart: %d agents, agent-1 id %s (want 2, %s)", len(as), statusByName(as)["agent-1"].ID, id1)
	}
	info, err := os.Stat(filepath.Join(root, "agent-1", "identity.json"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("identity file: %v, mode %v (want 0600)", err, info.Mode().Perm())
	}
}

// Revoking an agent cuts it off: its process stops with a clear error and a restart is refused.
func TestRevokeCutsAgentOff(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	h := startHub(t, filepath.Join(root, "hub"), fastLiveness...)
	token := strings.TrimSpace(h.cli(t, "token", "create"))
	a := h.startAgent(t, filepath.Join(root, "edge"), token)
	var id string
	eventually(t, 30*time.Second, "agent online", func() error {
		ag := statusByName(h.agents(t))["edge"]
		if ag.Status != wire.StatusOnline {
			return fmt.Errorf("status %q", ag.Status)
		}
		id = ag.ID
		return nil
	})
	h.cli(t, "agent", "revoke", id)
	if code := a.wait(30 * time.Second); code == 0 {
		t.Fatalf("revoked agent exited 0; output:\n%s", a.output())
	}
	if !strings.Contains(a.output(), "rejected") {
		t.Fatalf("revoked agent did not say it was rejected:\n%s", a.output())
	}
	again := h.startAgent(t, filepath.Join(root, "edge"), "")
	if code := again.wait(30 * time.Second); code == 0 {
		t.Fatalf("restarted revoked agent exited 0")
	}
	if got := h.cli(t, "get", "agents"); !strings.Contains(got, "revoked") {
		t.Fatalf("get agents does not show revoked:\n%s", got)
	}
}

// SIGTERM drains and exits 0; the admin token is printed once and a second start reuses it.
func TestHubGracefulStopAndRestart(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "hub")
	h := startHub(t, dir)
	// Its output is not a terminal: the token is only in its file, and the log says where.
	if out := h.output(); strings.Contains(out, h.token) || !strings.Contains(out, "admin token created") ||
		!strings.Contains(out, filepath.Join(dir, "admin.token")) {
		t.Fatalf("first start: the admin token was printed, or the log does not say where it is")
	}
	info, err := os.Stat(filepath.Join(dir, "admin.token"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token: %v mode %v", err, info.Mode().Perm())
	}
	h.signal(syscall.SIGTERM)
	if code := h.wait(30 * time.Second); code != 0 {
		t.Fatalf("hub exit code after SIGTERM = %d, want 0", code)
	}
	h2 := startHub(t, dir)
	if strings.Contains(h2.output(), "admin token created") {
		t.Fatalf("second start made a new admin token")
	}
	h2.cli(t, "get", "agents") // the saved token still works
}
