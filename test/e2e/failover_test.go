package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// failoverGroup reads GET /api/v1/failovergroups/{name}: the group and its timeline.
func (h *hubProc) failoverGroup(t *testing.T, name string) wire.FailoverGroupDetail {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.api+"/api/v1/failovergroups/"+name, nil)
	req.Header.Set("Authorization", "Bearer "+h.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d wire.FailoverGroupDetail
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatalf("failover group %s: %s: %v", name, resp.Status, err)
	}
	return d
}

// hookLines are the lines of the hook log that start with prefix.
func hookLines(t *testing.T, log, prefix string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// Two real agents in a failover group on a real hub: exactly one becomes primary; its agent is
// killed (-9) and the other promotes (its onPromote hook ran), and the hub's group timeline
// shows the promotion, reported by the agents as failover.transition events.
func TestFailoverGroupOnRealAgents(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	h := startHub(t, filepath.Join(root, "hub"), fastLiveness...)
	token := strings.TrimSpace(h.cli(t, "token", "create", "--uses", "2", "--ttl", "10m"))
	procs := map[string]*proc{
		"agent-1": h.startAgent(t, filepath.Join(root, "agent-1"), token),
		"agent-2": h.startAgent(t, filepath.Join(root, "agent-2"), token),
	}
	ids := map[string]string{} // agent id → name
	eventually(t, 60*time.Second, "both agents online", func() error {
		m := statusByName(h.agents(t))
		for _, n := range []string{"agent-1", "agent-2"} {
			if m[n].Status != wire.StatusOnline {
				return fmt.Errorf("%s is %q", n, m[n].Status)
			}
			ids[m[n].ID] = n
		}
		return nil
	})
	log := filepath.Join(root, "hooks.log")
	var members strings.Builder
	for id := range ids {
		fmt.Fprintf(&members, "    - {agent: %s}\n", id)
	}
	hook := func(name, timeout string) string {
		return fmt.Sprintf("    %s: {command: 'echo %s $GODWIT_FAILOVER_MEMBER $GODWIT_FAILOVER_EPOCH >> %s', timeout: %s}\n", name, name, log, timeout)
	}
	spec := "apiVersion: godwit.dev/v1\nkind: FailoverGroup\nmetadata: {name: pg}\nspec:\n  members:\n" + members.String() +
		"  heartbeatInterval: 200ms\n  heartbeatTimeout: 500ms\n  failureThreshold: 2\n  safetyMargin: 500ms\n  failoverTimeout: 3s\n  recoveryThreshold: 2\n" +
		"  hooks:\n" + hook("onPromote", "5s") + hook("onFence", "400ms") + hook("onDemote", "5s")
	file := filepath.Join(root, "group.yaml")
	if err := os.WriteFile(file, []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	h.cli(t, "apply", "-f", file)

	var primary string
	eventually(t, 30*time.Second, "one primary", func() error {
		lines := hookLines(t, log, "onPromote ")
		if len(lines) != 1 {
			return fmt.Errorf("onPromote ran %d times: %q", len(lines), lines)
		}
		primary = strings.Fields(lines[0])[1]
		return nil
	})
	if _, ok := ids[primary]; !ok {
		t.Fatalf("primary %q is not a member (%v)", primary, ids)
	}
	// Still exactly one, a few heartbeats later.
	time.Sleep(time.Second)
	if lines := hookLines(t, log, "onPromote "); len(lines) != 1 {
		t.Fatalf("onPromote ran %d times with both members up: %q", len(lines), lines)
	}
	var other string
	for id := range ids {
		if id != primary {
			other = id
		}
	}

	p := procs[ids[primary]]
	p.signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
	eventually(t, 30*time.Second, "the other member promotes", func() error {
		lines := hookLines(t, log, "onPromote "+other+" ")
		if len(lines) != 1 {
			return fmt.Errorf("onPromote of %s ran %d times: %s", other, len(lines), hookLines(t, log, ""))
		}
		return nil
	})
	if n := len(hookLines(t, log, "onPromote "+primary+" ")); n != 1 {
		t.Fatalf("the killed primary promoted %d times", n)
	}
	eventually(t, 30*time.Second, "the promotion in the hub's timeline", func() error {
		d := h.failoverGroup(t, "pg")
		for _, e := range d.Timeline {
			if e.Member == other && e.Role == "primary" && e.Hook == "" && e.Epoch >= 2 {
				return nil
			}
		}
		return fmt.Errorf("timeline has no transition of %s as primary at epoch ≥ 2: %+v", other, d.Timeline)
	})
	if out := h.cli(t, "describe", "failovergroup", "pg"); !strings.Contains(out, other) {
		t.Fatalf("describe failovergroup pg does not name %s:\n%s", other, out)
	}

	// The old primary comes back (its saved identity): it sees the newer epoch, runs onDemote and
	// joins as a replica. Then a planned switchover hands the primary role back to it.
	h.startAgent(t, filepath.Join(root, ids[primary]), "")
	eventually(t, 30*time.Second, "the returning old primary demotes", func() error {
		if len(hookLines(t, log, "onDemote "+primary+" ")) == 0 {
			return fmt.Errorf("no onDemote of %s: %s", primary, hookLines(t, log, ""))
		}
		return nil
	})
	if n := len(hookLines(t, log, "onPromote "+primary+" ")); n != 1 {
		t.Fatalf("the returning old primary promoted again on its own (%d onPromote)", n)
	}
	eventually(t, 30*time.Second, "switchover accepted", func() error {
		out, errs, code := h.cliCode("failover", "switchover", "pg", "--to", primary)
		if code != 0 || !strings.Contains(out, "hands over to "+primary) {
			return fmt.Errorf("switchover: %d %s %s", code, out, errs)
		}
		return nil
	})
	eventually(t, 30*time.Second, "the switchover promotes the old primary again", func() error {
		if n := len(hookLines(t, log, "onPromote "+primary+" ")); n != 2 {
			return fmt.Errorf("onPromote of %s ran %d times: %s", primary, n, hookLines(t, log, ""))
		}
		if len(hookLines(t, log, "onFence "+other+" ")) == 0 {
			return fmt.Errorf("the primary handed over without fencing: %s", hookLines(t, log, ""))
		}
		return nil
	})
}
