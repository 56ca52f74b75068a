package hub_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"godwit.dev/godwit/internal/hub"
	"godwit.dev/godwit/internal/hub/hubtest"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

const pauseSpec = `apiVersion: godwit.dev/v1
kind: Migration
metadata: {name: %s}
spec:
  selector: {matchLabels: {role: web}}
  toVersion: "2"
  steps:
    - {name: only, run: '%s', timeout: 1m}
  rollout: {canary: %d, maxFailures: 0, approval: %s, onFailure: pause}
`

// The fleet gauges count what the store holds, and a paused migration's cause is read from the
// reason the real migration controller records: its failure budget, the manual approval gate,
// the operator.
func TestFleetGaugesAndPauseCauses(t *testing.T) {
	t.Parallel()
	f := hubtest.Start(t, hubtest.Options{Agents: []hubtest.Agent{
		{Name: "web-1", Labels: []string{"role=web"}}, {Name: "web-2", Labels: []string{"role=web"}},
	}})
	state := func(name string) string {
		var m struct {
			Migration struct{ State, Reason string } `json:"migration"`
		}
		f.Must(200, "GET", "/api/v1/migrations/"+name, "", "", &m)
		return m.Migration.State + ": " + m.Migration.Reason
	}
	waitState := func(name, prefix string) {
		f.Eventually(name+" "+prefix, func() error {
			if s := state(name); !strings.HasPrefix(s, prefix) {
				return errors.New(s)
			}
			return nil
		})
	}
	// Both agents fail: more than maxFailures 0.
	f.Must(200, "POST", "/api/v1/migrations", "application/yaml", fmt.Sprintf(pauseSpec, "budget", "exit 3", 0, "auto"), nil)
	waitState("budget", "paused: failure budget exceeded")
	// The canary succeeds; the second batch waits for approval.
	f.Must(200, "POST", "/api/v1/migrations", "application/yaml", fmt.Sprintf(pauseSpec, "gate", "true", 1, "manual"), nil)
	waitState("gate", "paused: waiting for approval")
	// Paused by hand while its step runs.
	f.Must(200, "POST", "/api/v1/migrations", "application/yaml", fmt.Sprintf(pauseSpec, "held", "sleep 30", 0, "auto"), nil)
	waitState("held", "running")
	f.Must(200, "POST", "/api/v1/migrations/held/pause", "", "", nil)
	waitState("held", "paused: paused by operator")

	f.Must(200, "POST", "/api/v1/agents/"+f.Agents["web-2"]+"/revoke", "", "", nil)
	mfs := f.Metrics()
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"godwit_store_up", nil, 1},
		{"godwit_migrations_paused", map[string]string{"cause": hub.PauseFailureBudget}, 1},
		{"godwit_migrations_paused", map[string]string{"cause": hub.PauseApproval}, 1},
		{"godwit_migrations_paused", map[string]string{"cause": hub.PauseOperator}, 1},
		{"godwit_migrations_paused", map[string]string{"cause": hub.PauseDeadline}, 0},
		{"godwit_migrations_paused", map[string]string{"cause": hub.PauseOther}, 0},
		{"godwit_migrations", map[string]string{"state": "paused"}, 3},
		{"godwit_migrations", map[string]string{"state": "succeeded"}, 0},
		{"godwit_agents", map[string]string{"status": wire.StatusOnline}, 1},
		{"godwit_agents", map[string]string{"status": store.AgentRevoked}, 1},
		{"godwit_agents", map[string]string{"status": wire.StatusOffline}, 0},
	} {
		if got, ok := hubtest.Value(mfs, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (exported: %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
}

func TestPauseCause(t *testing.T) {
	for reason, want := range map[string]string{
		"failure budget exceeded: 2 agents failed, 1 allowed; onFailure: pause (retry --failed, rollback or abort)": hub.PauseFailureBudget,
		"migration deadline of 1h0m0s (active time) passed; onTimeout: pause":                                       hub.PauseDeadline,
		"waiting for approval of batch 2 of 3 (godwit approve m)":                                                   hub.PauseApproval,
		"paused by operator": hub.PauseOperator,
		"":                   hub.PauseOther,
	} {
		if got := hub.PauseCause(reason); got != want {
			t.Errorf("PauseCause(%q) = %q, want %q", reason, got, want)
		}
	}
}

// downStore fails the fleet's first query while down is set, like a database that went away.
type downStore struct {
	store.Store
	down *atomic.Bool
}

func (d downStore) CountAgentsByStatus(ctx context.Context) (map[string]int, error) {
	if d.down.Load() {
		return nil, errors.New("connection refused")
	}
	return d.Store.CountAgentsByStatus(ctx)
}

// A store that does not answer costs the fleet series, not the scrape: the rest of /metrics
// (the ingest's lag above all) is still served, and godwit_store_up says 0.
func TestFleetGaugesWhenTheStoreIsDown(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	f := hubtest.Start(t, hubtest.Options{WrapStore: func(st store.Store) store.Store { return downStore{Store: st, down: &down} }})
	mfs := f.Metrics()
	if v, ok := hubtest.Value(mfs, "godwit_store_up", nil); !ok || v != 1 {
		t.Fatalf("godwit_store_up = %v (exported: %v) before the outage, want 1", v, ok)
	}
	if _, ok := hubtest.Value(mfs, "godwit_agents", map[string]string{"status": "online"}); !ok {
		t.Fatal("godwit_agents missing before the outage")
	}
	down.Store(true)
	mfs = f.Metrics()
	if v, ok := hubtest.Value(mfs, "godwit_store_up", nil); !ok || v != 0 {
		t.Fatalf("godwit_store_up = %v (exported: %v) during the outage, want 0", v, ok)
	}
	if _, ok := mfs["godwit_agents"]; ok {
		t.Fatal("godwit_agents exported while the store does not answer")
	}
	if _, ok := hubtest.Value(mfs, "godwit_ingest_consumer_pending", nil); !ok {
		t.Fatal("godwit_ingest_consumer_pending missing during the store outage")
	}
}
