package liveness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"godwit.dev/godwit/internal/credential"
	"godwit.dev/godwit/internal/logging"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/store/sqlite"
	"godwit.dev/godwit/internal/wire"
)

// entry is a heartbeat as the bucket delivers it, with the store time the test chooses.
type entry struct {
	key     string
	value   []byte
	created time.Time
}

var _ jetstream.KeyValueEntry = entry{}

func (e entry) Bucket() string                  { return wire.BucketHeartbeats }
func (e entry) Key() string                     { return e.key }
func (e entry) Value() []byte                   { return e.value }
func (e entry) Revision() uint64                { return 1 }
func (e entry) Created() time.Time              { return e.created }
func (e entry) Delta() uint64                   { return 0 }
func (e entry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

// fleet is a SQLite store with n enrolled agents, a store clock the test moves, and the events a
// liveness controller sends.
type fleet struct {
	store  store.Store
	agents []wire.Agent
	mu     sync.Mutex
	now    time.Time
	blind  bool // the store clock cannot be read (the bus is unreachable)
	events []wire.Event
}

func newFleet(t *testing.T, n int) *fleet {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fleet{store: st, now: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)}
	tok := credential.New(credential.PrefixEnroll)
	if err := st.CreateEnrollToken(ctx, wire.EnrollToken{ID: "t", MaxUses: n, ExpiresAt: f.now.Add(time.Hour), CreatedAt: f.now}, credential.Hash(tok)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		a := wire.Agent{ID: fmt.Sprintf("0196a000-0000-7000-8000-%012d", i), Name: fmt.Sprintf("agent-%d", i), EnrolledAt: f.now}
		if err := st.Enroll(ctx, credential.Hash(tok), f.now, a, "x"); err != nil {
			t.Fatal(err)
		}
		f.agents = append(f.agents, a)
	}
	return f
}

// controller is a liveness controller of the fleet, as a freshly started hub has one.
func (f *fleet) controller() *Controller {
	c := New(Config{Store: f.store, Logger: logging.Discard(), Interval: 5 * time.Second, Grace: 20 * time.Second, HubID: "test",
		Now: func(context.Context) (time.Time, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.blind {
				return time.Time{}, errors.New("nats: connection closed")
			}
			return f.now, nil
		},
		Publish: func(_ context.Context, e wire.Event) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.events = append(f.events, e)
			return nil
		}})
	_ = c.begin(context.Background())
	return c
}

func (f *fleet) beat(c *Controller, agent int) {
	f.mu.Lock()
	at := f.now
	f.mu.Unlock()
	hb, _ := json.Marshal(wire.Heartbeat{AgentID: f.agents[agent-1].ID, Version: "test"})
	c.observe(entry{key: f.agents[agent-1].ID, value: hb, created: at})
}

// run moves the clock by d in heartbeat intervals; the agents in beating heartbeat each time,
// and the controller judges after each.
func (f *fleet) run(c *Controller, d time.Duration, beating ...int) {
	for end := f.now.Add(d); f.now.Before(end); {
		f.mu.Lock()
		f.now = f.now.Add(5 * time.Second)
		f.mu.Unlock()
		for _, n := range beating {
			f.beat(c, n)
		}
		c.tick(context.Background())
	}
}

func (f *fleet) messages() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.events {
		out = append(out, e.Severity+" "+e.Data.Message)
	}
	return out
}

// An agent offline for four hours — with liveness judging every 5 seconds (2,880 times), a hub
// restart and a spell when the hub itself cannot read the bus in the middle — is two events:
// it went offline, and it is back, with how long it was silent. Another agent, online all along
// but unknown while the hub was blind, is none.
func TestFourHourOfflineIsTwoEvents(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	ctx := context.Background()
	c := f.controller()
	f.run(c, 10*time.Minute, 1, 2)
	if got := f.messages(); len(got) != 0 {
		t.Fatalf("events while both agents heartbeat: %v", got)
	}
	f.run(c, time.Hour, 2) // agent-1 stops
	// The hub cannot read the bus for a while: agent-2 is unknown, agent-1 stays offline.
	f.mu.Lock()
	f.blind = true
	f.mu.Unlock()
	c.lastOK = time.Now().Add(-time.Hour) // longer than the grace, by the hub's own clock
	c.tick(ctx)
	for i, want := range []string{wire.StatusOffline, wire.StatusUnknown} {
		if a, _ := f.store.GetAgent(ctx, f.agents[i].ID); a.Status != want {
			t.Fatalf("agent-%d while the hub is blind: %s, want %s", i+1, a.Status, want)
		}
	}
	f.mu.Lock()
	f.blind = false
	f.mu.Unlock()
	f.run(c, time.Hour, 2)
	// The hub restarts: a new controller, which has seen nothing yet; the bucket gives it each
	// agent's latest heartbeat again.
	c = f.controller()
	f.beat(c, 2)
	c.observe(entry{key: f.agents[0].ID, value: mustJSON(wire.Heartbeat{AgentID: f.agents[0].ID}), created: f.agentLastSeen(t, 0)})
	f.run(c, 2*time.Hour, 2)
	f.run(c, 10*time.Minute, 1, 2) // agent-1 is back
	got := f.messages()
	if len(got) != 2 {
		t.Fatalf("%d events over a 4h outage, want 2:\n%s", len(got), strings.Join(got, "\n"))
	}
	if !strings.HasPrefix(got[0], "warning agent agent-1 is offline: no heartbeat for 25s") {
		t.Fatalf("first event %q", got[0])
	}
	if !strings.HasPrefix(got[1], "info agent agent-1 is online again after 4h0m5s without a heartbeat") {
		t.Fatalf("second event %q", got[1])
	}
	for _, e := range f.events {
		if e.Type != wire.EventAgentStatusChanged || e.Data.AgentID != f.agents[0].ID {
			t.Fatalf("event %+v", e)
		}
	}
}

func (f *fleet) agentLastSeen(t *testing.T, i int) time.Time {
	t.Helper()
	a, err := f.store.GetAgent(context.Background(), f.agents[i].ID)
	if err != nil {
		t.Fatal(err)
	}
	return a.LastSeen
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// A restarted hub that finds an agent's heartbeat gone from the bucket (expired while the agent
// was away) judges it by the heartbeat recorded in SQL: still offline, not unknown, and when it
// is back that is announced.
func TestOfflineAgentWithoutAStoredHeartbeat(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1)
	c := f.controller()
	f.run(c, time.Minute, 1)
	f.run(c, time.Hour)
	c = f.controller()
	f.run(c, time.Hour)
	if a, _ := f.store.GetAgent(context.Background(), f.agents[0].ID); a.Status != wire.StatusOffline {
		t.Fatalf("after a restart without its heartbeat in the bucket: %s", a.Status)
	}
	f.run(c, time.Minute, 1)
	got := f.messages()
	if len(got) != 2 || !strings.Contains(got[1], "online again after 2h0m5s") {
		t.Fatalf("events: %s", strings.Join(got, "\n"))
	}
}

// OnStatus is told of each stored change of status, once, and of nothing else: an hour of
// ticks with one agent away is one change, not 720 reports.
func TestOnStatusToldOfChangesOnly(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	c := f.controller()
	var mu sync.Mutex
	told := map[string][]string{}
	c.onStatus = func(id, status string) {
		mu.Lock()
		defer mu.Unlock()
		told[id] = append(told[id], status)
	}
	f.run(c, 10*time.Minute, 1, 2)
	f.run(c, time.Hour, 2) // agent-1 stops
	f.run(c, 10*time.Minute, 1, 2)
	mu.Lock()
	defer mu.Unlock()
	want := map[string]string{
		f.agents[0].ID: "online offline online",
		f.agents[1].ID: "online",
	}
	for id, w := range want {
		if got := strings.Join(told[id], " "); got != w {
			t.Fatalf("told of %s: %q, want %q", id, got, w)
		}
		a, err := f.store.GetAgent(context.Background(), id)
		if err != nil || a.Status != wire.StatusOnline {
			t.Fatalf("stored status of %s: %s (%v)", id, a.Status, err)
		}
	}
}

// Marking the agents unknown (the hub blind for longer than the grace) is a stored change like
// any other: when its write fails, even because the hub is stopping, neither the index nor
// OnStatus hears of a change the store does not hold.
func TestUnknownNotToldWhenItsWriteFailed(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1)
	c := f.controller()
	var mu sync.Mutex
	var told []string
	c.onStatus = func(_, status string) {
		mu.Lock()
		defer mu.Unlock()
		told = append(told, status)
	}
	f.run(c, 10*time.Minute, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.markAllUnknown(ctx)
	mu.Lock()
	got := strings.Join(told, " ")
	mu.Unlock()
	if got != "online" {
		t.Fatalf("told %q; want only online: the unknown was never stored", got)
	}
	if r := c.index[f.agents[0].ID]; r.status != wire.StatusOnline {
		t.Fatalf("index says %s; want online, as stored", r.status)
	}
	if a, err := f.store.GetAgent(context.Background(), f.agents[0].ID); err != nil || a.Status != wire.StatusOnline {
		t.Fatalf("stored status %s (%v); want online", a.Status, err)
	}
}
