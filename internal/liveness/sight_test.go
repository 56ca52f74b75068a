package liveness

import (
	"context"
	"strings"
	"testing"
	"time"

	"godwit.dev/godwit/internal/wire"
)

// A hub that starts (or a replica that takes the lead) while it cannot reach the bus marks
// the agents stored online unknown once the grace has passed, like a hub that lost the bus
// while running: nobody can judge them, and "online" would be shown for as long as the bus
// stays away.
func TestBlindFromTheStartMarksUnknown(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	ctx := context.Background()
	f.run(f.controller(), time.Minute, 1, 2)
	f.run(f.controller(), time.Minute, 1) // agent-2 goes offline
	f.mu.Lock()
	f.blind = true
	f.mu.Unlock()
	c := f.controller()
	c.lastOK = time.Now().Add(-time.Hour)
	c.tick(ctx)
	for i, want := range []string{wire.StatusUnknown, wire.StatusOffline} {
		if a, _ := f.store.GetAgent(ctx, f.agents[i].ID); a.Status != want {
			t.Fatalf("agent-%d, judged by a hub blind since it started: %s, want %s", i+1, a.Status, want)
		}
	}
}

// The single hub embeds the bus: while it is down for four hours nobody can heartbeat, and when
// it is back the bucket's heartbeats are four hours old. The agents reconnect with their
// back-off (up to the settle time): none of them is announced offline, or stored so, meanwhile.
// One that does not come back is announced once the settle time has passed.
func TestHubBackAfterLongOutageIsNoFalseOffline(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 3)
	ctx := context.Background()
	c := f.controller()
	f.run(c, 10*time.Minute, 1, 2, 3)
	stopped := f.now
	f.mu.Lock()
	f.now = f.now.Add(4 * time.Hour)
	f.mu.Unlock()

	c = f.controller()
	c.settle = 45 * time.Second
	for i := range f.agents {
		c.observe(entry{key: f.agents[i].ID, value: mustJSON(wire.Heartbeat{AgentID: f.agents[i].ID, Version: "test"}), created: stopped})
	}
	f.run(c, 10*time.Second)       // nobody reconnected yet
	f.run(c, 20*time.Second, 1)    // agent-1 is back
	f.run(c, 10*time.Second, 1, 2) // agent-2 at the end of its back-off
	for i := range 2 {
		if a, _ := f.store.GetAgent(ctx, f.agents[i].ID); a.Status != wire.StatusOnline {
			t.Fatalf("agent-%d, back within the settle time: %s", i+1, a.Status)
		}
	}
	if got := f.messages(); len(got) != 0 {
		t.Fatalf("events after the hub came back, before the settle time passed:\n%s", strings.Join(got, "\n"))
	}
	f.run(c, time.Minute, 1, 2) // agent-3 never comes back
	got := f.messages()
	if len(got) != 1 || !strings.HasPrefix(got[0], "warning agent agent-3 is offline") {
		t.Fatalf("events after the settle time, want agent-3 offline only:\n%s", strings.Join(got, "\n"))
	}
	if a, _ := f.store.GetAgent(ctx, f.agents[2].ID); a.Status != wire.StatusOffline {
		t.Fatalf("agent-3: %s, want offline", a.Status)
	}
}

// The bus is away for an hour (the agents are unknown), then back: the agents reconnect within
// the settle time and are online again without an event; none is announced offline meanwhile.
func TestBusBackAfterBlindSpellIsNoFalseOffline(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	ctx := context.Background()
	c := f.controller()
	c.settle = 45 * time.Second
	f.run(c, 10*time.Minute, 1, 2)
	f.mu.Lock()
	f.blind = true
	f.mu.Unlock()
	c.lastOK = time.Now().Add(-time.Hour)
	f.run(c, time.Hour)
	for i := range f.agents {
		if a, _ := f.store.GetAgent(ctx, f.agents[i].ID); a.Status != wire.StatusUnknown {
			t.Fatalf("agent-%d while the bus is away: %s, want unknown", i+1, a.Status)
		}
	}
	f.mu.Lock()
	f.blind = false
	f.mu.Unlock()
	f.run(c, 15*time.Second)
	f.run(c, 25*time.Second, 1, 2)
	for i := range f.agents {
		if a, _ := f.store.GetAgent(ctx, f.agents[i].ID); a.Status != wire.StatusOnline {
			t.Fatalf("agent-%d back after the bus: %s, want online", i+1, a.Status)
		}
	}
	if got := f.messages(); len(got) != 0 {
		t.Fatalf("events for agents that were only cut off with the hub:\n%s", strings.Join(got, "\n"))
	}
}
