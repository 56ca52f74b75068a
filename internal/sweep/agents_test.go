package sweep

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"godwit.dev/godwit/internal/agent/sweepcheck"
	"godwit.dev/godwit/internal/bus"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/wire"
)

// Real agents, connected with their own credentials through the embedded server's permissions,
// run the check command and answer: exit 0 clean, 1 drifted, anything else an error. A check
// still running when the budget runs out is withdrawn and stopped on the agent.
func TestRealAgentsAnswerChecks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 4, t0)
	var mu sync.Mutex
	events := map[string][]wire.Event{}
	dirs := make([]string, len(h.agents))
	for i, a := range h.agents {
		nc, err := bus.ConnectAgent([]string{h.srv.ClientURL()}, a.ID, h.password[a.ID])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		dirs[i] = t.TempDir()
		stop := sweepcheck.Start(t.Context(), sweepcheck.Config{Conn: nc, AgentID: a.ID, WorkDir: dirs[i], Logger: logging.Discard(),
			Resync: 50 * time.Millisecond, Grace: time.Second,
			Events: func(_ context.Context, e wire.Event) error {
				mu.Lock()
				defer mu.Unlock()
				events[a.ID] = append(events[a.ID], e)
				return nil
			}})
		t.Cleanup(stop)
	}
	touch := func(i int, name string) {
		if err := os.WriteFile(filepath.Join(dirs[i], name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	touch(1, "drift")
	touch(2, "err")
	touch(3, "slow")
	h.apply(`apiVersion: godwit.dev/v1
kind: Sweep
metadata: {name: drift}
spec:
  maxSeconds: 300
  check:
    command: |
      if [ -f slow ]; then touch started; sleep 60; fi
      if [ -f err ]; then echo "config unreadable" >&2; exit 3; fi
      test "$GODWIT_SWEEP" = drift && test ! -f drift
`)
	run := h.trigger("drift")
	h.passUntil("three agents answered and the slow one started", func() bool {
		as := h.runAgents(run.ID)
		_, err := os.Stat(filepath.Join(dirs[3], "started"))
		return as["agent-1"].State == wire.CheckClean && as["agent-2"].State == wire.CheckDrifted &&
			as["agent-3"].State == wire.CheckError && as["agent-4"].State == wire.CheckRunning && err == nil
	})
	as := h.runAgents(run.ID)
	if a := as["agent-3"]; a.ExitCode == nil || *a.ExitCode != 3 || !strings.Contains(a.OutputTail, "config unreadable") || a.Error == "" {
		t.Fatalf("agent-3 = %+v", a)
	}
	h.clock.Set(run.Deadline)
	h.pass()
	r := h.run(run.ID)
	if r.Status != wire.SweepRunCompleted || r.SkippedClean != 1 || r.Drifted != 1 || r.Errors != 1 || r.Processed != 2 || r.SkippedBudget != 1 {
		t.Fatalf("run = %+v", r)
	}
	// The withdrawn check is stopped: the slow agent's answers no longer mention the run.
	deadline := time.Now().Add(30 * time.Second)
	for {
		e, err := h.bk.SweepResults.Get(t.Context(), h.agents[3].ID)
		var doc wire.SweepResults
		if err == nil && json.Unmarshal(e.Value(), &doc) == nil && len(doc.Results) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent-4 still reports the withdrawn check: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, want := range []string{wire.SeverityInfo, wire.SeverityWarning, wire.SeverityError} {
		evs := events[h.agents[i].ID]
		if len(evs) != 1 || evs[0].Type != wire.EventSweepCheckResult || evs[0].Severity != want ||
			evs[0].Subject != "sweep/drift/run/"+run.ID || evs[0].Validate(h.agents[i].ID) != nil {
			t.Fatalf("agent-%d events = %+v, want one %s sweep.check.result", i+1, evs, want)
		}
	}
	if evs := events[h.agents[3].ID]; len(evs) != 0 {
		t.Fatalf("the withdrawn check reported %+v", evs)
	}
}
